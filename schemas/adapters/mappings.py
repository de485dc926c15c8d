"""From a device's own field names to CityWatch metrics. Pure: no I/O.

A field mapping is `{source field: target}`; a target is a registry metric name, optionally
with the unit the source uses (`"conductivity_uscm@S/m"`, converted by `units.py`), or one
of `time`, `lat`, `lon`, or `-` to ignore the field on purpose. `time@UTC` reads a time
written without a zone as UTC, for formats whose specification says so (FIWARE's
`dateObserved`). A device's registry profile holds either such a dict or the name of a
shipped mapping (`SHIPPED_MAPPINGS`). How a decoded object's fields go through the mapping
is in `_lorawan.py`; SenML records go through it in `senml.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from schemas.adapters.units import METRIC_UNITS
from schemas.errors import PayloadError
from schemas.registry import ALL_METRIC_NAMES, Kind, metric_spec

__all__ = [
    "ALL_METRICS",
    "IGNORE",
    "SHIPPED_MAPPINGS",
    "SPECIAL_TARGETS",
    "Target",
    "mapping_problems",
    "parse_target",
    "resolve_mapping",
]

IGNORE: Final = "-"
SPECIAL_TARGETS: Final = frozenset({"time", "lat", "lon"})
ALL_METRICS: Final = ALL_METRIC_NAMES


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


def mapping_problems(
    field_mapping: Mapping[str, str], kind: Kind, also: Sequence[Kind] = ()
) -> list[str]:
    """Every entry of a per-device mapping that a device of `kind` could not use, as readable
    sentences (empty: the mapping is fine). What `devices add` and `devices import` check,
    so that everything this module's docstring allows is accepted and nothing else is."""
    problems: list[str] = []
    for field, spec in field_mapping.items():
        target = parse_target(spec)
        if target is None:
            continue
        if target.name == "time":
            if target.unit not in (None, "UTC"):
                problems.append(f"{field!r} -> {spec!r}: a time target takes only '@UTC'")
        elif target.name in SPECIAL_TARGETS:
            if target.unit is not None:
                problems.append(f"{field!r} -> {spec!r}: {target.name} takes no unit")
        elif metric_spec(kind, target.name, also) is None:
            problems.append(
                f"{field!r} -> {spec!r}: {target.name!r} is not a {kind} metric, a common or "
                "catalog metric, time, lat, lon or '-'"
            )
        elif target.unit is not None and target.unit not in METRIC_UNITS.get(target.name, {}):
            accepted = ", ".join(sorted(METRIC_UNITS.get(target.name, {}))) or "none"
            problems.append(
                f"{field!r} -> {spec!r}: unit {target.unit!r} cannot be converted to "
                f"{target.name!r} (accepted: {accepted})"
            )
    return problems
