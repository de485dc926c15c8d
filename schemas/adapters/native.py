"""CityWatch's native JSON payload on `.../{kind}/{device_id}/up`.

One object or a list of objects:

    {"time": "2026-11-24T10:00:00Z", "seq": 42, "metrics": {"ph": 7.2, "turbidity_ntu": 3.1}}

Decoding is all-or-nothing per MQTT message: a list with one bad element is rejected as a
whole, with the element's index in the reason, so a device engineer sees one clear answer
per publish and no half-stored batch has to be reconciled later.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection
from schemas.registry import COMMON, Kind, metric_spec
from schemas.topics import parse_uplink_topic

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_MESSAGE = 10_000
_OPTIONAL_TOP_LEVEL = {"time", "seq", "metrics", "device_id", "kind", "lat", "lon", *COMMON}


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN/Infinity, which are not JSON (RFC 8259) and not measurements.
    raise PayloadError("not_finite", f"{name} is not a JSON number")


def decode_native(
    topic: str,
    payload: bytes,
    received_at: datetime,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[Reading] | Rejection:
    """Decode one MQTT message into readings, or say precisely why it cannot be."""

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(
            reason=reason, detail=detail, topic=topic, raw=payload, received_at=received_at
        )

    if len(payload) > max_bytes:
        return reject(
            "payload_too_large", f"payload is {len(payload)} bytes; the limit is {max_bytes}"
        )
    try:
        where = parse_uplink_topic(topic)
    except PayloadError as exc:
        return reject(exc.reason, exc.detail)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject("not_utf8", f"payload is not UTF-8 text ({exc.reason} at byte {exc.start})")
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except PayloadError as exc:
        return reject(exc.reason, exc.detail)
    except json.JSONDecodeError as exc:
        return reject(
            "not_json", f"payload is not JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        )
    except RecursionError:
        return reject("not_json", "payload nests JSON too deeply")
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        return reject("not_json", f"payload is not usable JSON: {exc}")

    items = body if isinstance(body, list) else [body]
    if not items:
        return reject("empty", "payload is an empty list")
    if len(items) > MAX_READINGS_PER_MESSAGE:
        return reject(
            "too_many_readings",
            f"{len(items)} readings in one message; the limit is {MAX_READINGS_PER_MESSAGE}",
        )
    readings: list[Reading] = []
    for index, item in enumerate(items):
        try:
            readings.append(_reading(item, where.kind, where.device_id, received_at))
        except PayloadError as exc:
            prefix = f"reading {index}: " if isinstance(body, list) else ""
            return reject(exc.reason, prefix + exc.detail)
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
    seq = item.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise PayloadError("invalid_structure", f"seq must be a non-negative integer, got {seq!r}")
    lat, lon = item.get("lat"), item.get("lon")
    for name, coord, bound in (("lat", lat, 90), ("lon", lon, 180)):
        if coord is not None and (not _is_number(coord) or abs(coord) > bound):
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value(kind: Kind, name: str, value: Any) -> float:
    spec = metric_spec(kind, name)
    if spec is None:
        raise PayloadError(
            "unknown_metric", f"metric {name!r} is not in the registry for kind {kind!r}"
        )
    if not _is_number(value):
        raise PayloadError(
            "wrong_type", f"metric {name!r} must be a number, got {type(value).__name__}"
        )
    try:
        number = float(value)
    except OverflowError:
        raise PayloadError(
            "out_of_range", f"metric {name!r} is too large to be a measurement"
        ) from None
    if not math.isfinite(number):
        raise PayloadError("not_finite", f"metric {name!r} is not finite")
    if not spec.accepts(number):
        raise PayloadError(
            "out_of_range",
            f"metric {name!r} = {number:g} {spec.unit} is outside the possible range "
            f"[{spec.minimum:g}, {spec.maximum:g}]",
        )
    return number


def _time(value: Any, received_at: datetime) -> tuple[datetime, bool]:
    if value is None:
        return received_at, True
    if _is_number(value):
        try:
            return datetime.fromtimestamp(float(value), UTC), False
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError("bad_time", f"epoch time {value!r} is out of range") from exc
    if not isinstance(value, str):
        raise PayloadError(
            "bad_time", f"time must be ISO 8601 text or epoch seconds, got {type(value).__name__}"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PayloadError("bad_time", f"time {value!r} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        raise PayloadError(
            "time_without_zone", f"time {value!r} has no time zone (add 'Z' or '+07:00')"
        )
    try:
        return parsed.astimezone(UTC), False
    except OverflowError:
        raise PayloadError("bad_time", f"time {value!r} is out of range in UTC") from None
