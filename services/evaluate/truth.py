"""The alerts a scenario's truth asks for: the loaded rules applied to the simulator's models.

Every number comes from the rules file the alerts service runs with (`load_rules`,
`settings.alerts.rules_file`), so the truth follows the shipped rules; what the rules are
applied to is the simulator's noiseless model on a one-minute grid of scenario time:

- `levels` (flood-level): each area's modelled river level (`Environment.flood`) against the
  rule's levels for that area (`area_levels`, else `levels`); a stage is left at its level
  minus `clear_margin`.
- `rate_of_change` (flood-rising-fast): the modelled level's change over the rule's window,
  per hour; left below `clear_per_hour`.
- `combined` (flood-rain-and-rise): each condition on the area's model (rain accumulated over
  `over`, integrated minute by minute as the engine integrates readings, `rain_mm`; a rise
  rate between two readings one flood interval apart; a value above/below), all of them met
  within `window` of each other.
- `threshold` on a modelled quantity (water, air, flood metrics; `for` respected; left past
  `clear`): per area, any device's noiseless value (each device's phase, as the simulator
  draws it). Litter (`litter-boom-full`): per device, the station's true fill level (or item
  count: the rule's metric) at each reading it took (`ScenarioRun.litter_truth`): the boom
  fills, a crew empties it.
- `aqi` (air-aqi): EPA NowCast over complete hours of the modelled PM2.5 and PM10, the
  category's stage with the rule's `clear_margin_aqi`.
- `offline` (device-offline): per device, every gap of at least `after` between two
  messages the gateway accepts (`Heard`, fed with the played messages): dropouts, a buffering
  device's silence before its late upload, and a device whose messages are all refused (a
  clock 7 h ahead) count alike; so does a silence running to the end of the run.
- `stuck` (flood-gauge-stuck): the simulator's stuck episodes last 6-24 readings; one held
  for `after` is expected (from the per-reading labels), at the shipped 2 h none is.

Rules with none of these (a threshold on a metric no model gives) have no truth: any alert
they raise counts as unfounded. `NO_TRUTH` lists them for the report.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.alerts.engine import aqi, nowcast, staged
from services.alerts.rules import (
    AQI_CATEGORIES,
    AqiRule,
    CombinedRule,
    Condition,
    LevelsRule,
    OfflineRule,
    RateRule,
    Rule,
    RuleSet,
    StuckRule,
    ThresholdRule,
)
from services.evaluate.scoring import Expected
from simulators.environment import LEVEL_NOISE_M
from simulators.fleet import Message
from simulators.run import ScenarioRun

__all__ = [
    "Heard",
    "device_rules",
    "expected_alerts",
    "litter_expected",
    "no_truth",
    "rain_accumulated",
    "threshold_episodes",
]

_MINUTE = timedelta(minutes=1)
_AQI_LOWS = (0, 51, 101, 151, 201, 301)
_MODELLED: dict[str, frozenset[str]] = {
    "water": frozenset(
        {"ph", "turbidity_ntu", "dissolved_oxygen_mgl", "conductivity_uscm", "temperature_c"}
    ),
    "air": frozenset(
        {
            "pm25_ugm3",
            "pm10_ugm3",
            "no2_ppb",
            "o3_ppb",
            "so2_ppb",
            "co_ppm",
            "temperature_c",
            "humidity_pct",
        }
    ),
    "flood": frozenset({"water_level_m", "rain_mm_h"}),
    "litter": frozenset({"litter_items", "fill_level_pct"}),  # run.litter_truth
}


class _ZeroNoise(random.Random):
    """The model's noiseless value: every gauss draw is its mean."""

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        return mu


