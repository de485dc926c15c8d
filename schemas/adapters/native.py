"""CityWatch's native JSON payload on `.../{kind}/{device_id}/up`.

One object or a list of objects:

    {"time": "2026-11-24T10:00:00Z", "seq": 42, "metrics": {"ph": 7.2, "turbidity_ntu": 3.1}}

Decoding is all-or-nothing per MQTT message: a list with one bad element is rejected as a
whole, with the element's index in the reason, so a device engineer sees one clear answer
per publish and no half-stored batch has to be reconciled later.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from schemas.adapters._reject import decode_or_reject
from schemas.adapters._values import (
    check_size,
    epoch,
    finite,
    in_range,
    is_number,
    load_json,
    parse_time,
    sequence_number,
)
from schemas.device import DeviceProfile
from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection
from schemas.registry import COMMON, Kind, metric_spec
from schemas.topics import parse_uplink_topic

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "MAX_READINGS_PER_MESSAGE", "decode_native"]

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_MESSAGE = 10_000
_OPTIONAL_TOP_LEVEL = {"time", "seq", "metrics", "device_id", "kind", "lat", "lon", *COMMON}


def decode_native(
    topic: str,
    payload: bytes,
    received_at: datetime,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[Reading] | Rejection:
    """Decode one MQTT message into readings, or say precisely why it cannot be."""
    return decode_or_reject(
        partial(_decode, max_bytes=max_bytes), topic, payload, received_at, None
    )


def _decode(
    topic: str,
    payload: bytes,
    received_at: datetime,
    _profile: DeviceProfile | None,
    *,
    max_bytes: int,
) -> list[Reading]:
    check_size(payload, max_bytes)
    where = parse_uplink_topic(topic)
    body = load_json(payload)
    items = body if isinstance(body, list) else [body]
    if not items:
        raise PayloadError("empty", "payload is an empty list")
    if len(items) > MAX_READINGS_PER_MESSAGE:
        raise PayloadError(
            "too_many_readings",
            f"{len(items)} readings in one message; the limit is {MAX_READINGS_PER_MESSAGE}",
        )
    readings: list[Reading] = []
    for index, item in enumerate(items):
        try:
            readings.append(_reading(item, where.kind, where.device_id, received_at))
        except PayloadError as exc:
            if not isinstance(body, list):
                raise
            raise PayloadError(exc.reason, f"reading {index}: {exc.detail}") from None
    return readings


def _reading(item: Any, kind: Kind, device_id: str, received_at: datetime) -> Reading:
    if not isinstance(item, dict):
        raise PayloadError(
            "invalid_structure", f"expected a JSON object, got {type(item).__name__}"
        )
    unknown = set(item) - _OPTIONAL_TOP_LEVEL
    if unknown:
        raise PayloadError("invalid_structure", f"unknown field(s) {sorted(unknown)}")
    if "device_id" in item and item["device_id"] != device_id:
        raise PayloadError(
            "device_mismatch",
            f"payload device_id {item['device_id']!r} differs from topic device id {device_id!r}",
        )
    if "kind" in item and item["kind"] != kind:
        raise PayloadError(
            "kind_mismatch", f"payload kind {item['kind']!r} differs from topic kind {kind!r}"
        )

    raw_metrics = item.get("metrics")
    if not isinstance(raw_metrics, dict) or not raw_metrics:
        raise PayloadError("no_metrics", "'metrics' must be a non-empty object of name: number")
    merged = dict(raw_metrics)
    for name in COMMON:  # battery_pct / rssi_dbm may stand beside 'metrics'
        if name in item:
            merged[name] = item[name]
    metrics = {name: _value(kind, name, value) for name, value in merged.items()}

    time, from_gateway = _time(item.get("time"), received_at)
    seq = sequence_number(item.get("seq"), "seq")
    lat, lon = item.get("lat"), item.get("lon")
    for name, coord, bound in (("lat", lat, 90), ("lon", lon, 180)):
        # Not `position()`: native has always called a non-number here invalid_structure.
        if coord is not None and (not is_number(coord) or abs(coord) > bound):
            raise PayloadError("invalid_structure", f"{name} must be a number within ±{bound}")
    return Reading(
        device_id=device_id,
        kind=kind,
        time=time,
        received_at=received_at,
        metrics=metrics,
        seq=seq,
        time_from_gateway=from_gateway,
        lat=lat,
        lon=lon,
        source="native",
    )


def _value(kind: Kind, name: str, value: Any) -> float:
    spec = metric_spec(kind, name)
    if spec is None:
        raise PayloadError(
            "unknown_metric", f"metric {name!r} is not in the registry for kind {kind!r}"
        )
    return in_range(spec, f"metric {name!r}", finite(f"metric {name!r}", value))


def _time(value: Any, received_at: datetime) -> tuple[datetime, bool]:
    """The reading's time and whether it is the gateway's (the payload gave none)."""
    if value is None:
        return received_at, True
    if is_number(value):
        # The number as sent, so that too large an integer is a bad time, not a bad number.
        return epoch(value, "epoch time"), False
    return parse_time(value, "time", interval=False), False
