"""The simulated environment: what a healthy sensor in an area would read at an instant.

Deterministic physics plus per-device noise, each behaviour the issue asks for:

- water: daily dissolved-oxygen cycle (photosynthesis peaks mid-afternoon, respiration
  bottoms out before dawn), pH following it, turbidity rising after rain and settling,
  conductivity of sea water at the coast and diluted by runoff inland;
- air: daily cycle (night-time inversion), traffic peaks at 07-09 and 17-19 local time,
  afternoon ozone, ships' SO2 at the port, regional haze and local burning episodes, rain
  washing particles out;
- flood: water level = datum base + tide + a linear reservoir filled by rain and drained
  with the area's recession time, plus any flash-flood wave (`surge`) from upstream; flow
  from a rating curve;
- litter: items accumulate (tourists by day on beaches, runoff at river booms), surge
  after storms, and reset to zero when a crew collects.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from simulators.areas import Area, City, FloodModel
from simulators.scenarios import Scenario

# The dominant tidal constituents at Kampong Som bay: mixed, mainly diurnal (K1, O1) with
# a semi-diurnal part (M2). Periods in hours.
_TIDES = ((23.93, 0.55), (25.82, 0.30), (12.42, 0.25))
_GRID = timedelta(minutes=1)  # the flood model's integration step
# A flood gauge's reading noise (standard deviation, m): a reading is the level plus this.
LEVEL_NOISE_M = 0.008


def _bump(hour: float, centre: float, width: float) -> float:
    """A daily Gaussian bump around `centre` (local hours), wrapping midnight."""
    d = min(abs(hour - centre), 24 - abs(hour - centre))
    return math.exp(-0.5 * (d / width) ** 2)


@dataclass
class FloodSeries:
    """An area's modelled water level on a one-minute grid over the whole scenario."""

    start: datetime
    levels: list[float]
    storage: list[float]

    def _index(self, t: datetime) -> tuple[int, float]:
        x = (t - self.start) / _GRID
        i = max(0, min(len(self.levels) - 2, math.floor(x)))
        return i, min(1.0, max(0.0, x - i))

    def level(self, t: datetime) -> float:
        i, f = self._index(t)
        return self.levels[i] * (1 - f) + self.levels[i + 1] * f

    def stored(self, t: datetime) -> float:
        i, f = self._index(t)
        return self.storage[i] * (1 - f) + self.storage[i + 1] * f


