"""From a device's own field names to CityWatch metrics, and the helpers the SenML, The Things
Stack and ChirpStack adapters share (JSON loading, time parsing, value checks). Pure: no I/O.

A field mapping is `{source field: target}`; a target is a registry metric name, optionally
with the unit the source uses (`"conductivity_uscm@S/m"`, converted by `units.py`), or one
of `time`, `lat`, `lon`, or `-` to ignore the field on purpose. `time@UTC` reads a time
written without a zone as UTC, for formats whose specification says so (FIWARE's
`dateObserved`). A device's registry profile holds either such a dict or the name of a
shipped mapping (`SHIPPED_MAPPINGS`).

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

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from schemas.adapters.units import convert
from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection, Source
from schemas.registry import COMMON, KINDS, METRICS, Kind, metric_spec

if TYPE_CHECKING:
    from schemas.device import DeviceProfile

IGNORE: Final = "-"
SPECIAL_TARGETS: Final = frozenset({"time", "lat", "lon"})
# Names a decoded object may use for the reading's time and position without a mapping.
IMPLICIT_FIELDS: Final[dict[str, str]] = {
    "time": "time",
    "lat": "lat",
    "latitude": "lat",
    "lon": "lon",
    "lng": "lon",
    "longitude": "lon",
}
ALL_METRICS: Final = frozenset({*COMMON, *(m for specs in METRICS.values() for m in specs)})


def _ignored(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, IGNORE)


# FIWARE Smart Data Models, keyValues form. Attributes of the model that CityWatch has no
# metric for are listed as ignored, so a full FIWARE entity decodes without complaint while
# a field outside the model is still refused.
SHIPPED_MAPPINGS: Final[dict[str, dict[str, str]]] = {
    # dataModel.Environment/AirQualityObserved: pollutant concentrations in µg/m³ (gases
    # converted to ppb/ppm at 25 °C), relativeHumidity as a 0-1 fraction, temperature in °C.
    "fiware-air-quality": {
        "pm25": "pm25_ugm3@ug/m3",
        "pm10": "pm10_ugm3@ug/m3",
        "no2": "no2_ppb@ug/m3",
        "o3": "o3_ppb@ug/m3",
        "so2": "so2_ppb@ug/m3",
        "co": "co_ppm@ug/m3",
        "relativeHumidity": "humidity_pct@/",
        "temperature": "temperature_c@Cel",
        "dateObserved": "time@UTC",
        **_ignored(
            "pm1",
            "no",
            "nox",
            "co2",
            "c6h6",
            "as",
            "cd",
            "ni",
            "pb",
            "sh2",
            "volatileOrganicCompoundsTotal",
            "precipitation",
            "windDirection",
            "windSpeed",
            "airQualityIndex",
            "reliability",
        ),
    },
    # dataModel.WaterQuality/WaterQualityObserved: conductivity in S/m, O2 in mg/L.
    "fiware-water-quality": {
        "pH": "ph@pH",
        "turbidity": "turbidity_ntu@NTU",
        "O2": "dissolved_oxygen_mgl@mg/L",
        "conductivity": "conductivity_uscm@S/m",
        "temperature": "temperature_c@Cel",
        "dateObserved": "time@UTC",
        **_ignored(
            "conductance",
            "tss",
            "tds",
            "salinity",
            "flow",
            "NO3",
            "NH3",
            "NH4",
            "PO4",
            "SO4",
            "Cl-",
            "Chla",
            "PE",
            "PC",
            "Tot-N",
            "Tot-P",
            "orp",
            "Mg",
            "Na",
            "K",
        ),
    },
    # dataModel.Environment/FloodMonitoring: currentLevel in metres.
    "fiware-flood": {
        "currentLevel": "water_level_m@m",
        "observationDateTime": "time@UTC",
        "dateObserved": "time@UTC",
        **_ignored("alertLevel", "dangerLevel", "referenceLevel", "measuredDistance"),
    },
}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a source field goes: a metric (with the unit the source uses), time or position."""

    name: str
    unit: str | None = None