@dataclass
class Heard:
    """When the gateway heard each device: the scenario times of the messages it accepts.

    Fed every played message (`add`); `gaps` then gives each silence of at least `after`
    between two accepted messages, and to `end` after the last one."""

    last: dict[str, datetime] = field(default_factory=dict)
    silences: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)
    newest: datetime | None = None

    def add(self, msg: Message) -> None:
        if not msg.valid or msg.sent_at is None:
            return
        t = msg.sent_at
        prev = self.last.get(msg.device_id)
        if prev is not None and t > prev:
            self.silences.setdefault(msg.device_id, []).append((prev, t))
        if prev is None or t > prev:
            self.last[msg.device_id] = t
        if self.newest is None or t > self.newest:
            self.newest = t

    def gaps(
        self, after: timedelta, end: datetime | None = None
    ) -> dict[str, list[tuple[datetime, datetime | None]]]:
        """Per device, (last heard, next heard or None) for silences of at least `after`;
        `end` (default: the newest message) closes a silence still running."""
        end = end or self.newest
        out: dict[str, list[tuple[datetime, datetime | None]]] = {}
        for dev, spans in self.silences.items():
            for a, b in spans:
                if b - a >= after:
                    out.setdefault(dev, []).append((a, b))
        if end is not None:
            for dev, last in self.last.items():
                if end - last >= after:
                    out.setdefault(dev, []).append((last, None))
        return out


def device_rules(rules: RuleSet) -> frozenset[str]:
    """Rules whose alerts are about one device (scored per device, not per area)."""
    return frozenset(
        r.id for r in rules.rules if isinstance(r, OfflineRule | StuckRule) or r.kind == "litter"
    )


def no_truth(rules: RuleSet) -> list[str]:
    """Rules this module derives no truth for: every alert they raise counts as unfounded."""
    out = []
    for r in rules.rules:
        modelled = _MODELLED.get(r.kind or "", frozenset())
        if isinstance(r, ThresholdRule | RateRule | LevelsRule) and r.metric not in modelled:
            out.append(r.id)
    return out


# -- generic helpers -------------------------------------------------------------------
def threshold_episodes(
    times: Sequence[datetime],
    values: Sequence[float],
    on: Callable[[float], bool],
    off: Callable[[float], bool],
    hold_for: timedelta = timedelta(0),
) -> list[tuple[datetime, datetime | None]]:
    """(opens, ends) for each run where `on` holds for `hold_for`, ending when `off` holds
    (hysteresis): opens is the first time + `hold_for`; ends None if still on at the end."""
    out: list[tuple[datetime, datetime | None]] = []
    began: datetime | None = None  # `on` since
    opened: datetime | None = None
    for t, v in zip(times, values, strict=True):
        if opened is None:
            if on(v):
                began = began or t
                if t - began >= hold_for:
                    opened = began + hold_for
            else:
                began = None
        elif off(v):
            out.append((opened, t))
            began = opened = None
    if opened is not None:
        out.append((opened, None))
    return out


def rain_accumulated(rain_mm_h: Sequence[float], over: timedelta) -> list[float]:
    """Millimetres fallen in the `over` before each minute of a one-minute intensity grid
    (each minute's intensity stands for the minute before it, as the engine's `rain_mm`
    lets each reading stand for the interval before it)."""
    n = max(1, round(over / _MINUTE))
    out, total = [], 0.0
    for i, r in enumerate(rain_mm_h):
        if i > 0:
            total += r / 60
        if i - n > 0:
            total -= rain_mm_h[i - n] / 60
        out.append(round(max(0.0, total), 6))
    return out


def litter_expected(
    rule: ThresholdRule, area: str, device: str, truth: Iterable[tuple[datetime, float]]
) -> list[Expected]:
    """A litter station's true counts (reading time, items) against a threshold rule: an
    expected alert each time the count reaches the threshold, until it falls past `clear`
    (a crew collected)."""
    points = list(truth)
    eps = threshold_episodes(
        [t for t, _ in points],
        [v for _, v in points],
        rule.breached,
        rule.cleared,
        rule.for_,
    )
    return [Expected(rule.id, area, rule.severity, s, device, e) for s, e in eps]


