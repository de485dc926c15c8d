"""SenML JSON packs (RFC 8428) on `.../{kind}/{device_id}/up`, the native topics.

Which adapter decodes a message on those topics is decided by the payload's shape
(`looks_like_senml`): a JSON array whose first element is an object holding at least one
SenML label (`bn bt bu bv bs bver n u v vs vb vd s t ut`) and no `metrics` member is SenML;
everything else is native JSON. The two key sets are disjoint, so no valid payload of one
format is mistaken for the other. (MQTT v5's content type would say it too, but the adapters
see only topic and bytes, and many devices do not set it.)

Decoding has two steps:
1. `resolve` applies RFC 8428's resolution rules (Sections 4.1-4.6): base fields apply to
   their record and every later one until replaced; name = bn + n; unit = u, else bu;
   value = bv + v; sum = bs + s; time = bt + t, where a result below 2**28 is relative to
   "now" (the gateway's receive time) and one at or above it is absolute Unix time. Labels
   ending in `_` are must-understand and refused; other unknown labels are ignored; a `bver`
   above 10 is refused.
2. `decode_senml` turns resolved records into CityWatch readings: one reading per resolved
   instant, holding every metric measured then. A record's metric is found from its name
   (the device's field mapping, then the metric names themselves, each tried on the full
   name, the record's own `n`, and the part after the last `:` or `/`), or, for a record
   whose resolved name names the device itself (the topic's device id, or a bare device URN
   `urn:dev:<type>:<id>` of RFC 9039 with no component part), from its unit when exactly one
   metric of the device's kind accepts that unit (RFC 8428 5.1.3 tells humidity, battery and
   position apart by unit alone). The rule reads only resolved fields, so a pack and its
   resolved form (RFC 8428 5.1.4) decode to the same readings.
   Units convert through `units.py`. Records with `u` of `lat`/`lon` give the reading's
   position. String, boolean and data values (`vs`, `vb`, `vd`) and sums (`s`, an integral
   in unit-seconds) have no place in CityWatch's metrics and are ignored, unless their name
   maps to a metric, which is a `wrong_type`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from schemas.adapters._reject import decode_or_reject
from schemas.adapters._values import (
    checked,
    epoch,
    finite,
    is_number,
    load_json,
    position,
    to_registry_unit,
)
from schemas.adapters.mappings import ALL_METRICS, Target, resolve_mapping
from schemas.adapters.native import MAX_READINGS_PER_MESSAGE
from schemas.adapters.units import POSITION_UNITS, metrics_for_unit
from schemas.device import DeviceProfile
from schemas.errors import PayloadError
from schemas.reading import Reading, Rejection
from schemas.registry import CATALOG, Kind, metric_spec
from schemas.topics import parse_uplink_topic

SENML_LABELS: Final = frozenset(
    {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
)
SENML_VERSION: Final = 10  # RFC 8428 Section 4.4: the version this parser understands
RELATIVE_LIMIT: Final = 2**28  # RFC 8428 Section 4.5.3: below this, time is relative to now
# RFC 8428 Section 4.5.1: the characters a resolved name may use.
NAME: Final = re.compile(r"^[A-Za-z0-9][-:./_A-Za-z0-9]*$")
# RFC 9039 device URN without a component part (`urn:dev:ow:10e2073a01080063`).
DEVICE_URN: Final = re.compile(r"^urn:dev:[a-z]+:[A-Za-z0-9.-]+$")
_STRING_LABELS: Final = ("bn", "bu", "n", "u", "vs", "vd")
_NUMBER_LABELS: Final = ("bt", "bv", "bs", "t", "ut")


def looks_like_senml(payload: bytes) -> bool:
    """Whether a payload on a native topic is a SenML pack (module docstring states the rule).

    Only the first element is parsed, so a large native list costs little here.
    """
    start = payload.lstrip()
    if not start.startswith(b"["):
        return False
    try:
        text = start[1:].decode("utf-8")
        first, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(first, dict) and "metrics" not in first and not SENML_LABELS.isdisjoint(first)


@dataclass(frozen=True, slots=True)
class ResolvedRecord:
    """One SenML record after RFC 8428 resolution (Section 4.6).

    `time` is the resolved bt + t: absolute Unix seconds when >= 2**28, else seconds
    relative to "now". `value` is the numeric value; `other` holds a vs/vb/vd value.
    """

    index: int
    name: str
    own_name: str
    unit: str | None
    time: float
    value: float | None = None
    other: str | bool | None = None
    sum: float | None = None

    @property
    def absolute(self) -> bool:
        return self.time >= RELATIVE_LIMIT


def resolve(pack: Any) -> list[ResolvedRecord]:
    """Resolve a parsed SenML pack; records with only base fields yield nothing.

    Raises:
        PayloadError: the pack breaks RFC 8428 (reason names the fault).
    """
    if not isinstance(pack, list):
        raise PayloadError("invalid_structure", "a SenML pack is a JSON array of records")
    if not pack:
        raise PayloadError("empty", "the SenML pack has no records")
    base_name, base_unit = "", None
    base_time = base_value = 0.0
    base_sum: float | None = None
    version: int | None = None
    out: list[ResolvedRecord] = []
    for index, record in enumerate(pack):
        where = f"record {index}"
        if not isinstance(record, dict):
            raise PayloadError(
                "invalid_structure", f"{where}: expected a JSON object, got {type(record).__name__}"
            )
        _check_labels(record, where)
        if "bver" in record:
            bver = record["bver"]
            if not isinstance(bver, int) or isinstance(bver, bool) or bver < 1:
                raise PayloadError("invalid_structure", f"{where}: bver must be a positive integer")
            if bver > SENML_VERSION:
                raise PayloadError(
                    "unsupported_version",
                    f"{where}: SenML version {bver} is newer than the {SENML_VERSION} "
                    "CityWatch understands (RFC 8428 4.4)",
                )
            if version is not None and bver != version:
                raise PayloadError(
                    "invalid_structure", f"{where}: all records of a pack must share one bver"
                )
            version = bver
        base_name = record.get("bn", base_name)
        base_unit = record.get("bu", base_unit)
        if "bt" in record:
            base_time = finite(f"{where}: bt", record["bt"])
        if "bv" in record:
            base_value = finite(f"{where}: bv", record["bv"])
        if "bs" in record:
            base_sum = finite(f"{where}: bs", record["bs"])

        values = [label for label in ("v", "vs", "vb", "vd") if label in record]
        if len(values) > 1:
            raise PayloadError(
                "invalid_structure", f"{where}: has {values}; a record holds one value at most"
            )
        has_sum = "s" in record or base_sum is not None
        if not values and not has_sum:
            regular = sorted(k for k in record if k in {"n", "u", "t", "ut"})
            if regular:
                raise PayloadError(
                    "invalid_structure",
                    f"{where}: has {regular} but no value (v, vs, vb, vd) or sum (s)",
                )
            continue  # a record of base fields only, like RFC 8428 5.1.7's first
        own_name = record.get("n", "")
        name = base_name + own_name
        if not NAME.match(name):
            raise PayloadError(
                "invalid_structure",
                f"{where}: resolved name {name!r} must start with a letter or digit and use "
                "only letters, digits and '-:./_' (RFC 8428 4.5.1)",
            )
        t = finite(f"{where}: t", record["t"]) if "t" in record else 0.0
        out.append(
            ResolvedRecord(
                index=index,
                name=name,
                own_name=own_name,
                unit=record.get("u", base_unit),
                time=base_time + t,
                value=base_value + finite(f"{where}: v", record["v"]) if "v" in record else None,
                other=record[values[0]] if values and "v" not in record else None,
                sum=(base_sum or 0.0) + finite(f"{where}: s", record.get("s", 0))
                if has_sum
                else None,
            )
        )
    return out


# The type each known label's value must have: `str`, `num` (a JSON number) or `bool`.
_LABEL_TYPES: Final = {
    **dict.fromkeys(_STRING_LABELS, "str"),
    **dict.fromkeys(_NUMBER_LABELS, "num"),
    "s": "num",
    "vb": "bool",
}


def _labels_fine(record: dict[str, Any]) -> bool:
    """One pass over the record's own labels: True when `_check_labels` has nothing to say
    (the common case, at a third of its cost: it tries every label it knows on every record)."""
    for label, value in record.items():
        want = _LABEL_TYPES.get(label)
        if want is None:
            if label.endswith("_"):
                return False
        elif want == "str":
            if not isinstance(value, str):
                return False
        elif want == "num":
            if not is_number(value):
                return False
        elif not isinstance(value, bool):
            return False
    return True


def _check_labels(record: dict[str, Any], where: str) -> None:
    if _labels_fine(record):
        return
    for label in record:
        if label.endswith("_"):
            # RFC 8428 4.4: an unknown label ending in '_' is must-understand.
            raise PayloadError(
                "invalid_structure", f"{where}: must-understand label {label!r} is not supported"
            )
    for label in _STRING_LABELS:
        if label in record and not isinstance(record[label], str):
            raise PayloadError("invalid_structure", f"{where}: {label} must be a string")
    for label in _NUMBER_LABELS:
        if label in record and not is_number(record[label]):
            raise PayloadError("invalid_structure", f"{where}: {label} must be a number")
    if "vb" in record and not isinstance(record["vb"], bool):
        raise PayloadError("invalid_structure", f"{where}: vb must be a boolean")
    if "s" in record and not is_number(record["s"]):
        raise PayloadError("wrong_type", f"{where}: s must be a number")


# -- resolved records -> readings ----------------------------------------------------------------


def _candidates(record: ResolvedRecord) -> list[str]:
    tail = re.split(r"[:/]", record.name)[-1]
    names = [record.name, record.own_name, tail]
    return list(dict.fromkeys(n for n in names if n))


def _target(
    record: ResolvedRecord, kind: Kind, device_id: str, mapping: dict[str, Target | None]
) -> Target | str | None:
    """The record's target; None when mapped to '-' (ignored); a string when nothing fits."""
    names = _candidates(record)
    for name in names:
        if name in mapping:
            return mapping[name]
    for name in names:
        if name in ALL_METRICS:
            return Target(name)
    names_device = record.name == device_id or DEVICE_URN.match(record.name)
    if names_device and record.unit is not None:
        # The kind's own metrics first: `cm` on a flood gauge is its water level, not the
        # catalog's depth or distance (which a mapping or the record's name can still pick).
        fits = sorted(
            m for m in metrics_for_unit(record.unit) if m not in CATALOG and metric_spec(kind, m)
        )
        if len(fits) == 1:
            return Target(fits[0])
    return f"SenML record {record.index} ({record.name!r})"


