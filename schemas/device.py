"""What the registry knows about a device, as the adapters and the gateway need it.

The registry (the `devices` table, managed by `citywatch devices ...`) is the source of
truth; the gateway keeps these profiles in memory and hands the one for a message's
device to the pure decoding functions, so decoding stays free of I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.registry import Kind
from schemas.topics import DEVICE_ID

PayloadFormat = Literal["native", "senml", "ttn", "chirpstack"]
DerivationType = Literal[
    "level_from_distance",
    "level_from_pressure",
    "fill_from_distance",
    "rain_rate",
    "rain_from_tips",
]

# Each derivation's default source and target metric (`citywatch devices add --derive TYPE`).
DERIVATION_DEFAULTS: dict[str, tuple[str, str]] = {
    "level_from_distance": ("distance_m", "water_level_m"),
    "level_from_pressure": ("water_pressure_kpa", "water_level_m"),
    "fill_from_distance": ("distance_m", "fill_level_pct"),
    "rain_rate": ("rain_mm", "rain_mm_h"),
    "rain_from_tips": ("rain_tips", "rain_mm"),
}
# The per-device parameters (registry `params`) each derivation needs; defaults in
# schemas/adapters/derived.py. Checked when a device is registered.
DERIVATION_PARAMS: dict[str, tuple[str, ...]] = {
    "level_from_distance": ("mount_height_m",),
    "level_from_pressure": (),
    "fill_from_distance": ("empty_distance_m",),
    "rain_rate": ("interval_s",),
    "rain_from_tips": ("mm_per_tip",),
}
# Every parameter a device may carry, and what it means (shown by `citywatch devices show`).
DEVICE_PARAMS: dict[str, str] = {
    "mount_height_m": "height of a distance sensor above the gauge's zero (m)",
    "datum_offset_m": "added to a derived water level: the gauge zero's height above the datum (m)",
    "density_kgm3": "water density for a level from pressure (kg/m³, default 1000)",
    "baro_hpa": "fixed barometric pressure subtracted from an absolute pressure (hPa)",
    "empty_distance_m": "distance sensor to the bottom of an empty bin or boom (m)",
    "full_distance_m": "distance sensor to the surface of a full bin or boom (m, default 0)",
    "interval_s": "reporting interval over which a rain amount fell (s)",
    "mm_per_tip": "rain per tipping-bucket tip (mm)",
}


class Derivation(BaseModel):
    """A metric computed from another of the same reading (schemas/adapters/derived.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: DerivationType
    source: str | None = None  # default: DERIVATION_DEFAULTS[type][0]
    target: str | None = None  # default: DERIVATION_DEFAULTS[type][1]
    # level_from_pressure: a metric of the same reading holding the barometric pressure
    # (hPa) to subtract from an absolute water pressure (barometric compensation).
    baro_metric: str | None = None

    @property
    def source_metric(self) -> str:
        return self.source or DERIVATION_DEFAULTS[self.type][0]

    @property
    def target_metric(self) -> str:
        return self.target or DERIVATION_DEFAULTS[self.type][1]


class MeasurementList(BaseModel):
    """How to read a decoder's list of measurements (`_lorawan.flatten_measurements`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    list: str  # the decoded object's member holding the list, e.g. "messages"
    name: str  # each element's member naming the measurement, e.g. "measurementId"
    value: str  # each element's member holding the value, e.g. "measurementValue"


DeviceStatus = Literal["active", "disabled", "unprovisioned"]
UnknownDevicePolicy = Literal["reject", "accept"]


class DeviceProfile(BaseModel):
    """One registered device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str = Field(pattern=DEVICE_ID.pattern)
    kind: Kind
    name: str | None = None
    area: str | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    payload_format: PayloadFormat = "native"
    # Either {network-server field name: CityWatch metric} or the name of a shipped mapping
    # (e.g. "fiware-air-quality"); None means the payload already uses CityWatch names.
    field_mapping: dict[str, str] | str | None = None
    install_date: date | None = None
    # Additive calibration offsets per metric, applied after unit conversion.
    calibration: dict[str, float] = Field(default_factory=dict)
    # Per-device QARTOD overrides: {metric: {test: {parameter: value}}}.
    qc_overrides: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    status: DeviceStatus = "active"
    # A simulated device (the demo's or the simulator's fleet): its alerts are CAP
    # `Exercise`, never `Actual` (issue 14), so a demo cannot page real staff.
    simulated: bool = False
    # A drinking-water point (a tap, a treatment plant's outlet): only its water readings are
    # called "drinking water" and carry boil-water advice on the residents' page (issue 14);
    # other water devices are labelled for the water body they measure (sea, estuary, river).
    drinking_water: bool = False
    # The shipped device profile (deploy/devices/profiles/) the device was registered with;
    # its mapping, derivations, list layout and quality defaults are copied into this entry.
    profile: str | None = None
    # Other kinds whose metrics the device also reports: a weather station registered as
    # `flood` (its rain) that also reports air temperature and humidity.
    also_kinds: tuple[Kind, ...] = ()
    # Per-device parameters of the derivations (DEVICE_PARAMS): mount height, datum offset...
    params: dict[str, float] = Field(default_factory=dict)
    derived: tuple[Derivation, ...] = ()
    measurements: MeasurementList | None = None


# How the pure decoding functions ask about a device: None when it is not registered.
DeviceLookup = Callable[[str], DeviceProfile | None]