def _stage_expected(
    rule_id: str,
    area: str,
    severities: Sequence[str],
    times: Sequence[datetime],
    stages: Sequence[int],
) -> list[Expected]:
    """An expected alert per upward stage crossing, its `below_at` when the stage is left."""
    out: list[Expected] = []
    open_at: dict[int, datetime] = {}
    prev = 0
    for t, s in zip(times, stages, strict=True):
        for k in range(prev + 1, s + 1):
            open_at[k] = t
        for k in range(s + 1, prev + 1):
            out.append(Expected(rule_id, area, severities[k - 1], open_at.pop(k), None, t))
        prev = s
    out.extend(
        Expected(rule_id, area, severities[k - 1], t, None, None) for k, t in open_at.items()
    )
    return out


def measurable_crossings(
    expected: list[Expected],
    severities: Sequence[str],
    table: Sequence[float],
    times: Sequence[datetime],
    levels: Sequence[float],
) -> list[Expected]:
    """Each stage crossing with the first time, before the stage is left, at which the
    modelled level stands 2 x LEVEL_NOISE_M above the stage's level (a single noisy reading
    then shows it); None when the river never gets that far above it."""
    margin = 2 * LEVEL_NOISE_M
    out = []
    for e in expected:
        level = table[list(severities).index(e.severity)]
        seen = next(
            (
                t
                for t, v in zip(times, levels, strict=True)
                if t >= e.at and (e.below_at is None or t < e.below_at) and v >= level + margin
            ),
            None,
        )
        out.append(dataclasses.replace(e, measurable_at=seen))
    return out


