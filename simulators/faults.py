"""Device faults, each with a rate, injected deterministically from a per-device generator.

What real fleets do wrong, and what CityWatch must do about each (DESIGN.md):

| fault          | rate means                  | what the device does                      |
|----------------|-----------------------------|-------------------------------------------|
| `dropout`      | chance per reading          | goes silent for 3-12 intervals            |
| `stuck`        | chance per reading          | one metric repeats for 6-24 readings      |
| `spike`        | chance per reading          | one metric jumps once (still possible)    |
| `out_of_range` | chance per reading          | one metric reads its sensor's range end   |
| `drift`        | share of devices            | one metric's offset grows steadily        |
| `low_battery`  | share of devices            | battery falls from ~18 % towards 2 %      |
| `duplicate`    | chance per message          | the same bytes are published twice        |
| `out_of_order` | chance per message          | held back and sent after the next one     |
| `late`         | chance per reading          | buffers 4-12 readings, uploads them late  |
| `clock_skew`   | share of devices            | clock 7 h ahead (local time as UTC)       |
| `malformed`    | chance per message          | a payload the gateway must reject         |

Every message carries the faults it was given (`Message.faults`, `Message.fault_metric`)
so a test can check each one was flagged, de-duplicated or rejected, and per reading
(`Message.labels`: reading time, metric, fault) so a scorer can compare each stored flag
with the truth. A dropout sends nothing: the run lists each silence (`ScenarioRun.silences`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Literal

from schemas.registry import Kind, metric_spec

FAULTS: tuple[str, ...] = (
    "dropout",
    "stuck",
    "spike",
    "out_of_range",
    "drift",
    "low_battery",
    "duplicate",
    "out_of_order",
    "late",
    "clock_skew",
    "malformed",
)
# A device clock set to Indochina Time but stamped as UTC: the commonest real skew there.
CLOCK_SKEW = timedelta(hours=7)

# How far a spike jumps, per metric: far enough for a spike test, inside the registry range.
_SPIKE: dict[str, float] = {
    "ph": 3.0,
    "turbidity_ntu": 400.0,
    "dissolved_oxygen_mgl": 9.0,
    "conductivity_uscm": 4000.0,
    "temperature_c": 12.0,
    "pm25_ugm3": 350.0,
    "pm10_ugm3": 500.0,
    "no2_ppb": 250.0,
    "o3_ppb": 150.0,
    "so2_ppb": 200.0,
    "co_ppm": 12.0,
    "humidity_pct": -45.0,
    "water_level_m": 3.0,
    "rain_mm_h": 180.0,
    "flow_m3s": 600.0,
    "litter_items": 500.0,
    "fill_level_pct": 45.0,
    "litter_kg": 40.0,
}
# The faults that change a reported value: what a quality check exists to catch.
VALUE_FAULTS: tuple[str, ...] = ("spike", "stuck", "drift", "out_of_range")
# How many readings a stuck episode lasts (the table above).
STUCK_MIN_READINGS = 6
STUCK_MAX_READINGS = 24
# How fast a drifting sensor wanders, per day: fouling, electrolyte loss, a dirty optic.
_DRIFT_PER_DAY: dict[str, float] = {
    "ph": 0.6,
    "turbidity_ntu": 25.0,
    "dissolved_oxygen_mgl": -2.5,
    "conductivity_uscm": 300.0,
    "temperature_c": 1.5,
    "pm25_ugm3": 30.0,
    "pm10_ugm3": 40.0,
    "no2_ppb": 20.0,
    "o3_ppb": -15.0,
    "so2_ppb": 10.0,
    "co_ppm": 0.8,
    "humidity_pct": -12.0,
    "water_level_m": 0.4,
    "rain_mm_h": 2.0,
    "flow_m3s": 20.0,
    "fill_level_pct": 15.0,
    "litter_kg": 5.0,
}


@dataclass(frozen=True)
class FaultRates:
    """The rate of each fault (see the module table for what a rate counts)."""

    dropout: float = 0.0
    stuck: float = 0.0
    spike: float = 0.0
    out_of_range: float = 0.0
    drift: float = 0.0
    low_battery: float = 0.0
    duplicate: float = 0.0
    out_of_order: float = 0.0
    late: float = 0.0
    clock_skew: float = 0.0
    malformed: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0 <= value <= 1:
                raise ValueError(f"fault rate {f.name} must be between 0 and 1, not {value}")

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> FaultRates:
        unknown = set(raw) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        return cls(**{k: float(v) for k, v in raw.items()})

    def scaled(self, factor: float) -> FaultRates:
        """All rates times `factor` (capped at 1): `--faults 0` turns them off."""
        return FaultRates(
            **{f.name: min(1.0, getattr(self, f.name) * factor) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


Gate = Literal["send", "drop", "buffer", "flush"]


class DeviceFaults:
    """One device's fault state, advanced once per reading, from the device's own generator."""

    def __init__(
        self,
        rates: FaultRates,
        rng: random.Random,
        kind: Kind,
        metrics: list[str],
        onsets: Counter[str] | None = None,
    ) -> None:
        self.rates = rates
        self.onsets: Counter[str] = onsets if onsets is not None else Counter()
        self.rng = rng
        self.kind = kind
        self.metrics = metrics
        # Per-device faults are decided once, at installation.
        self.drift_metric: str | None = None
        self.drift_onset_h = 0.0
        if rng.random() < rates.drift:
            candidates = [m for m in metrics if m in _DRIFT_PER_DAY]
            self.drift_metric = rng.choice(candidates) if candidates else None
            self.drift_onset_h = rng.uniform(0.0, 1.0)
            self.onsets["drift"] += 1
        self.low_battery = rng.random() < rates.low_battery
        if self.low_battery:
            self.onsets["low_battery"] += 1
        self.clock_skew = timedelta(0)
        if rng.random() < rates.clock_skew:
            self.clock_skew = CLOCK_SKEW
            self.onsets["clock_skew"] += 1
        self._dropout_left = 0
        self._buffer_left = 0
        self._stuck_left = 0
        self._stuck_metric = ""
        self._stuck_value = 0.0

    def gate(self) -> Gate:
        """Whether this reading is sent, lost to a dropout, or buffered for a late upload."""
        if self._dropout_left:
            self._dropout_left -= 1
            return "drop"
        if self._buffer_left:
            self._buffer_left -= 1
            return "buffer" if self._buffer_left else "flush"
        if self.rates.dropout and self.rng.random() < self.rates.dropout:
            self._dropout_left = self.rng.randint(3, 12) - 1
            self.onsets["dropout"] += 1
            return "drop"
        if self.rates.late and self.rng.random() < self.rates.late:
            self._buffer_left = self.rng.randint(4, 12) - 1
            self.onsets["late"] += 1
            return "buffer"
        return "send"

    def distort(self, metrics: dict[str, float], elapsed_h: float) -> list[tuple[str, str]]:
        """Apply stuck values, spikes and drift in place; say which (fault, metric) applied."""
        applied: list[tuple[str, str]] = []
        if self.drift_metric and elapsed_h >= self.drift_onset_h:
            m = self.drift_metric
            offset = _DRIFT_PER_DAY[m] * (elapsed_h - self.drift_onset_h) / 24 * 4
            metrics[m] = self._clip(m, metrics[m] + offset)
            applied.append(("drift", m))
        if self._stuck_left:
            self._stuck_left -= 1
            metrics[self._stuck_metric] = self._stuck_value
            applied.append(("stuck", self._stuck_metric))
        elif self.rates.stuck and self.rng.random() < self.rates.stuck:
            self._stuck_metric = self.rng.choice(self.metrics)
            self._stuck_value = metrics[self._stuck_metric]
            self._stuck_left = self.rng.randint(STUCK_MIN_READINGS, STUCK_MAX_READINGS) - 1
            self.onsets["stuck"] += 1
            applied.append(("stuck", self._stuck_metric))
        if self.rates.spike and self.rng.random() < self.rates.spike:
            m = self.rng.choice([x for x in self.metrics if x in _SPIKE])
            metrics[m] = self._clip(m, metrics[m] + _SPIKE[m])
            self.onsets["spike"] += 1
            applied.append(("spike", m))
        if self.rates.out_of_range and self.rng.random() < self.rates.out_of_range:
            # A shorted or saturated sensor: it reads the end of its range, a value no
            # environment here produces, yet inside the registry span (the gateway takes it).
            m = self.rng.choice(self.metrics)
            spec = metric_spec(self.kind, m)
            if spec is not None:
                metrics[m] = round(spec.maximum * 0.99, 3)
                self.onsets["out_of_range"] += 1
                applied.append(("out_of_range", m))
        return applied

    def battery(self, healthy_pct: float, progress: float) -> float:
        """The battery reading: healthy, or a failing cell falling towards empty."""
        if not self.low_battery:
            return healthy_pct
        return round(max(1.0, 18.0 - 16.0 * progress + self.rng.gauss(0, 0.3)), 1)

    def _clip(self, metric: str, value: float) -> float:
        spec = metric_spec(self.kind, metric)
        if spec is None:
            return value
        # A faulty sensor still reports something its ADC can produce: inside the range.
        low = spec.minimum
        high = spec.maximum * 0.95
        return round(min(high, max(low, value)), 3)
