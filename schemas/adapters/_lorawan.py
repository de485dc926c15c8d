"""A LoRaWAN network server's uplink (The Things Stack, ChirpStack) as a CityWatch reading:
the decoded object's fields through the device's field mapping, the best gateway's RSSI, and
the uplink's time, frame counter and position. Pure: no I/O.

Rules for a decoded object (TTN `decoded_payload`, ChirpStack `object`), documented in
docs/devices.md:
- a field named in the mapping goes where the mapping says;
- else a field that is a registry metric name (`ph`, `rssi_dbm`, ...) is that metric, and
  `time`, `lat`/`latitude`, `lon`/`lng`/`longitude` are the reading's time and position;
- else a numeric field is refused as `unknown_metric` naming it (a number CityWatch cannot
  place is a decoder or mapping error worth fixing, not data to drop), while a non-numeric
  one (text, boolean, null, list, object) is ignored: decoders add status strings and flags.
A value may be a number or an NGSI-v2 normalised attribute `{"value": number, ...}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from schemas.adapters._values import (
    checked,
    finite,
    is_number,
    parse_time,
    position,
    sequence_number,
    to_registry_unit,
)
from schemas.adapters.mappings import ALL_METRICS, SPECIAL_TARGETS, Target
from schemas.device import MeasurementList
from schemas.errors import PayloadError
from schemas.reading import Reading, Source
from schemas.registry import CATALOG, COMMON, KINDS, METRICS, Kind

__all__ = [
    "DecodedFields",
    "best_rssi",
    "decoded_fields",
    "flatten_measurements",
    "infer_kind",
    "uplink_reading",
]

# Names a decoded object may use for the reading's time and position without a mapping.
IMPLICIT_FIELDS: Final[dict[str, str]] = {
    "time": "time",
    "lat": "lat",
    "latitude": "lat",
    "lon": "lon",
    "lng": "lon",
    "longitude": "lon",
}


def numeric_value(value: Any) -> Any:
    """Unwrap an NGSI-v2 normalised attribute `{"type": ..., "value": x}` to `x`."""
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value


def infer_kind(metrics: Iterable[str]) -> Kind:
    """The one kind whose registry holds every kind-specific metric named, or `PayloadError`.

    Used for an unregistered device on a network-server topic (which names no kind) when the
    gateway accepts unknown devices.
    """
    specific = sorted({m for m in metrics if m not in COMMON and m not in CATALOG})
    fits = [k for k in KINDS if specific and all(m in METRICS[k] for m in specific)]
    if len(fits) == 1:
        return fits[0]
    if not specific:
        why = "it reports only metrics common to every kind"
    elif fits:
        why = f"metrics {specific} fit several kinds ({', '.join(fits)})"
    else:
        why = f"no single kind has all of the metrics {specific}"
    raise PayloadError(
        "unknown_kind",
        f"cannot tell the device's kind: {why}; register the device with its kind "
        "(`citywatch devices add`)",
    )


@dataclass(frozen=True, slots=True)
class DecodedFields:
    """What a decoded object contributed: metrics in registry units, time and position."""

    kind: Kind
    metrics: dict[str, float]
    time: datetime | None
    lat: float | None
    lon: float | None


def decoded_fields(
    decoded: dict[str, Any],
    mapping: Mapping[str, Target | None],
    kind: Kind | None,
    *,
    extra: Mapping[str, float] | None = None,
    measurements: MeasurementList | None = None,
    also: Sequence[Kind] = (),
) -> DecodedFields:
    """Apply the mapping rules (module docstring) to one decoded object.

    `extra` are metrics from the network server's metadata (e.g. the gateway's RSSI); a value
    the decoded object itself gives for the same metric wins. `measurements`, when the
    device's decoder returns a list of measurements, says how to read it
    (`flatten_measurements`).
    """
    raw: dict[str, tuple[str, float, str | None]] = {}  # metric -> (source field, value, unit)
    specials: dict[str, tuple[str, Any, Target]] = {}
    ignored: list[str] = []
    unmapped: list[str] = []
    if measurements is not None:
        decoded = flatten_measurements(decoded, measurements)
    for field, value in decoded.items():
        if field in mapping:
            target = mapping[field]
            if target is None:
                ignored.append(field)
                continue
        elif field in ALL_METRICS:
            target = Target(field)
        elif field in IMPLICIT_FIELDS:
            target = Target(IMPLICIT_FIELDS[field])
        else:
            if is_number(numeric_value(value)):
                unmapped.append(field)
            else:
                ignored.append(field)
            continue
        if target.name in SPECIAL_TARGETS:
            if target.name in specials:
                raise PayloadError(
                    "invalid_structure",
                    f"decoded fields {specials[target.name][0]!r} and {field!r} both give "
                    f"the reading's {target.name}",
                )
            specials[target.name] = (field, numeric_value(value), target)
            continue
        if target.name in raw:
            raise PayloadError(
                "invalid_structure",
                f"decoded fields {raw[target.name][0]!r} and {field!r} both map to metric "
                f"{target.name!r}",
            )
        number = finite(f"decoded field {field!r}", numeric_value(value))
        raw[target.name] = (field, number, target.unit)

    if unmapped:
        # Every unmapped field at once (issue 13): one round to fix a device, not one per field.
        names = ", ".join(repr(f) for f in unmapped)
        raise PayloadError(
            "unknown_metric",
            f"decoded field{'s' if len(unmapped) > 1 else ''} {names} "
            f"{'are' if len(unmapped) > 1 else 'is'} not CityWatch metrics and the device has "
            "no field mapping for them (map each, or map it to '-' to ignore it)",
        )
    metrics: dict[str, float] = {}
    for metric, (field, number, unit) in raw.items():
        metrics[metric] = to_registry_unit(metric, number, unit, f"decoded field {field!r}")
    for metric, value in (extra or {}).items():
        metrics.setdefault(metric, value)
    if not raw:
        listed = f" (ignored: {', '.join(repr(f) for f in ignored)})" if ignored else ""
        raise PayloadError("no_metrics", f"the decoded payload holds no CityWatch metric{listed}")
    if kind is None:
        kind = infer_kind(metrics)
    for metric, value in metrics.items():
        field = raw[metric][0] if metric in raw else "network metadata"
        source = f"decoded field {field!r}" if metric in raw else field
        checked(kind, metric, value, source, also)

    time = None
    if "time" in specials:
        field, value, target = specials["time"]
        time = parse_time(value, f"decoded field {field!r}", assume_utc=target.unit == "UTC")
    lat, lon = position(
        specials["lat"][1] if "lat" in specials else None,
        specials["lon"][1] if "lon" in specials else None,
    )
    return DecodedFields(kind=kind, metrics=metrics, time=time, lat=lat, lon=lon)


def flatten_measurements(decoded: dict[str, Any], spec: MeasurementList) -> dict[str, Any]:
    """The decoded object with each measurement of its list `spec.list` added as a field.

    A decoder may return its measurements as a list of objects (SenseCAP:
    `{"messages": [{"measurementId": 4097, "measurementValue": 21.4}, ...]}`, sometimes a
    list of such lists). Each element holding `spec.name` and `spec.value` becomes the field
    `str(element[spec.name])` with that value, which the field mapping then places like any
    other field; elements without them (version, interval, sensor-id reports) are skipped.
    The list itself is not a number and is then ignored.

    Raises:
        PayloadError: `invalid_structure` when a measurement name repeats, or names a field
            the decoded object already has.
    """
    items = decoded.get(spec.list)
    if not isinstance(items, list):
        return decoded
    flat = dict(decoded)
    for item in [x for entry in items for x in (entry if isinstance(entry, list) else [entry])]:
        if not isinstance(item, dict) or spec.name not in item or spec.value not in item:
            continue
        name = str(item[spec.name])
        if name in flat:
            raise PayloadError(
                "invalid_structure",
                f"measurement {name!r} of list {spec.list!r} appears twice in the decoded payload",
            )
        flat[name] = item[spec.value]
    return flat


def best_rssi(rx: Any, key: str = "rssi") -> dict[str, float]:
    """`{"rssi_dbm": x}` for the strongest gateway in a network server's receive metadata.

    The best gateway is the one with the highest RSSI. Entries that are not objects or carry
    no numeric RSSI are skipped: gateway metadata is the network's, not the device's, and a
    gateway without RSSI must not cost the device its reading. SNR is not kept: the metric
    registry has no SNR metric (DESIGN.md's contract names `battery_pct` and `rssi_dbm`).
    """
    if not isinstance(rx, list):
        return {}
    values: list[float] = []
    for entry in rx:
        if isinstance(entry, dict):
            try:
                values.append(finite(key, entry.get(key)))
            except PayloadError:
                continue
    return {"rssi_dbm": max(values)} if values else {}


def uplink_reading(
    fields: DecodedFields,
    *,
    device_id: str,
    received_at: datetime,
    server_time: tuple[str, Any],
    frame_counter: tuple[str, Any],
    source: Source,
    lat: float | None = None,
    lon: float | None = None,
) -> Reading:
    """A LoRaWAN network server's uplink as a reading. Its time is the device's own when
    the decoded payload has one, else the server's (`server_time`: field name and value,
    `time_from_gateway`), else arrival; the frame counter (`frame_counter`: name, value)
    is the sequence number. The position is the payload's, else the caller's."""
    time, from_gateway = fields.time, False
    if time is None:
        from_gateway = True
        name, value = server_time
        time = parse_time(value, name) if value is not None else received_at
    seq = sequence_number(frame_counter[1], frame_counter[0])
    if fields.lat is not None or fields.lon is not None:
        lat, lon = fields.lat, fields.lon
    return Reading(
        device_id=device_id,
        kind=fields.kind,
        time=time,
        received_at=received_at,
        metrics=fields.metrics,
        seq=seq,
        time_from_gateway=from_gateway,
        lat=lat,
        lon=lon,
        source=source,
    )