def parse_target(spec: str) -> Target | None:
    """`"metric@unit"` -> Target; `"-"` -> None (ignore the field)."""
    if spec == IGNORE:
        return None
    name, _, unit = spec.partition("@")
    return Target(name=name, unit=unit or None)


def resolve_mapping(field_mapping: Mapping[str, str] | str | None) -> dict[str, Target | None]:
    """The profile's mapping as targets; a shipped mapping is looked up by name.

    Raises:
        PayloadError: `unknown_mapping` for a shipped name that does not exist, or
            `invalid_mapping` for a target that is no metric, `time`, `lat`, `lon` or `-`.
    """
    if field_mapping is None:
        return {}
    if isinstance(field_mapping, str):
        shipped = SHIPPED_MAPPINGS.get(field_mapping)
        if shipped is None:
            raise PayloadError(
                "unknown_mapping",
                f"the registry names field mapping {field_mapping!r}, which CityWatch does not "
                f"ship (shipped: {', '.join(sorted(SHIPPED_MAPPINGS))})",
            )
        field_mapping = shipped
    out: dict[str, Target | None] = {}
    for field, spec in field_mapping.items():
        target = parse_target(spec)
        if target is not None and target.name not in ALL_METRICS | SPECIAL_TARGETS:
            raise PayloadError(
                "invalid_mapping",
                f"the field mapping sends {field!r} to {spec!r}, which is not a CityWatch metric",
            )
        out[field] = target
    return out


# -- JSON, numbers and times ------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN/Infinity, which are not JSON (RFC 8259) and not measurements.
    raise PayloadError("not_finite", f"{name} is not a JSON number")


def load_json(payload: bytes) -> Any:
    """Parse a payload as strict JSON, turning every failure into `PayloadError`."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            "not_utf8", f"payload is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "not_json", f"payload is not JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from None
    except RecursionError:
        raise PayloadError("not_json", "payload nests JSON too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise PayloadError("not_json", f"payload is not usable JSON: {exc}") from None


def is_number(value: Any) -> bool:
    """A JSON number (bool is an int subclass in Python, but not a number in JSON)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_value(value: Any) -> Any:
    """Unwrap an NGSI-v2 normalised attribute `{"type": ..., "value": x}` to `x`."""
    if isinstance(value, dict) and "value" in value:
        return value["value"]
    return value


