"""The metric registry: which metrics each kind of sensor may report, in which unit,
and within which physically possible range.

The names are part of the contract with device engineers (DESIGN.md, "Data model").
A value outside its range is not a reading but a rejection: a pH of 19 is a broken probe
or a broken decoder, and storing it would poison every average downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

Kind = Literal["water", "air", "flood", "litter"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its name, unit and the closed range of physically possible values."""

    name: str
    unit: str
    minimum: float
    maximum: float
    description: str

    def accepts(self, value: float) -> bool:
        return self.minimum <= value <= self.maximum


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {s.name: s for s in specs}


# Metrics any device may report alongside its own kind's.
COMMON: Final[dict[str, MetricSpec]] = _specs(
    MetricSpec("battery_pct", "%", 0, 100, "battery charge"),
    MetricSpec("rssi_dbm", "dBm", -150, 0, "received signal strength"),
)

# Ranges are what the physical world allows with margin, not what is "normal":
# normal-vs-suspect is the job of the quality checks and the alert rules.
METRICS: Final[dict[Kind, dict[str, MetricSpec]]] = {
    "water": _specs(
        MetricSpec("ph", "pH", 0, 14, "acidity"),
        MetricSpec("turbidity_ntu", "NTU", 0, 4000, "turbidity"),
        MetricSpec("dissolved_oxygen_mgl", "mg/L", 0, 25, "dissolved oxygen"),
        MetricSpec("conductivity_uscm", "µS/cm", 0, 100_000, "electrical conductivity"),
        MetricSpec("temperature_c", "°C", -5, 50, "water temperature"),
    ),
    "air": _specs(
        MetricSpec("pm25_ugm3", "µg/m³", 0, 1000, "fine particulate matter PM2.5"),
        MetricSpec("pm10_ugm3", "µg/m³", 0, 2000, "particulate matter PM10"),
        MetricSpec("no2_ppb", "ppb", 0, 2000, "nitrogen dioxide"),
        MetricSpec("o3_ppb", "ppb", 0, 1000, "ozone"),
        MetricSpec("so2_ppb", "ppb", 0, 2000, "sulphur dioxide"),
        MetricSpec("co_ppm", "ppm", 0, 1000, "carbon monoxide"),
        MetricSpec("temperature_c", "°C", -40, 60, "air temperature"),
        MetricSpec("humidity_pct", "%", 0, 100, "relative humidity"),
    ),
    "flood": _specs(
        MetricSpec("water_level_m", "m", -10, 30, "water level above the gauge datum"),
        MetricSpec("rain_mm_h", "mm/h", 0, 500, "rain rate"),
        MetricSpec("flow_m3s", "m³/s", 0, 100_000, "river flow"),
    ),
    "litter": _specs(
        MetricSpec("litter_items", "count", 0, 1_000_000, "items since last collection"),
        MetricSpec("fill_level_pct", "%", 0, 100, "fill level of the boom or bin"),
        MetricSpec("litter_kg", "kg", 0, 100_000, "collected mass"),
    ),
}


# The open metric catalog (issue 13): quantities outside the kinds' registries (CO2, TVOC,
# pressure, light, redox, depth, distance, ...) that any device may report, each with its
# unit, possible range and accepted source units. A config file, extended by adding entries.
CATALOG_FILE: Final = Path(__file__).resolve().parents[1] / "deploy" / "devices" / "metrics.yaml"


def load_catalog(
    text: str, *, source: str = "metric catalog"
) -> tuple[dict[str, MetricSpec], dict[str, dict[str, tuple[float, float]]]]:
    """Parse the catalog: `{name: spec}` and `{name: {source unit: (factor, offset)}}`.

    Raises:
        ValueError: an entry without unit, range or units, a range that is not
            `[min, max]`, or a name the registry already has.
    """
    body = yaml.safe_load(text) or {}
    entries = body.get("metrics") if isinstance(body, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{source}: expected a mapping under 'metrics'")
    registered = {*COMMON, *(m for specs in METRICS.values() for m in specs)}
    specs: dict[str, MetricSpec] = {}
    units: dict[str, dict[str, tuple[float, float]]] = {}
    for name, entry in entries.items():
        where = f"{source}: metric {name!r}"
        if name in registered:
            raise ValueError(f"{where} is already a registry metric")
        if not isinstance(entry, dict) or not {"unit", "range", "units"} <= set(entry):
            raise ValueError(f"{where} needs unit, range and units")
        lo, hi = _pair(where, entry["range"])
        specs[name] = MetricSpec(
            name, str(entry["unit"]), lo, hi, str(entry.get("description", ""))
        )
        if not isinstance(entry["units"], dict) or not entry["units"]:
            raise ValueError(f"{where}: units must map source units to factors")
        units[name] = {
            str(sym): _pair(where, conv) if isinstance(conv, list) else (float(conv), 0.0)
            for sym, conv in entry["units"].items()
        }
    return specs, units


def _pair(where: str, value: Any) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2):
        raise ValueError(f"{where}: expected [a, b], got {value!r}")
    return float(value[0]), float(value[1])


CATALOG, CATALOG_UNITS = load_catalog(
    CATALOG_FILE.read_text(encoding="utf-8"), source=str(CATALOG_FILE)
)

# Every metric name a reading may carry, whatever the device's kind.
ALL_METRIC_NAMES: Final = frozenset(
    {*COMMON, *CATALOG, *(m for specs in METRICS.values() for m in specs)}
)


def metric_spec(kind: Kind, name: str, also: Sequence[Kind] = ()) -> MetricSpec | None:
    """The spec of `name` for a device of `kind` (its kind's, the common and the catalog
    metrics, then those of the other kinds it also reports, `also`), or None when such a
    device cannot report it."""
    spec = METRICS[kind].get(name) or COMMON.get(name) or CATALOG.get(name)
    for other in also:
        spec = spec or METRICS[other].get(name)
    return spec


def is_kind(value: str) -> bool:
    return value in KINDS