# -- the scenario -----------------------------------------------------------------------
def expected_alerts(
    run: ScenarioRun,
    rules: RuleSet,
    heard: Heard | None = None,
    *,
    stuck: Iterable[tuple[str, str, datetime]] = (),
) -> list[Expected]:
    """Every alert the scenario should raise under `rules` (call after the run's messages
    were played, so `heard` and `run.litter_truth` are complete). `stuck` are the labelled
    stuck readings (device, metric, reading time)."""
    grid = []
    t = run.start
    while t <= run.end:
        grid.append(t)
        t += _MINUTE
    areas: dict[str, dict[str, list[float]]] = {}  # area -> kind -> device phases
    where: dict[str, str] = {}
    for d in run.devices:
        areas.setdefault(d.area.id, {}).setdefault(d.who.kind, []).append(d.phase)
        where[d.who.pipeline_id(d.fmt)] = d.area.id
    by_id = {a.id: a for a in run.city.areas}
    flood_step = max(1, round(run.scenario.intervals["flood"] / _MINUTE))
    quiet = _ZeroNoise(0)
    cache: dict[tuple[str, str, float], list[dict[str, float]]] = {}

    def model(area: str, kind: str, phase: float) -> list[dict[str, float]]:
        key = (area, kind, phase)
        if key not in cache:
            a = by_id[area]
            if kind == "water":
                cache[key] = [run.env.water(a, t, quiet, phase) for t in grid]
            elif kind == "air":
                cache[key] = [run.env.air(a, t, quiet, phase) for t in grid]
            else:
                cache[key] = [
                    {
                        "water_level_m": run.env.flood[area].level(t)
                        if area in run.env.flood
                        else 0.5,
                        "rain_mm_h": run.env.gauge_rain(area, t, phase),
                    }
                    for t in grid
                ]
        return cache[key]

    def hosts(rule: Rule, kind: str) -> list[str]:
        return sorted(
            a
            for a, kinds in areas.items()
            if kind in kinds
            and (rule.kind is None or rule.kind == kind)
            and (rule.areas is None or a in rule.areas)
        )

    out: list[Expected] = []
    for rule in rules.rules:
        if isinstance(rule, LevelsRule) and rule.metric == "water_level_m":
            for area in hosts(rule, "flood"):
                table = rule.table(area)
                if table is None:
                    continue
                lv = [p["water_level_m"] for p in model(area, "flood", 0.0)]
                stages, cur = [], 0
                for v in lv:
                    cur = staged(v, table, cur, rule.clear_margin)
                    stages.append(cur)
                out += measurable_crossings(
                    _stage_expected(rule.id, area, rule.stages(), grid, stages),
                    rule.stages(), table, grid, lv,
                )  # fmt: skip
        elif isinstance(rule, RateRule) and rule.metric == "water_level_m":
            w = max(1, round(rule.window / _MINUTE))
            sign = 1 if rule.direction == "rising" else -1
            for area in hosts(rule, "flood"):
                lv = [p["water_level_m"] for p in model(area, "flood", 0.0)]
                rate = [
                    0.0 if i < w / 2 else sign * (v - lv[max(0, i - w)]) / (min(i, w) / 60)
                    for i, v in enumerate(lv)
                ]
                eps = threshold_episodes(
                    grid,
                    rate,
                    functools.partial(operator.le, rule.rate_per_hour),
                    functools.partial(operator.gt, rule.clear_rate),
                )
                for s, e in eps:
                    out.append(Expected(rule.id, area, rule.severity, s, None, e))
        elif isinstance(rule, CombinedRule):
            for area in sorted(areas):
                needs = {c.kind for c in rule.conditions}
                if not needs <= set(areas[area]):
                    continue
                # Each condition as any of the area's devices of its kind sees it (each
                # rain gauge on the rain that fell where it stands).
                met = _combined(
                    rule,
                    [
                        [model(area, c.kind, ph) for ph in areas[area][c.kind]]
                        for c in rule.conditions
                    ],
                    flood_step,
                )
                if met is None:
                    continue
                if rule.areas is not None and area not in rule.areas:
                    continue
                for s, e in threshold_episodes(grid, met, bool, lambda x: not x):
                    out.append(Expected(rule.id, area, rule.severity, s, None, e))
        elif isinstance(rule, ThresholdRule) and rule.kind == "litter":
            if rule.metric not in _MODELLED["litter"]:
                continue
            for dev, series in sorted(run.litter_truth.items()):
                if rule.in_scope(dev, "litter", where[dev]):
                    truth = [(t, m[rule.metric]) for t, m in series]
                    out += litter_expected(rule, where[dev], dev, truth)
        elif isinstance(rule, ThresholdRule) and rule.metric in _MODELLED.get(rule.kind or "", ()):
            kind = rule.kind or ""
            for area in hosts(rule, kind):
                per_device = [
                    threshold_episodes(
                        grid,
                        [p[rule.metric] for p in model(area, kind, ph)],
                        rule.breached,
                        rule.cleared,
                        rule.for_,
                    )
                    for ph in areas[area][kind]
                ]
                for s, e in _union(per_device):
                    out.append(Expected(rule.id, area, rule.severity, s, None, e))
        elif isinstance(rule, AqiRule):
            for area in hosts(rule, "air"):
                out += _aqi_expected(
                    rule, area, grid, [model(area, "air", ph) for ph in areas[area]["air"]]
                )
        elif isinstance(rule, OfflineRule) and heard is not None:
            for dev, spans in sorted(heard.gaps(rule.after).items()):
                if dev not in where:
                    continue
                for last, back in spans:
                    out.append(
                        Expected(rule.id, where[dev], rule.severity, last + rule.after, dev, back)
                    )
        elif isinstance(rule, StuckRule):
            out += _stuck_expected(rule, stuck, where, run.scenario.intervals[rule.kind or "flood"])
    return out


def _union(
    episodes: list[list[tuple[datetime, datetime | None]]],
) -> list[tuple[datetime, datetime | None]]:
    """Episodes of any device in an area, merged where they overlap."""
    far = datetime.max.replace(tzinfo=UTC)
    spans = sorted((s, e or far) for eps in episodes for s, e in eps)
    out: list[list[datetime]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, None if e == far else e) for s, e in out]


