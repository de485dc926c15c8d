"""Scenarios: YAML files in `simulators/scenarios/` that script a city's weather and faults.

A scenario says how long it lasts, how often each kind of device reports, what the
weather does (rain cells, regional haze, local burning, and `surge`: a flash-flood wave
from upstream that lifts an area's river by `rise_m` within minutes) and at which rates
devices fail.
Everything else (the city, the fleet size, the seed, the format) comes from the run, so
one scenario rehearses any city.

Durations are written `6h`, `90m`, `1h30m`, `45s` or as seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from schemas.errors import ConfigError
from schemas.registry import KINDS, Kind
from simulators.faults import FaultRates

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)
DEFAULT_INTERVALS: dict[Kind, timedelta] = {
    "water": timedelta(minutes=10),
    "air": timedelta(minutes=5),
    "flood": timedelta(minutes=5),
    "litter": timedelta(minutes=15),
}


class ScenarioError(ConfigError):
    """A scenario file is missing, malformed, or describes something impossible."""


def parse_duration(value: Any, what: str = "duration") -> timedelta:
    """`6h`, `1h30m`, `90m`, `45s` or a number of seconds."""
    if isinstance(value, bool):
        raise ScenarioError(f"{what}: {value!r} is not a duration")
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and any(m.groups()):
            h, mins, s = (float(g) if g else 0.0 for g in m.groups())
            return timedelta(hours=h, minutes=mins, seconds=s)
    raise ScenarioError(f"{what}: {value!r} is not a duration like 6h, 90m or 1h30m")


@dataclass(frozen=True)
class Episode:
    """A rise to a peak and a fall back, in scenario time since the start.

    The shape is sin² on each side: smooth at both ends, as rain cells and haze are.
    `areas` scales the peak per area id (`default` for the rest); `area` pins a local one.
    """

    start: timedelta
    peak: timedelta
    end: timedelta
    amount: float
    areas: dict[str, float] = field(default_factory=dict)

    def factor(self, area_id: str) -> float:
        return self.areas.get(area_id, self.areas.get("default", 1.0))

    def value(self, since_start: timedelta, area_id: str) -> float:
        """The episode's contribution at `since_start` in `area_id`."""
        if not self.start <= since_start <= self.end:
            return 0.0
        if since_start <= self.peak:
            span = (self.peak - self.start).total_seconds()
            x = 1.0 if span == 0 else (since_start - self.start).total_seconds() / span
        else:
            span = (self.end - self.peak).total_seconds()
            x = 1.0 if span == 0 else (self.end - since_start).total_seconds() / span
        return self.amount * self.factor(area_id) * math.sin(math.pi / 2 * x) ** 2


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration: timedelta
    intervals: dict[Kind, timedelta]
    rain: tuple[Episode, ...] = ()
    haze: tuple[Episode, ...] = ()
    burning: tuple[Episode, ...] = ()
    surge: tuple[Episode, ...] = ()  # metres added to an area's river level
    base_rain_mm_h: float = 0.0
    faults: FaultRates = field(default_factory=FaultRates)
    start_local: time | None = None  # default start: the last such local time that fits

    def default_start(self, now: datetime, utc_offset_h: float) -> datetime:
        """The latest start, on the minute, at which the whole scenario lies before `now`.

        Readings then never come "from the future" for the gateway, however fast the
        scenario plays; with `start_local`, the start is also at that local time of day.
        """
        latest = (now - self.duration).astimezone(UTC).replace(second=0, microsecond=0)
        if self.start_local is None:
            return latest
        offset = timedelta(hours=utc_offset_h)
        local = latest + offset
        candidate = datetime.combine(local.date(), self.start_local, tzinfo=UTC)
        if candidate > local:
            candidate -= timedelta(days=1)
        return candidate - offset

    def rain_mm_h(self, since_start: timedelta, area_id: str) -> float:
        return self.base_rain_mm_h + sum(e.value(since_start, area_id) for e in self.rain)


def _episodes(raw: Any, what: str, amount_key: str) -> tuple[Episode, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError(f"{what}: expected a list of episodes")
    out = []
    for i, e in enumerate(raw):
        where = f"{what}[{i}]"
        if not isinstance(e, dict) or amount_key not in e:
            raise ScenarioError(f"{where}: needs start, peak, end and {amount_key}")
        start = parse_duration(e.get("start", 0), f"{where}.start")
        end = parse_duration(e["end"], f"{where}.end")
        peak = parse_duration(e.get("peak", (start + end) / 2 / timedelta(seconds=1)), where)
        if not start <= peak <= end:
            raise ScenarioError(f"{where}: start <= peak <= end does not hold")
        areas = dict(e.get("areas") or {})
        if "area" in e:  # a local episode: only there
            areas = {str(e["area"]): 1.0, "default": 0.0}
        if not all(isinstance(v, int | float) for v in areas.values()):
            raise ScenarioError(f"{where}.areas: factors must be numbers")
        out.append(
            Episode(
                start, peak, end, float(e[amount_key]), {str(k): float(v) for k, v in areas.items()}
            )
        )
    return tuple(out)


def parse_scenario(data: Any, source: str = "<data>") -> Scenario:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ScenarioError(f"{source}: a scenario is a mapping with a 'name'")
    intervals = dict(DEFAULT_INTERVALS)
    for kind, value in (data.get("interval") or {}).items():
        if kind not in KINDS:
            raise ScenarioError(f"{source}: interval for unknown kind {kind!r}")
        intervals[kind] = parse_duration(value, f"{source}: interval.{kind}")
        if intervals[kind] <= timedelta(0):
            raise ScenarioError(f"{source}: interval.{kind} must be positive")
    weather = data.get("weather") or {}
    start_local = None
    if data.get("start_local") is not None:
        try:
            start_local = time.fromisoformat(str(data["start_local"]))
        except ValueError as exc:
            raise ScenarioError(f"{source}: start_local must be HH:MM") from exc
    try:
        faults = FaultRates.from_mapping(data.get("faults") or {})
    except ValueError as exc:
        raise ScenarioError(f"{source}: {exc}") from exc
    duration = parse_duration(data.get("duration", "6h"), f"{source}: duration")
    if duration <= timedelta(0):
        raise ScenarioError(f"{source}: duration must be positive")
    return Scenario(
        name=data["name"],
        description=str(data.get("description", "")).strip(),
        duration=duration,
        intervals=intervals,
        rain=_episodes(weather.get("rain"), f"{source}: weather.rain", "peak_mm_h"),
        haze=_episodes(weather.get("haze"), f"{source}: weather.haze", "pm25_ugm3"),
        burning=_episodes(weather.get("burning"), f"{source}: weather.burning", "pm25_ugm3"),
        surge=_episodes(weather.get("surge"), f"{source}: weather.surge", "rise_m"),
        base_rain_mm_h=float(weather.get("base_rain_mm_h", 0.0)),
        faults=faults,
        start_local=start_local,
    )


def available() -> list[str]:
    """The names of the scenarios shipped in `simulators/scenarios/`."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (`monsoon-storm`) or any scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ScenarioError(f"no scenario {str(name_or_path)!r}; shipped: {', '.join(available())}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not YAML: {exc}") from exc
    return parse_scenario(data, str(path))
