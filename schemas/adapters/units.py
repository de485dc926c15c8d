"""Units a payload may use, and how each becomes the unit the metric registry stores.

Device formats name their units (SenML's `u`/`bu`, a field mapping's `metric@unit`);
CityWatch stores one unit per metric (`schemas/registry.py`). This table says, for every
metric, which source units are accepted and how to convert them. It is keyed by metric,
not by registry unit, because a unit carries meaning: `%RH` is a humidity and `%EL` a
battery level although both are "%" in the registry.

Symbols are those of the SenML Units registry (RFC 8428 Section 12.1, extended by
RFC 8798: `ug/m3`, `ppm`, `mm/h`, `m/h`, `mm`, `cm`, `dBm`). A few that are not registered
but that real devices send (`NTU`, `mg/L`, `uS/cm`, `mS/cm`, `ppb`) are accepted as
CityWatch extensions and marked `registered=False`.

Note RFC 8428's own warning: SenML `%` is NOT a percentage but the ratio 0..1, like `/`.
A device that sends 55 with unit `%` meaning 55 % is converted to 5500 and refused as out of
range: loudly wrong, never silently wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from schemas.errors import PayloadError
from schemas.registry import CATALOG_UNITS

# Molar volume of an ideal gas at 25 °C and 1013.25 hPa (US EPA convention) in L/mol:
# ppb = µg/m³ * 24.45 / M, with M the molar mass in g/mol.
MOLAR_VOLUME_L: Final = 24.45
_MOLAR_MASS: Final[dict[str, float]] = {"no2": 46.0055, "o3": 47.9982, "so2": 64.066, "co": 28.010}


@dataclass(frozen=True, slots=True)
class Conversion:
    """`registry_value = source_value * factor + offset`."""

    factor: float = 1.0
    offset: float = 0.0
    registered: bool = True  # False: not in the SenML Units registry (a CityWatch extension)

    def apply(self, value: float) -> float:
        return value * self.factor + self.offset


_SAME = Conversion()
_EXT = Conversion(registered=False)
_RATIO_TO_PCT = Conversion(factor=100.0)


def _gas_ppb(gas: str) -> Conversion:
    return Conversion(factor=MOLAR_VOLUME_L / _MOLAR_MASS[gas])


# metric -> {source unit symbol -> conversion into the registry unit}
METRIC_UNITS: Final[dict[str, dict[str, Conversion]]] = {
    # water
    "ph": {"pH": _SAME},
    "turbidity_ntu": {"NTU": _EXT},
    "dissolved_oxygen_mgl": {
        "kg/m3": Conversion(factor=1000.0),  # 1 kg/m³ = 1 g/L = 1000 mg/L
        "mg/L": _EXT,
        "mg/l": _EXT,
    },
    "conductivity_uscm": {
        "S/m": Conversion(factor=1e4),  # 1 S/m = 10 mS/cm = 10 000 µS/cm
        "uS/cm": _EXT,
        "mS/cm": Conversion(factor=1000.0, registered=False),
    },
    "temperature_c": {"Cel": _SAME, "K": Conversion(offset=-273.15)},
    # air
    "pm25_ugm3": {"ug/m3": _SAME, "kg/m3": Conversion(factor=1e9)},
    "pm10_ugm3": {"ug/m3": _SAME, "kg/m3": Conversion(factor=1e9)},
    "no2_ppb": {"ppb": _EXT, "ppm": Conversion(factor=1000.0), "ug/m3": _gas_ppb("no2")},
    "o3_ppb": {"ppb": _EXT, "ppm": Conversion(factor=1000.0), "ug/m3": _gas_ppb("o3")},
    "so2_ppb": {"ppb": _EXT, "ppm": Conversion(factor=1000.0), "ug/m3": _gas_ppb("so2")},
    "co_ppm": {
        "ppm": _SAME,
        "ppb": Conversion(factor=0.001, registered=False),
        "ug/m3": Conversion(factor=_gas_ppb("co").factor / 1000.0),
    },
    "humidity_pct": {"%RH": _SAME, "/": _RATIO_TO_PCT, "%": _RATIO_TO_PCT},
    # flood
    "water_level_m": {"m": _SAME, "cm": Conversion(factor=0.01), "mm": Conversion(factor=0.001)},
    "rain_mm_h": {"mm/h": _SAME, "m/h": Conversion(factor=1000.0), "m/s": Conversion(3.6e6)},
    "flow_m3s": {"m3/s": _SAME, "l/s": Conversion(factor=0.001)},
    # litter
    "litter_items": {"count": _SAME},
    "fill_level_pct": {"/": _RATIO_TO_PCT, "%": _RATIO_TO_PCT},
    "litter_kg": {"kg": _SAME, "g": Conversion(factor=0.001)},
    # any kind
    "battery_pct": {"%EL": _SAME, "/": _RATIO_TO_PCT, "%": _RATIO_TO_PCT},
    "rssi_dbm": {"dBm": _SAME, "dBW": Conversion(offset=30.0)},
    # the open catalog (deploy/devices/metrics.yaml): its units are CityWatch's own table,
    # not checked against the SenML registry
    **{
        metric: {
            unit: Conversion(factor=f, offset=o, registered=False) for unit, (f, o) in table.items()
        }
        for metric, table in CATALOG_UNITS.items()
    },
}

# SenML units that carry a position, not a measurement (RFC 8428: WGS84 degrees).
POSITION_UNITS: Final[dict[str, str]] = {"lat": "lat", "lon": "lon"}


def convert(metric: str, value: float, unit: str | None) -> float:
    """`value` in `unit` expressed in the registry unit of `metric`.

    No unit means the value is already in the registry unit (RFC 8428 4.5.2 leaves units to
    the application context when a record has none).

    Raises:
        PayloadError: `unit_not_convertible`, when `unit` is not accepted for `metric`.
    """
    if unit is None:
        return value
    conversion = METRIC_UNITS.get(metric, {}).get(unit)
    if conversion is None:
        accepted = ", ".join(sorted(METRIC_UNITS.get(metric, {}))) or "none"
        raise PayloadError(
            "unit_not_convertible",
            f"unit {unit!r} cannot be converted to {metric!r} (accepted units: {accepted})",
        )
    return conversion.apply(value)


def metrics_for_unit(unit: str) -> frozenset[str]:
    """Every metric that accepts `unit`: used to recognise a SenML record by its unit."""
    return frozenset(m for m, units in METRIC_UNITS.items() if unit in units)