def finite(name: str, value: Any) -> float:
    """`value` as a finite float, or `PayloadError` naming `name`."""
    if not is_number(value):
        raise PayloadError("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise PayloadError("out_of_range", f"{name} is too large to be a measurement") from None
    if not math.isfinite(number):
        raise PayloadError("not_finite", f"{name} is not finite")
    return number


def checked(kind: Kind, metric: str, value: float, source: str) -> float:
    """Range-check a value already in the registry unit; `source` names where it came from."""
    spec = metric_spec(kind, metric)
    if spec is None:
        raise PayloadError(
            "unknown_metric", f"{source}: metric {metric!r} is not in the registry for {kind!r}"
        )
    if not math.isfinite(value):
        raise PayloadError("out_of_range", f"{source}: {metric!r} converts to a non-finite value")
    if not spec.accepts(value):
        raise PayloadError(
            "out_of_range",
            f"{source}: {metric!r} = {value:g} {spec.unit} is outside the possible range "
            f"[{spec.minimum:g}, {spec.maximum:g}]",
        )
    return value


def to_registry_unit(metric: str, value: float, unit: str | None, source: str) -> float:
    try:
        return convert(metric, value, unit)
    except PayloadError as exc:
        raise PayloadError(exc.reason, f"{source}: {exc.detail}") from None


def epoch(seconds: float, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError("bad_time", f"{what} {seconds!r} is out of range") from None


def parse_time(value: Any, what: str = "time", *, assume_utc: bool = False) -> datetime:
    """ISO 8601 with a zone, epoch seconds, or an ISO 8601 interval `start/end`.

    An interval (FIWARE's `dateObserved` of an averaged observation) is stamped with its end,
    the instant the averaged value became known, as air quality agencies report hourly means.
    """
    if is_number(value):
        return epoch(finite(what, value), what)
    if not isinstance(value, str):
        raise PayloadError(
            "bad_time", f"{what} must be ISO 8601 text or epoch seconds, got {type(value).__name__}"
        )
    text = value.rpartition("/")[2] if "/" in value else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError("bad_time", f"{what} {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None and assume_utc:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.tzinfo is None:
        raise PayloadError(
            "time_without_zone", f"{what} {value!r} has no time zone (add 'Z' or '+07:00')"
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PayloadError("bad_time", f"{what} {value!r} is out of range in UTC") from None


def position(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    """A checked (lat, lon) pair; either may be None."""
    out: list[float | None] = []
    for name, coord, bound in (("lat", lat, 90), ("lon", lon, 180)):
        if coord is None:
            out.append(None)
            continue
        number = finite(name, coord)
        if abs(number) > bound:
            raise PayloadError("invalid_structure", f"{name} must be a number within ±{bound}")
        out.append(number)
    return out[0], out[1]


def infer_kind(metrics: Iterable[str]) -> Kind:
    """The one kind whose registry holds every kind-specific metric named, or `PayloadError`.

    Used for an unregistered device on a network-server topic (which names no kind) when the
    gateway accepts unknown devices.
    """
    specific = sorted({m for m in metrics if m not in COMMON})
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


# -- decoded objects (TTN decoded_payload, ChirpStack object) -----------------------------------


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
) -> DecodedFields:
    """Apply the mapping rules (module docstring) to one decoded object.

    `extra` are metrics from the network server's metadata (e.g. the gateway's RSSI); a value
    the decoded object itself gives for the same metric wins.
    """
    raw: dict[str, tuple[str, float, str | None]] = {}  # metric -> (source field, value, unit)
    specials: dict[str, tuple[str, Any, Target]] = {}
    ignored: list[str] = []
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
                raise PayloadError(
                    "unknown_metric",
                    f"decoded field {field!r} is not a CityWatch metric and the device has no "
                    "field mapping for it (map it, or map it to '-' to ignore it)",
                )
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
        checked(kind, metric, value, source)

    time = None
    if "time" in specials:
        field, value, target = specials["time"]
        time = parse_time(value, f"decoded field {field!r}", assume_utc=target.unit == "UTC")
    lat, lon = position(
        specials["lat"][1] if "lat" in specials else None,
        specials["lon"][1] if "lon" in specials else None,
    )
    return DecodedFields(kind=kind, metrics=metrics, time=time, lat=lat, lon=lon)


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


# -- what every adapter shares: the refusal, and a network server's uplink --------------------

# An adapter's decoder: raises `PayloadError` for a payload it cannot take.
Decoder = Callable[[str, bytes, datetime, "DeviceProfile | None"], list[Reading]]


def decode_or_reject(
    decode: Decoder,
    topic: str,
    payload: bytes,
    received_at: datetime,
    profile: DeviceProfile | None,
) -> list[Reading] | Rejection:
    """Run an adapter's decoder; the `PayloadError` it raises becomes the payload's `Rejection`,
    with the reason and detail that go to the rejected topic and the metric."""
    try:
        return decode(topic, payload, received_at, profile)
    except PayloadError as exc:
        return Rejection(
            reason=exc.reason, detail=exc.detail, topic=topic, raw=payload, received_at=received_at
        )


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
    name, seq = frame_counter
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise PayloadError(
            "invalid_structure", f"{name} must be a non-negative integer, got {seq!r}"
        )
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