def decode_senml(
    topic: str, payload: bytes, received_at: datetime, profile: DeviceProfile | None
) -> list[Reading] | Rejection:
    """Decode one SenML pack on a native topic into readings, or say why it cannot be."""
    return decode_or_reject(_decode, topic, payload, received_at, profile)


def _decode(
    topic: str, payload: bytes, received_at: datetime, profile: DeviceProfile | None
) -> list[Reading]:
    where = parse_uplink_topic(topic)
    kind = where.kind
    mapping = resolve_mapping(profile.field_mapping if profile else None)
    records = resolve(load_json(payload))

    # instant -> {metric: value}, positions, and whether the instant came from "now".
    metrics: dict[datetime, dict[str, float]] = {}
    sources: dict[tuple[datetime, str], int] = {}
    lats: dict[datetime, float] = {}
    lons: dict[datetime, float] = {}
    relative: set[datetime] = set()
    unmapped: dict[str, str] = {}  # record name -> how the first such record is named
    # A pack repeats its names and times (10 readings of the same metrics, several metrics
    # at one time): each is resolved once per pack.
    targets: dict[tuple[str, str, str | None], Target | str | None] = {}
    instants: dict[float, datetime] = {}
    for record in records:
        when = instants.get(record.time)
        if when is None:
            when = instants[record.time] = _instant(record, received_at)
        if not record.absolute:
            relative.add(when)
        if record.unit in POSITION_UNITS and record.value is not None:
            # RFC 8428 5.1.3: position records share the instant of the measurement.
            is_lat = POSITION_UNITS[record.unit] == "lat"
            position(record.value if is_lat else None, None if is_lat else record.value)
            (lats if is_lat else lons)[when] = record.value
            continue
        key = (record.name, record.own_name, record.unit)
        if key in targets:
            target = targets[key]
            if isinstance(target, str):  # names the record: this one's index, not the first's
                target = _target(record, kind, where.device_id, mapping)
        else:
            target = targets[key] = _target(record, kind, where.device_id, mapping)
        if target is None:
            continue
        if isinstance(target, str):
            if record.value is not None and record.name not in unmapped:
                unmapped[record.name] = target  # text, boolean, data or a bare sum: by design
            continue
        source = f"SenML record {record.index} ({record.name!r})"
        if target.name in ("lat", "lon", "time"):
            raise PayloadError(
                "invalid_mapping", f"{source}: SenML gives time and position by t and lat/lon"
            )
        if record.value is None:
            if record.other is None:
                continue  # a sum only: an integral, not an instantaneous value
            raise PayloadError(
                "wrong_type",
                f"{source} maps to {target.name!r} but holds {type(record.other).__name__}, "
                "not a number",
            )
        unit = record.unit if record.unit is not None else target.unit
        value = checked(
            kind, target.name, to_registry_unit(target.name, record.value, unit, source), source
        )
        if (when, target.name) in sources:
            raise PayloadError(
                "invalid_structure",
                f"{source} gives {target.name!r} at {when.isoformat()} again (record "
                f"{sources[(when, target.name)]} did already)",
            )
        sources[(when, target.name)] = record.index
        metrics.setdefault(when, {})[target.name] = value

    if unmapped:
        # Every unmapped record name at once (issue 13), each by its first record.
        raise PayloadError(
            "unknown_metric",
            f"{', '.join(unmapped.values())} "
            f"{'are not CityWatch metrics' if len(unmapped) > 1 else 'is not a CityWatch metric'}"
            f" for {kind!r} and the device has no field mapping for "
            f"{'them' if len(unmapped) > 1 else 'it'}",
        )
    if not metrics:
        raise PayloadError("no_metrics", "the SenML pack holds no record with a CityWatch metric")
    if len(metrics) > MAX_READINGS_PER_MESSAGE:
        raise PayloadError(
            "too_many_readings",
            f"{len(metrics)} instants in one pack; the limit is {MAX_READINGS_PER_MESSAGE}",
        )
    return [
        Reading(
            device_id=where.device_id,
            kind=kind,
            time=when,
            received_at=received_at,
            metrics=values,
            time_from_gateway=when in relative,
            lat=lats.get(when),
            lon=lons.get(when),
            source="senml",
        )
        for when, values in sorted(metrics.items())
    ]


def _instant(record: ResolvedRecord, received_at: datetime) -> datetime:
    what = f"SenML record {record.index}: time"
    if record.absolute:
        return epoch(record.time, what)
    try:
        return received_at + timedelta(seconds=record.time)
    except OverflowError:
        raise PayloadError(
            "bad_time", f"{what} {record.time!r} s from now is out of range"
        ) from None