def _combined(
    rule: CombinedRule, series: list[list[list[dict[str, float]]]], step: int
) -> list[bool] | None:
    """Per minute, whether every condition was met within the rule's window (None: a
    condition on a quantity no model gives). `series` holds per condition one model
    series per device of its kind: a condition is met when any of them meets it."""
    hits: list[list[bool]] = []
    for c, per_device in zip(rule.conditions, series, strict=True):
        each = [_condition(c, points, step) for points in per_device]
        if not each or any(h is None for h in each):
            return None
        hits.append([any(col) for col in zip(*(h for h in each if h is not None), strict=True)])
    w = max(1, round(rule.window / _MINUTE))
    last: list[int | None] = [None] * len(hits)
    out = []
    for i in range(len(hits[0])):
        for k, h in enumerate(hits):
            if h[i]:
                last[k] = i
        out.append(all(x is not None and i - x <= w for x in last))
    return out


def _condition(c: Condition, points: list[dict[str, float]], step: int) -> list[bool] | None:
    if c.metric not in _MODELLED.get(c.kind, ()):
        return None
    v = [p[c.metric] for p in points]
    if c.accumulated_mm is not None and c.over is not None:
        return [x >= c.accumulated_mm for x in rain_accumulated(v, c.over)]
    if c.above is not None:
        return [x >= c.above for x in v]
    if c.below is not None:
        return [x <= c.below for x in v]
    assert c.rising_per_hour is not None
    # The rise over the condition's span (as the engine measures it), at least one
    # reporting interval.
    span = max(step, round(c.rise_over / _MINUTE))
    return [
        i >= span and (x - v[i - span]) * 60 / span >= c.rising_per_hour for i, x in enumerate(v)
    ]


def _aqi_expected(
    rule: AqiRule, area: str, grid: list[datetime], devices: list[list[dict[str, float]]]
) -> list[Expected]:
    """NowCast AQI of each station's modelled PM over complete clock hours; the area's stage
    is its highest station's."""
    first = AQI_CATEGORIES.index(rule.alert_from)
    lows = [float(_AQI_LOWS[first + i]) for i in range(len(rule.categories()))]
    best = [0] * len(grid)
    for points in devices:
        sums: dict[datetime, dict[str, list[float]]] = {}
        for t, p in zip(grid, points, strict=True):
            h = t.replace(minute=0, second=0, microsecond=0)
            for m in rule.metrics():
                cell = sums.setdefault(h, {}).setdefault(m, [0.0, 0.0])
                cell[0] += p[m]
                cell[1] += 1
        cur = 0
        for i, t in enumerate(grid):
            h = t.replace(minute=0, second=0, microsecond=0)
            index: int | None = None
            for m in rule.metrics():
                hourly: list[float | None] = []
                for k in range(1, 25 if rule.averaging == "24h" else 13):
                    got = sums.get(h - timedelta(hours=k), {}).get(m)
                    hourly.append(None if not got else got[0] / got[1])
                if rule.averaging == "24h":
                    present = [c for c in hourly if c is not None]
                    conc = sum(present) / len(present) if len(present) >= 18 else None
                else:
                    conc = nowcast(hourly, m)
                if conc is not None:
                    x = aqi(m, conc)
                    index = x if index is None else max(index, x)
            if index is not None:
                cur = staged(float(index), lows, cur, rule.clear_margin_aqi)
            best[i] = max(best[i], cur)
    return _stage_expected(rule.id, area, rule.stages(), grid, best)


def _stuck_expected(
    rule: StuckRule,
    stuck: Iterable[tuple[str, str, datetime]],
    where: dict[str, str],
    interval: timedelta,
) -> list[Expected]:
    """A labelled stuck episode on the rule's metric held for `after` (the value is frozen
    from the episode's first reading)."""
    times: dict[str, list[datetime]] = {}
    for dev, metric, at in stuck:
        if metric == rule.metric and dev in where:
            times.setdefault(dev, []).append(at)
    out = []
    for dev, ts in sorted(times.items()):
        ts.sort()
        start = prev = ts[0]
        for t in [*ts[1:], None]:
            if t is None or t - prev > 3 * interval:
                if prev - start >= rule.after:
                    out.append(
                        Expected(rule.id, where[dev], rule.severity, start + rule.after, dev, prev)
                    )
                if t is not None:
                    start = t
            if t is not None:
                prev = t
    return out
