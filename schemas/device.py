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


# How the pure decoding functions ask about a device: None when it is not registered.
DeviceLookup = Callable[[str], DeviceProfile | None]