class Environment:
    """The city's weather and water for one scenario, from its start."""

    def __init__(self, city: City, scenario: Scenario, start: datetime) -> None:
        self.city = city
        self.scenario = scenario
        self.start = start
        self.flood: dict[str, FloodSeries] = {
            a.id: self._integrate(a, a.flood) for a in city.areas if a.flood is not None
        }
        # Fast runoff for turbidity (hours) and slow for litter reaching booms.
        self._runoff: dict[str, list[float]] = {
            a.id: self._reservoir(a.id, 1.5) for a in city.areas
        }

    # -- time helpers -----------------------------------------------------------------------
    def since(self, t: datetime) -> timedelta:
        return t - self.start

    def local_hour(self, t: datetime) -> float:
        local = t + timedelta(hours=self.city.utc_offset_h)
        return local.hour + local.minute / 60 + local.second / 3600

    def rain(self, area_id: str, t: datetime) -> float:
        return self.scenario.rain_mm_h(self.since(t), area_id)

    def haze(self, area_id: str, t: datetime) -> float:
        s = self.since(t)
        return sum(e.value(s, area_id) for e in self.scenario.haze)

    def burning(self, area_id: str, t: datetime) -> float:
        s = self.since(t)
        return sum(e.value(s, area_id) for e in self.scenario.burning)

    def tide(self, t: datetime) -> float:
        hours = t.timestamp() / 3600  # absolute time: the tide does not restart with a run
        return sum(a * math.sin(2 * math.pi * hours / p) for p, a in _TIDES) / 1.1

    # -- models on a grid -------------------------------------------------------------------
    def _steps(self) -> int:
        return int(self.scenario.duration / _GRID) + 2

    def _reservoir(self, area_id: str, recession_h: float, response: float = 1.0) -> list[float]:
        dt_h = _GRID / timedelta(hours=1)
        s, out = 0.0, []
        for i in range(self._steps()):
            out.append(s)
            rain = self.scenario.rain_mm_h(_GRID * i, area_id)
            s += (response * rain - s / recession_h) * dt_h
        return out

    def _integrate(self, area: Area, model: FloodModel) -> FloodSeries:
        storage = self._reservoir(area.id, model.recession_h, model.response_m_per_mm)
        # A flash-flood wave from upstream: water that arrives, not rain that fell here.
        for i, s in enumerate(storage):
            storage[i] = s + sum(e.value(_GRID * i, area.id) for e in self.scenario.surge)
        levels = [
            model.base_m + model.tide_m * self.tide(self.start + _GRID * i) + storage[i]
            for i in range(len(storage))
        ]
        return FloodSeries(self.start, levels, storage)

    def runoff(self, area_id: str, t: datetime) -> float:
        """Recent rain in mm, decaying over ~1.5 h: what makes rivers brown."""
        series = self._runoff[area_id]
        x = max(0, min(len(series) - 1, int(self.since(t) / _GRID)))
        return series[x]

    # -- healthy readings per kind ----------------------------------------------------------
    def water(self, area: Area, t: datetime, rng: random.Random, phase: float) -> dict[str, float]:
        h = self.local_hour(t)
        # DO peaks ~15:00 and bottoms ~05:00; warm tropical water holds ~6-8 mg/L.
        do_cycle = math.sin(2 * math.pi * (h - 9.0) / 24)
        runoff = self.runoff(area.id, t)
        temp = 29.0 + 1.2 * math.sin(2 * math.pi * (h - 10.0) / 24) - 0.01 * runoff
        do = 6.6 + 1.3 * do_cycle - 0.004 * runoff
        ph = (8.1 if area.coastal else 7.3) + 0.15 * do_cycle - 0.0015 * runoff
        base_turb = 3.0 if area.coastal else 8.0
        turb = base_turb * (1 + 0.1 * math.sin(phase + h)) + 0.9 * runoff
        cond = 50_000.0 - 40.0 * runoff if area.coastal else 420.0 - 1.2 * runoff
        return {
            "ph": round(ph + rng.gauss(0, 0.03), 3),
            "turbidity_ntu": round(max(0.1, turb + rng.gauss(0, 0.4)), 2),
            "dissolved_oxygen_mgl": round(max(0.2, do + rng.gauss(0, 0.12)), 3),
            "conductivity_uscm": round(max(30.0, cond + rng.gauss(0, cond * 0.01)), 1),
            "temperature_c": round(temp + rng.gauss(0, 0.1), 2),
        }

    def air(self, area: Area, t: datetime, rng: random.Random, phase: float) -> dict[str, float]:
        h = self.local_hour(t)
        rush = _bump(h, 8.0, 1.0) + _bump(h, 18.0, 1.2)
        inversion = 0.5 + 0.5 * math.cos(2 * math.pi * (h - 4.0) / 24)  # stable air at night
        rain = self.rain(area.id, t)
        washout = 1 / (1 + rain / 8.0)
        traffic = max(area.traffic, 0.15)
        haze = self.haze(area.id, t)
        fire = self.burning(area.id, t)
        pm25 = (12 + 10 * inversion + 25 * traffic * rush) * washout + haze + fire
        pm10 = pm25 * (1.5 + 0.2 * math.sin(phase)) + 8 * traffic * rush + 0.3 * haze
        no2 = (6 + 30 * traffic * rush + 6 * inversion) * washout
        sun = max(0.0, math.sin(math.pi * (h - 6.5) / 12.5))
        o3 = max(2.0, 12 + 38 * sun - 0.4 * no2 + 0.15 * haze)
        co = 0.25 + 1.2 * traffic * rush + 0.012 * (haze + fire)
        so2 = 1.5 + 25 * area.ships * (0.6 + 0.4 * math.sin(phase + h / 3)) + 0.02 * fire
        temp = 27.0 + 4.5 * math.sin(2 * math.pi * (h - 8.5) / 24) - 0.08 * min(rain, 30)
        humidity = 78 - 14 * math.sin(2 * math.pi * (h - 8.5) / 24) + 0.8 * min(rain, 25)

        def noisy(value: float, rel: float) -> float:
            return max(0.0, value * (1 + rng.gauss(0, rel)))

        pm25 = noisy(pm25, 0.06)
        return {
            "pm25_ugm3": round(pm25, 1),
            "pm10_ugm3": round(max(pm25, noisy(pm10, 0.06)), 1),  # PM10 includes PM2.5
            "no2_ppb": round(noisy(no2, 0.08), 1),
            "o3_ppb": round(noisy(o3, 0.06), 1),
            "so2_ppb": round(noisy(so2, 0.1), 1),
            "co_ppm": round(noisy(co, 0.05), 3),
            "temperature_c": round(temp + rng.gauss(0, 0.2), 2),
            "humidity_pct": round(min(100.0, max(5.0, humidity + rng.gauss(0, 1.5))), 1),
        }

    def gauge_rain(self, area_id: str, t: datetime, phase: float) -> float:
        """The rain intensity (mm/h) where one gauge of the area stands: the area's rain,
        a few per cent more or less (showers are patchy; `phase` places the gauge). The
        evaluation's truth uses the same, so a gauge is judged on the rain that fell on it."""
        return self.rain(area_id, t) * (1 + 0.08 * math.sin(phase))

    def flood_values(
        self, area: Area, t: datetime, rng: random.Random, phase: float
    ) -> dict[str, float]:
        series = self.flood.get(area.id)
        level = series.level(t) if series is not None else 0.5
        stored = series.stored(t) if series is not None else 0.0
        rain = self.gauge_rain(area.id, t, phase)
        flow = 6.0 * (0.3 + max(0.0, stored)) ** 1.6 + 2.0  # a rating curve, Q ~ a (h - h0)^b
        return {
            "water_level_m": round(level + rng.gauss(0, LEVEL_NOISE_M), 3),
            "rain_mm_h": round(max(0.0, rain + (rng.gauss(0, 0.3) if rain > 0 else 0.0)), 2),
            "flow_m3s": round(max(0.0, flow * (1 + rng.gauss(0, 0.03))), 2),
        }

    def litter_inflow(self, area: Area, t: datetime, step: timedelta, rng: random.Random) -> float:
        """Items arriving at a boom or beach station during `step` before `t`."""
        h = self.local_hour(t)
        hours = step / timedelta(hours=1)
        if area.type == "beach":
            people = 0.2 + _bump(h, 16.0, 2.5) + 0.5 * _bump(h, 11.0, 2.0)
            rate = 14.0 * people  # items per hour
        else:
            rate = 3.0
        rate += 9.0 * self.runoff(area.id, t)  # storms wash plastic down rivers and drains
        expected = rate * hours
        return max(0.0, rng.gauss(expected, math.sqrt(expected + 1e-9)))
