"""Alert evaluation: pure functions from (state, readings) to transitions. No I/O here.

Every rule type reduces a reading to a *desired stage* (0 = no alert, 1..n = the rule's
severities, ascending), with the rule's hysteresis built in (a stage is left only past its
clear level). One lifecycle turns desired stages into transitions, for every rule type:

- opening needs the desired stage for `for` of reading time; escalation is immediate;
- de-escalation and resolution need the lower stage for `hold` of reading time (the alert
  takes the highest stage asked for during the hold), so a value hovering at a level
  neither flaps nor drops an alert early;
- one alert per episode: the id derives from (rule, subject, opening reading time), and
  escalation and de-escalation update that alert.

State per (rule, subject) — subject is the device, or `area:<id>` for combined rules and
levels and rate rules with `per: area` — is
a cursor (the newest reading time evaluated), the open alert and stage, the pending
timers and the rule type's window data, all JSON-able so the service stores it in the
database with each batch: a restart resumes exactly where it stopped.

Replays. A reading at or before the cursor is a replay, a redelivery or a late arrival and
is not evaluated; evaluation follows reading time.

Staleness. Each Kafka partition has a *stream head*: the newest reading time seen on it
(partitions are consumed in arrival order, so the head is "now" in reading time, also when
a scenario is played fast). A reading more than `stale_after` behind its partition's head
was buffered or replayed (a device back from an outage uploading hours of readings): it
updates windows and cursors and may de-escalate or resolve, but it never opens or
escalates an alert, so old readings do not raise stale alarms as new. Per partition, not
global, because a consumer may read one partition ahead of another.

Clock skew. One device's clock must not move its stream's "now": a device stamping its
readings hours ahead would make every other device on the partition look silent (offline
alerts in bursts) and their readings stale. A reading at most `clock_skew` (rules.yaml,
15 min) ahead of the head advances it; one further ahead is *held as clock-skewed* while
another device of the stream has reported within `clock_skew` of the head: it does not
advance the head, is counted (`Evaluation.skewed`, the metric
`citywatch_alerts_clock_skewed_readings_total`), proves its device alive at the head's
time, and no other rule acts on it yet: it is *parked* (`parked`, with its quality flags)
and evaluated in full, in time order, once the head comes within `clock_skew` of it (the
stream catching up: a demo's backfill ending, a gateway's queue draining). A reading back
from parking never moves the head itself: only the stream's other devices do, so a clock
hours ahead cannot walk its stream forward `clock_skew` at a time. A device whose
clock stays off never gets there; at most `PARKED_MAX` readings per stream are kept, the
oldest dropped first (counted in `Evaluation.dropped`). The head jumps only when a second
device confirms it (two devices held ahead: the head moves to the older of their newest
times; a whole stream back from a gap) or no other device of the stream reports (a lone
device after a silence). A stream's first head is the oldest of its first batch's reading
times, so a skewed device among them does not set it either (one alone in a stream's very
first batch still would). The held devices and parked readings are memory only (`ahead`,
`parked`): after a restart a jump needs its two devices again, which errs on the side of
not moving, and readings parked before it are not evaluated (they are stored all the same).

Offline is measured in reading time against the same head (the device's partition):
evaluation is deterministic and replay-safe, and a scenario played at any speed raises the
same offline alerts at the same reading times. For live data the wall clock advances it
too (`live_heads`): a stream is live when its newest reading was at most `live_lag` behind
the wall clock when it arrived, and a live stream's offline clock is max(head, wall clock -
`live_lag`), so a partition whose devices all fall silent still reports them; the alerts
service runs `tick` on these clocks periodically. Replayed history (readings far behind
the wall clock when they arrive) is never live, so its offline alerts stay in reading time
whatever the playback speed. The lag also keeps a short stall of the pipeline itself from
marking every device offline (that is the pipeline's own monitoring's job).

Quality and persistence (issue 14: no alert from one sample the checks cannot yet judge).
A value the QARTOD tests flag FAIL (4) is not evaluated; a SUSPECT (3) value can confirm but
never start an opening or an escalation. Beyond that each rule says what an opening rests on
(`confirm`, rules.py): `persist` needs `min_readings` consecutive readings asking for the
stage (the stage opened is the lowest they asked for), so one spike that the checks passed
opens nothing; `final` evaluates a reading only when the series' next reading has made its
quality verdict final (the centred spike test), one reporting interval late, with the
transition at the judged reading's time. The `offline` and `stuck` rules look at every
reading: a stuck sensor is exactly what the flat-line test flags, and a flagged reading
still proves the device alive.

Per-area rules (`per: area`, issue 14: an area's flood is one alert). The area's stage is
the highest stage one of its devices supports (`_area_stage`): a device supports a stage
after `min_readings` consecutive readings of its own at it, or, with `corroborate`, on its
first reading there when another device of the area, read within the window and projected
by its own rise (`_level_at`), reads at least the level minus the tolerance. With
`corroborate` a device whose recent neighbours all read lower never supports the stage
(drift). Confirmation done per device, the area's lifecycle opens, escalates, de-escalates
and resolves one alert on the area's clock (its newest reading time) with the supporting
device's crossing as the trigger. Devices without an area keep per-device alerts.

Trigger. A transition carries the value and time of the reading that crossed the level
(`trigger_value`, `trigger_at`: the first reading of the run that asked for the stage) as
well as the confirming reading's (`value`, `at`). An alert never ends before it starts:
a resolution confirmed by an older reading is dated at the alert's start.

Exercise. Transitions of simulated devices (`simulated`, from the registry) carry CAP
status `Exercise`, so a demo never pages real staff.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from schemas import Reading
from services.alerts.rules import (
    AQI_CATEGORIES,
    AqiRule,
    CombinedRule,
    LevelsRule,
    OfflineRule,
    RateRule,
    Rule,
    RuleSet,
    StuckRule,
    ThresholdRule,
)

__all__ = [
    "Evaluation",
    "Key",
    "Parked",
    "RuleState",
    "Transition",
    "alert_id_for",
    "aqi",
    "aqi_category",
    "evaluate",
    "live_heads",
    "nowcast",
    "rain_mm",
    "staged",
    "tick",
]

# Alert ids are derived, not random: the same opening reading always yields the same id,
# so even a replay that slipped past the cursor could not create a second alert.
_ALERT_NAMESPACE = uuid.UUID("6f1c8a52-37a4-4d0e-9d0c-4c6b0e2f7a11")
FAIL, SUSPECT = 4, 3

Key = tuple[str, str]  # (rule_id, subject): subject is a device id or "area:<area>"
TransitionKind = Literal["firing", "escalated", "deescalated", "resolved"]


def alert_id_for(rule_id: str, subject: str, started_at: datetime) -> uuid.UUID:
    return uuid.uuid5(_ALERT_NAMESPACE, f"{rule_id}|{subject}|{started_at.isoformat()}")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


@dataclass
class RuleState:
    """One (rule, subject)'s evaluation state; `to_json`/`from_json` for the database."""

    cursor: datetime | None = None
    stage: int = 0  # 0: no open alert
    alert_id: uuid.UUID | None = None
    started_at: datetime | None = None
    pend_since: datetime | None = None  # desired stage above `stage` since
    low_since: datetime | None = None  # desired stage below `stage` since
    low_max: int = 0  # the highest stage asked for during the hold
    data: dict[str, Any] = field(default_factory=dict)  # the rule type's window
    # The pending run (desired stage above `stage`): how many readings asked, the stages
    # the last `min_readings` of them asked for, and per stage the first reading of the run
    # that asked for it (its time and value: the alert's trigger when it opens there).
    pend_count: int = 0
    pend_recent: list[int] = field(default_factory=list)
    pend_trig: dict[str, list[Any]] = field(default_factory=dict)
    low_value: float | None = None  # the value that started the hold

    @property
    def open(self) -> bool:
        return self.alert_id is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "alert_id": None if self.alert_id is None else str(self.alert_id),
            "started_at": _iso(self.started_at),
            "pend_since": _iso(self.pend_since),
            "low_since": _iso(self.low_since),
            "low_max": self.low_max,
            "data": self.data,
            "pend_count": self.pend_count,
            "pend_recent": self.pend_recent,
            "pend_trig": self.pend_trig,
            "low_value": self.low_value,
        }

    @classmethod
    def from_json(cls, cursor: datetime | None, raw: Mapping[str, Any] | None) -> RuleState:
        if not raw:
            return cls(cursor=cursor)
        aid = raw.get("alert_id")
        return cls(
            cursor=cursor,
            stage=int(raw.get("stage", 0)),
            alert_id=None if aid is None else uuid.UUID(aid),
            started_at=_dt(raw.get("started_at")),
            pend_since=_dt(raw.get("pend_since")),
            low_since=_dt(raw.get("low_since")),
            low_max=int(raw.get("low_max", 0)),
            data=dict(raw.get("data") or {}),
            pend_count=int(raw.get("pend_count", 1 if raw.get("pend_since") else 0)),
            pend_recent=[int(x) for x in raw.get("pend_recent") or []],
            pend_trig=dict(raw.get("pend_trig") or {}),
            low_value=raw.get("low_value"),
        )


@dataclass(frozen=True)
class Transition:
    kind: TransitionKind
    alert_id: uuid.UUID
    rule: Rule
    device_id: str | None  # None for an area's alert (combined rules)
    area: str | None
    device_kind: str
    value: float
    at: datetime
    severity: str
    previous_severity: str | None
    threshold: float
    started_at: datetime
    category: str = ""
    # The reading that crossed the level: for firing and escalation the first reading of
    # the run that asked for the new stage (persistence confirms later, at `at`); for
    # de-escalation and resolution the first reading below (the hold's start).
    trigger_value: float | None = None
    trigger_at: datetime | None = None
    status: str = "Actual"  # CAP status: the rule's, or Exercise for simulated devices

    @property
    def metric(self) -> str | None:
        if isinstance(self.rule, AqiRule):
            return "aqi"
        if isinstance(self.rule, OfflineRule):
            return None
        return "+".join(self.rule.metrics())


@dataclass
class Evaluation:
    """What one batch changes: transitions, states to store, stream heads to advance."""

    transitions: list[Transition] = field(default_factory=list)
    changed: dict[Key, RuleState] = field(default_factory=dict)
    heads: dict[str, datetime] = field(default_factory=dict)
    stale: int = 0  # readings too far behind their head to open anything
    skewed: int = 0  # readings held as clock-skewed (too far ahead of their head)
    dropped: int = 0  # parked readings dropped unevaluated (PARKED_MAX per stream)
    skipped_quality: int = 0  # rule evaluations skipped for a FAIL flag


@dataclass
class _Ctx:
    """What the lifecycle needs to know about the reading being evaluated."""

    at: datetime
    stale: bool
    suspect: bool
    device_id: str | None
    area: str | None
    device_kind: str
    simulated: bool = False
    head: datetime | None = None  # the reading's stream head
    skewed: bool = False  # held as clock-skewed: far ahead of its stream's head
    # corroborated levels rules: the area's devices' latest [time, value] (LevelsRule)
    peers: dict[str, list[Any]] | None = None


# -- the US EPA AQI ---------------------------------------------------------------------
# 40 CFR Part 58 Appendix G, Table 2, as revised 7 Feb 2024 (89 FR 16202): PM2.5 in µg/m³
# (24-hour, truncated to 0.1), PM10 in µg/m³ (24-hour, truncated to integers).
_AQI_BANDS = ((0, 50), (51, 100), (101, 150), (151, 200), (201, 300), (301, 500))
_BREAKPOINTS: dict[str, tuple[tuple[float, float], ...]] = {
    "pm25_ugm3": (
        (0.0, 9.0),
        (9.1, 35.4),
        (35.5, 55.4),
        (55.5, 125.4),
        (125.5, 225.4),
        (225.5, 325.4),
    ),
    "pm10_ugm3": ((0, 54), (55, 154), (155, 254), (255, 354), (355, 424), (425, 604)),
}
_DECIMALS = {"pm25_ugm3": 1, "pm10_ugm3": 0}


def _truncate(metric: str, c: float) -> float:
    scale = 10.0 ** _DECIMALS[metric]
    return math.floor(c * scale + 1e-9) / scale


def aqi(metric: str, concentration: float) -> int:
    """The AQI of one pollutant's (averaged) concentration, per EPA's linear interpolation."""
    c = _truncate(metric, max(0.0, concentration))
    for (lo, hi), (ilo, ihi) in zip(_BREAKPOINTS[metric], _AQI_BANDS, strict=True):
        if c <= hi:
            c = max(c, lo)
            return round((ihi - ilo) / (hi - lo) * (c - lo) + ilo)
    return 500  # beyond the index: reported as 500+ (EPA)


def aqi_category(index: int) -> int:
    """Category (0 Good .. 5 Hazardous) of an AQI value."""
    cat = 0
    for i, (low, _high) in enumerate(_AQI_BANDS):
        if index >= low:
            cat = i
    return cat


def nowcast(hourly: Sequence[float | None], metric: str) -> float | None:
    """EPA NowCast for PM from hourly averages, most recent complete hour first (up to 12).

    AirNow's method: needs 2 of the 3 most recent hours; weight factor w = cmin/cmax over
    the hours with data, at least 0.5 for particles; NowCast = Σ w^(i-1)·c_i / Σ w^(i-1)
    over hours with data (i the hour's position, 1 the most recent); truncated like the
    24-hour average.
    """
    hours = list(hourly[:12])
    if sum(1 for c in hours[:3] if c is not None) < 2:
        return None
    present = [c for c in hours if c is not None]
    cmin, cmax = min(present), max(present)
    w = 1.0 if cmax <= 0 else max(cmin / cmax, 0.5)
    num = sum(w**i * c for i, c in enumerate(hours) if c is not None)
    den = sum(w**i for i, c in enumerate(hours) if c is not None)
    return _truncate(metric, num / den)


# A rain gauge's intensity stands for the interval since its previous reading, up to this
# long: a gauge silent for longer is not assumed to have rained at the same rate throughout.
RAIN_STEP_MAX = timedelta(minutes=15)


def rain_mm(points: Sequence[Sequence[Any]], now: datetime, over: timedelta) -> float:
    """Millimetres of rain in (now - over, now] from `[time iso, mm/h]` points, oldest first.

    Each reading's intensity applies to the interval since the reading before it (at most
    `RAIN_STEP_MAX`), clipped to the period; the first point only opens the interval. So
    the accumulation does not depend on the reporting interval: a 180 mm/h spike read
    once at a 10 s cadence adds 0.5 mm, at a 5-minute cadence 15 mm, never an hour's worth.
    """
    total = 0.0
    start = now - over
    for before, point in itertools.pairwise(points):
        t0, t1 = datetime.fromisoformat(before[0]), datetime.fromisoformat(point[0])
        lo = max(t0, t1 - RAIN_STEP_MAX, start)
        if t1 > lo:
            total += float(point[1]) * ((t1 - lo) / timedelta(hours=1))
    return round(total, 2)


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# -- desired stages per rule type -------------------------------------------------------


def staged(value: float, levels: Sequence[float], cur: int, margin: float) -> int:
    """Stage for `value` against ascending entry `levels`, leaving a stage only `margin`
    below its level (hysteresis)."""
    up = sum(1 for lv in levels if value >= lv)
    if up >= cur:
        return up
    d = cur
    while d > 0 and value < levels[d - 1] - margin:
        d -= 1
    return max(d, up)


def _aqi_stage(rule: AqiRule, index: int, cur: int) -> int:
    first = AQI_CATEGORIES.index(rule.alert_from)
    lows = [float(_AQI_BANDS[first + i][0]) for i in range(len(rule.categories()))]
    return staged(float(index), lows, cur, rule.clear_margin_aqi)


def _area_aqi(rule: AqiRule, st: RuleState, r: Reading, ctx: _Ctx) -> int | None:
    """An area's AQI (`per: area`): the highest of its stations' at the area's clock, the
    newest reading time heard from any of them (their readings interleave). A station
    silent for a day has no hour left in any average and is dropped."""
    now = max(r.time, _dt(st.data.get("now")) or r.time)
    st.data["now"] = now.isoformat()
    ctx.at = now
    stations: dict[str, dict[str, Any]] = st.data["dev"]
    stations[r.device_id]["at"] = r.time.isoformat()
    since = now - timedelta(hours=25)
    for gone in [d for d, x in stations.items() if datetime.fromisoformat(x["at"]) < since]:
        del stations[gone]
    values = [_aqi_value(rule, x, _hour(now)) for x in stations.values()]
    return max((v for v in values if v is not None), default=None)


def _aqi_value(rule: AqiRule, data: dict[str, Any], now_hour: datetime) -> int | None:
    """The AQI over complete hours before `now_hour` (NowCast or 24-hour), max of PM2.5/PM10."""
    best: int | None = None
    for metric in rule.metrics():
        sums: dict[str, list[float]] = data.get(metric, {})
        hourly: list[float | None] = []
        for i in range(1, 25 if rule.averaging == "24h" else 13):
            cell = sums.get((now_hour - timedelta(hours=i)).isoformat())
            hourly.append(None if not cell else cell[0] / cell[1])
        if rule.averaging == "24h":
            present = [c for c in hourly if c is not None]
            # EPA: a 24-hour average needs at least 75% of the hours (18 of 24).
            conc = _truncate(metric, sum(present) / len(present)) if len(present) >= 18 else None
        else:
            conc = nowcast(hourly, metric)
        if conc is not None:
            idx = aqi(metric, conc)
            best = idx if best is None else max(best, idx)
    return best


# -- the lifecycle ----------------------------------------------------------------------


def _advance(
    rule: Rule,
    subject: str,
    st: RuleState,
    desired: int,
    ctx: _Ctx,
    value: float,
    threshold: float,
    out: Evaluation,
    category: str = "",
    *,
    min_readings: int | None = None,
    trigger: tuple[datetime, float] | None = None,
) -> None:
    """Turn a desired stage into at most one transition (see the module docstring).

    Per-area rules confirm a stage per device before they ask for it (`_area_stage`), so
    they pass `min_readings=1` and the `trigger` (the supporting device's crossing)."""
    stages = rule.stages()
    at = ctx.at
    need_readings = rule.min_readings if min_readings is None else min_readings

    def emit(
        kind: TransitionKind, new: int, prev: int, trigger: tuple[datetime, float] | None
    ) -> None:
        assert st.alert_id is not None and st.started_at is not None
        # An alert never ends before it starts: a resolution confirmed by an older reading
        # (an area's devices interleave, a device uploads its buffer) ends when it started.
        when = max(at, st.started_at)
        out.transitions.append(
            Transition(
                kind=kind,
                alert_id=st.alert_id,
                rule=rule,
                device_id=ctx.device_id,
                area=ctx.area,
                device_kind=ctx.device_kind,
                value=value,
                at=when,
                severity=stages[(prev if kind == "resolved" else new) - 1],
                previous_severity=None if kind in ("firing", "resolved") else stages[prev - 1],
                threshold=threshold,
                started_at=st.started_at,
                category=category,
                trigger_value=None if trigger is None else trigger[1],
                trigger_at=None if trigger is None else min(trigger[0], when),
                status="Exercise" if ctx.simulated else rule.status,
            )
        )

    if desired > st.stage:
        st.low_since, st.low_max, st.low_value = None, 0, None
        if ctx.stale:
            return  # stale readings never open or escalate
        if st.pend_since is None:
            st.pend_since, st.pend_count, st.pend_recent, st.pend_trig = at, 0, [], {}
        st.pend_count += 1
        st.pend_recent = [*st.pend_recent, desired][-need_readings:]
        crossed = (at, value) if trigger is None else trigger
        for k in range(st.stage + 1, desired + 1):
            st.pend_trig.setdefault(str(k), [crossed[0].isoformat(), crossed[1]])
        if ctx.suspect and st.pend_count == 1:
            return  # a suspect value may confirm, never start
        # Persistence: `min_readings` readings asked for a higher stage (the stage opened
        # is the lowest of them, so no single reading sets the severity), and `for` of
        # reading time before an alert opens.
        need = rule.for_ if st.stage == 0 else timedelta(0)
        if st.pend_count < need_readings or at - st.pend_since < need:
            return
        prev, new = st.stage, min(st.pend_recent)
        raw = st.pend_trig.get(str(new))
        trigger = (datetime.fromisoformat(raw[0]), float(raw[1])) if raw else (at, value)
        st.stage, st.pend_since, st.pend_count, st.pend_recent, st.pend_trig = new, None, 0, [], {}
        if prev == 0:
            st.alert_id = alert_id_for(rule.id, subject, at)
            st.started_at = at
            emit("firing", new, 0, trigger)
        else:
            emit("escalated", new, prev, trigger)
    elif desired < st.stage:
        st.pend_since, st.pend_count, st.pend_recent, st.pend_trig = None, 0, [], {}
        if st.low_since is None:
            st.low_since, st.low_max, st.low_value = at, desired, value
        st.low_max = max(st.low_max, desired)
        if at - st.low_since < rule.hold:
            return
        prev, new = st.stage, st.low_max
        trigger = (st.low_since, st.low_value if st.low_value is not None else value)
        st.low_since, st.low_max, st.low_value = None, 0, None
        st.stage = new
        if new == 0:
            emit("resolved", prev, prev, trigger)
            st.alert_id, st.started_at = None, None
        else:
            emit("deescalated", new, prev, trigger)
    else:
        st.pend_since, st.pend_count, st.pend_recent, st.pend_trig = None, 0, [], {}
        st.low_since, st.low_max, st.low_value = None, 0, None


# -- evaluation -------------------------------------------------------------------------


def _flag(flags: Mapping[tuple[str, str, datetime], int], r: Reading, metric: str) -> int:
    return flags.get((r.device_id, metric, r.time), 1)


def _evaluate_rule(
    rule: Rule,
    st: RuleState,
    subject: str,
    r: Reading,
    ctx: _Ctx,
    flags: Mapping[tuple[str, str, datetime], int],
    out: Evaluation,
) -> None:
    t = r.time
    if isinstance(rule, OfflineRule):
        after_min = rule.after / timedelta(minutes=1)
        seen = _dt(st.data.get("last"))
        # Heard from now, in the stream's reading time: a buffered upload (old readings
        # arriving late) proves the device is back now, not when its readings were taken.
        # A reading held as clock-skewed proves the device alive at the stream's time.
        heard = ctx.head or t if ctx.skewed else max(t, ctx.head or t)
        # Its parked readings come back when the stream catches up: no silence before them.
        parked_until = _dt(st.data.get("parked"))
        if ctx.skewed:
            st.data["parked"] = max(t, parked_until or t).isoformat()
        elif parked_until is not None and t >= parked_until:
            del st.data["parked"]
        if (
            st.stage == 0
            and seen is not None
            and t - seen >= rule.after
            and not ctx.stale
            and not ctx.skewed
            and (parked_until is None or t > parked_until)
        ):
            # A silence in the device's own reading times that no batch-end `tick` saw:
            # played fast, one batch holds the whole gap. Opened and closed here, so
            # offline detection does not depend on batch size or playback speed.
            gap = round((t - seen) / timedelta(minutes=1), 1)
            ctx.at = seen + rule.after
            _advance(rule, subject, st, 1, ctx, gap, after_min, out)
        ctx.at = heard if st.stage > 0 else t
        st.data["last"] = max(heard, seen or heard).isoformat()
        _advance(rule, subject, st, 0, ctx, 0.0, after_min, out)
        return
    if isinstance(rule, StuckRule):
        v = r.metrics[rule.metric]
        d = st.data
        lo, hi = min(d.get("min", v), v), max(d.get("max", v), v)
        if "start" not in d or hi - lo >= rule.tolerance:
            d.update(start=t.isoformat(), min=v, max=v)
        else:
            d.update(min=lo, max=hi)
        held = t - datetime.fromisoformat(d["start"])
        desired = 1 if held >= rule.after else 0
        _advance(rule, subject, st, desired, ctx, v, rule.after / timedelta(minutes=1), out)
        return
    if isinstance(rule, AqiRule):
        now_hour = _hour(t)
        # Hourly means per station: the subject's own data, or for an area's alert the
        # station's entry under "dev" (rules.AqiRule, `per: area`).
        area_alert = ctx.device_id is None
        data = st.data.setdefault("dev", {}).setdefault(r.device_id, {}) if area_alert else st.data
        for metric in rule.metrics():
            if metric in r.metrics and _flag(flags, r, metric) < FAIL:
                cells = data.setdefault(metric, {})
                cell = cells.setdefault(now_hour.isoformat(), [0.0, 0])
                cell[0] += r.metrics[metric]
                cell[1] += 1
                oldest = now_hour - timedelta(hours=25)
                for h in [h for h in cells if datetime.fromisoformat(h) < oldest]:
                    del cells[h]
        index = _area_aqi(rule, st, r, ctx) if area_alert else _aqi_value(rule, st.data, now_hour)
        if index is None:
            return
        desired = _aqi_stage(rule, index, st.stage)
        cat = AQI_CATEGORIES[aqi_category(index)]
        first = AQI_CATEGORIES.index(rule.alert_from)
        lvl = max(desired, st.stage, 1)
        _advance(
            rule, subject, st, desired, ctx, float(index), float(_AQI_BANDS[first + lvl - 1][0]),
            out, category=cat,
        )  # fmt: skip
        return
    if isinstance(rule, CombinedRule):
        last: dict[str, str] = st.data.setdefault("last", {})
        prev: dict[str, list[list[Any]]] = st.data.setdefault("rise", {})
        rain: dict[str, list[list[Any]]] = st.data.setdefault("rain", {})
        sims: dict[str, bool] = st.data.setdefault("sim", {})
        hit_value: float | None = None
        for i, c in enumerate(rule.conditions):
            # Rain accumulates only readings the checks pass: a suspect intensity (a gauge
            # at the end of its range reads 495 mm/h: 41 mm in one 5-minute interval) is
            # left out and the next good reading stands for the interval (rain_mm). Other
            # conditions skip only failed values: a fast real rise may be flagged suspect.
            doubt = SUSPECT if c.accumulated_mm is not None else FAIL
            if c.kind != r.kind or c.metric not in r.metrics:
                continue
            if _flag(flags, r, c.metric) >= doubt:
                continue
            v = r.metrics[c.metric]
            ok = False
            if c.accumulated_mm is not None and c.over is not None:
                pkey = f"{r.device_id}|{c.metric}|{i}"
                fallen = rain.setdefault(pkey, [])
                # A reading the quality checks doubted since it was counted (a spike's verdict
                # comes with the next reading: the evaluator's reflags are in `flags`) did not
                # rain: it leaves the accumulation, and the condition it alone met is unmet.
                failed = {
                    p[0]
                    for p in fallen
                    if flags.get((r.device_id, c.metric, datetime.fromisoformat(p[0])), 1)
                    >= SUSPECT
                }
                if failed:
                    fallen[:] = [p for p in fallen if p[0] not in failed]
                    if last.get(str(i)) in failed:
                        del last[str(i)]
                if not fallen or t > datetime.fromisoformat(fallen[-1][0]):
                    fallen.append([t.isoformat(), v])
                while len(fallen) > 1 and datetime.fromisoformat(fallen[1][0]) <= t - c.over:
                    fallen.pop(0)  # keep one point at or before the period's start
                v = rain_mm(fallen, t, c.over)
                ok = v >= c.accumulated_mm
            elif c.above is not None:
                ok = v >= c.above
            elif c.below is not None:
                ok = v <= c.below
            else:
                # The rise over at least `rise_over` (rules.Condition says why): from the
                # newest of this device's points at or before t - rise_over.
                pts = prev.setdefault(f"{r.device_id}|{c.metric}", [])
                if pts and t <= datetime.fromisoformat(pts[-1][0]):
                    continue  # a replayed or older reading: already counted
                rise = _rise_per_hour(pts, t, v, c.rise_over, c.rise_over)
                ok = rise is not None and rise >= c.level
            if i == 0:
                # The title's value is the first condition's (its unit is the rule's).
                st.data["value0"] = v
            if ok:
                last[str(i)] = t.isoformat()
                sims[str(i)] = ctx.simulated
                hit_value = v if hit_value is None else hit_value
        # The area's clock is its newest reading time: devices of one area sit on different
        # partitions, so their readings interleave out of time order.
        now = max(t, _dt(st.data.get("now")) or t)
        st.data["now"] = now.isoformat()
        ctx.at = now
        since = now - rule.window
        met = all(
            str(i) in last and datetime.fromisoformat(last[str(i)]) >= since
            for i in range(len(rule.conditions))
        )
        value = float(st.data.get("value0", hit_value if hit_value is not None else 0.0))
        # An area's alert is an exercise when a simulated device met one of its conditions.
        ctx.simulated = any(sims.get(str(i), False) for i in range(len(rule.conditions)))
        _advance(rule, subject, st, 1 if met else 0, ctx, value, rule.conditions[0].level, out)
        return
    # Single-metric rules: a FAIL value is not evaluated.
    metric = rule.metrics()[0]
    v = r.metrics[metric]
    if ctx.device_id is None and isinstance(rule, LevelsRule | RateRule):
        _area_stage(rule, st, subject, r, v, ctx, out)
        return
    if isinstance(rule, ThresholdRule):
        on = rule.breached(v) if st.stage == 0 else not rule.cleared(v)
        _advance(rule, subject, st, int(on), ctx, v, rule.threshold, out)
    elif isinstance(rule, LevelsRule):
        table = rule.table(ctx.area)
        if table is None:
            return
        desired = staged(v, table, st.stage, rule.clear_margin)
        if rule.corroborate is not None and desired > st.stage and ctx.peers is not None:
            desired = _corroborated(rule, table, st.stage, desired, ctx, t)
        lvl = max(desired, st.stage, 1)
        _advance(rule, subject, st, desired, ctx, v, table[lvl - 1], out)
    elif isinstance(rule, RateRule):
        rate = _rate(rule, st.data.setdefault("pts", []), t, v)
        on = rate >= rule.rate_per_hour if st.stage == 0 else rate >= rule.clear_rate
        _advance(rule, subject, st, int(on), ctx, rate, rule.rate_per_hour, out)


def _corroborated(
    rule: LevelsRule, table: Sequence[float], stage: int, desired: int, ctx: _Ctx, t: datetime
) -> int:
    """The highest stage up to `desired` that the area's other recent devices do not
    contradict (LevelsRule.corroborate); `stage` when they contradict every step up."""
    assert rule.corroborate is not None and ctx.peers is not None
    since = t - rule.corroborate.window
    others = [
        float(v)
        for device, (at, v) in ctx.peers.items()
        if device != ctx.device_id and since <= datetime.fromisoformat(at) <= t
    ]
    if not others:
        return desired  # nobody else reports: the gauge is judged alone
    best = max(others)
    allowed = stage
    for k in range(stage + 1, desired + 1):
        if best >= table[k - 1] - rule.corroborate.tolerance:
            allowed = k
    return allowed


def _per_area(rule: Rule, area: str | None) -> bool:
    """Whether `rule` keeps one alert per area (subject `area:<id>`) for this device."""
    if isinstance(rule, CombinedRule):
        return True
    return (
        isinstance(rule, LevelsRule | RateRule | AqiRule)
        and rule.per == "area"
        and area is not None
    )


def _rise_per_hour(
    pts: list[list[Any]], t: datetime, v: float, window: timedelta, min_span: timedelta
) -> float | None:
    """One device's rise per hour over `window`, from its `[time, value]` points (updated
    in place: one point at or before the window's start is kept); None until `min_span`
    is covered, and after a gap of two windows (measured afresh from there)."""
    pts.append([t.isoformat(), v])
    cutoff = t - window
    while len(pts) > 2 and datetime.fromisoformat(pts[1][0]) <= cutoff:
        pts.pop(0)
    t0, v0 = datetime.fromisoformat(pts[0][0]), float(pts[0][1])
    span = t - t0
    if span > window * 2:
        del pts[:-1]  # a gap: start the window again
        return None
    if span < min_span:
        return None
    return (v - v0) / (span / timedelta(hours=1))


def _rate(rule: RateRule, pts: list[list[Any]], t: datetime, v: float) -> float:
    """The rate of `rule`'s metric over its window; 0 until half a window is covered."""
    rise = _rise_per_hour(pts, t, v, rule.window, rule.window / 2)
    if rise is None:
        return 0.0
    return round(-rise if rule.direction == "falling" else rise, 4)


# A per-area rule without `corroborate` counts the devices that reported this recently.
AREA_RECENT = timedelta(minutes=30)


def _area_stage(
    rule: LevelsRule | RateRule,
    st: RuleState,
    subject: str,
    r: Reading,
    v: float,
    ctx: _Ctx,
    out: Evaluation,
) -> None:
    """One reading of a per-area rule (`per: area`): the area's stage is the highest stage
    one of its devices supports (rules.LevelsRule says when a device does).

    `st.data["dev"]` holds per device its latest reading (time, value: the level, or for a
    rate rule the rate), whether that was suspect, the stages its last `min_readings`
    readings asked for (with their suspect flags) and per stage the first reading of its
    current run at or above the stage (the trigger when the area opens or escalates there).
    """
    t, device = r.time, r.device_id
    table: tuple[float, ...] | None = None
    if isinstance(rule, LevelsRule):
        table = rule.table(ctx.area)
        if table is None:
            return
        value = v
    else:
        pts: list[list[Any]] = st.data.setdefault("pts", {}).setdefault(device, [])
        value = _rate(rule, pts, t, v)

    def stage_of(x: float, cur: int) -> int:
        if table is not None:
            return staged(x, table, cur, rule.clear_margin)  # type: ignore[union-attr]
        assert isinstance(rule, RateRule)
        return int(x >= rule.rate_per_hour if cur == 0 else x >= rule.clear_rate)

    devs: dict[str, dict[str, Any]] = st.data.setdefault("dev", {})
    me = devs.setdefault(device, {"asks": [], "trig": {}})
    asked = stage_of(value, 0)  # what this reading reaches, without hysteresis
    if "at" in me and not me["sus"]:
        if table is None:
            me["prev_rate"] = me["v"]
        if "prev" in me:
            me["prev2"] = me["prev"]  # projects `prev` forward (_level_at) for a lone gauge
        me["prev"] = [me["at"], me["v"]]
    me.update(at=t.isoformat(), v=value, sus=ctx.suspect)
    me["asks"] = [*me["asks"], [asked, ctx.suspect]][-rule.min_readings :]
    trig: dict[str, list[Any]] = me["trig"]
    for broken in [k for k in trig if int(k) > asked]:
        del trig[broken]  # the run at or above that stage is broken
    for k in range(1, asked + 1):
        trig.setdefault(str(k), [t.isoformat(), value])
    # The area's clock is its newest reading time (its devices' readings interleave).
    now = max(t, _dt(st.data.get("now")) or t)
    st.data["now"] = now.isoformat()
    ctx.at = now
    corro = rule.corroborate if isinstance(rule, LevelsRule) else None
    since = now - (corro.window if corro is not None else AREA_RECENT)
    if isinstance(rule, RateRule):
        since = now - rule.window
    recent = {d: x for d, x in devs.items() if datetime.fromisoformat(x["at"]) >= since}
    for d in [d for d in devs if d not in recent]:
        del devs[d]  # silent past the window: its old readings speak for nothing now

    def support(d: str) -> int:
        x = recent[d]
        asks = x["asks"]
        persisted = (
            min(a[0] for a in asks) if len(asks) >= rule.min_readings and not asks[0][1] else 0
        )
        if table is None:
            # A rate: the device's previous reading already had the river rising (at the
            # rule's clear rate or more) and this one passed the quality checks: the rise
            # goes on, it is not one sample; the alert opens without waiting another
            # reporting interval (5 minutes at field cadence). From a still river it waits.
            assert isinstance(rule, RateRule)
            before = x.get("prev_rate")
            if x["sus"] or before is None or float(before) < rule.clear_rate:
                return persisted
            return max(persisted, stage_of(float(x["v"]), 0))
        if corro is None:
            return persisted
        mine_at = datetime.fromisoformat(x["at"])
        others = [
            _level_at(o, mine_at)
            for e, o in recent.items()
            if e != d and not o["sus"] and _heard_lately(o, mine_at)
        ]
        if not others:
            # Nobody else reports: the device is judged alone, and its own previous
            # reading corroborates the crossing as a neighbour's would: when it, carried
            # forward by the rise it was already on (_level_at, from the reading before
            # it), comes within the tolerance of the level, and the step to this reading
            # passed the quality checks (the rate-of-change test: a smooth rise, not a
            # spike). At a 5-minute cadence a flash flood climbs 0.8 m between readings;
            # a gauge already rising 0.35 m a step corroborates it, a flat one (a spike
            # from far below) waits for the next reading (`min_readings`).
            prev = x.get("prev")
            if x["sus"] or prev is None or mine_at - datetime.fromisoformat(prev[0]) > corro.window:
                return persisted
            own_before = {"at": prev[0], "v": prev[1], "prev": x.get("prev2")}
            projected = _level_at(own_before, mine_at)
            if float(x["v"]) - projected > corro.tolerance:
                # Further above its own projection than a neighbour may differ: a jump
                # from far below (a spike the quality checks could not judge yet: their
                # window had nothing before it), not a rise it was on. Storm at 10 s: a
                # 4.38 m spike on a 1.38 m river raised Mittapheap's warning.
                return persisted
            own = sum(1 for lv in table if projected >= lv - corro.tolerance)
            return max(persisted, min(stage_of(float(x["v"]), 0), own))
        best = max(others)
        allowed = sum(1 for lv in table if best >= lv - corro.tolerance)
        fast = 0 if x["sus"] else stage_of(float(x["v"]), 0)
        return min(max(persisted, fast), allowed)

    supports = {d: support(d) for d in recent}
    up = max(supports.values(), default=0)
    trigger: tuple[datetime, float] | None = None
    if up > st.stage:
        desired = up
        # the supporting device whose run crossed the new stage first
        firsts = [recent[d]["trig"][str(up)] for d, s in supports.items() if s >= up]
        first = min(firsts, key=lambda p: str(p[0]))
        trigger = (datetime.fromisoformat(first[0]), float(first[1]))
    else:
        held = max((stage_of(float(x["v"]), st.stage) for x in recent.values()), default=0)
        desired = min(held, st.stage)
    lvl = max(desired, st.stage, 1)
    threshold = table[lvl - 1] if table is not None else rule.rate_per_hour  # type: ignore[union-attr]
    ctx.suspect = False  # judged per device above: a suspect reading may confirm, never start
    _advance(
        rule, subject, st, desired, ctx, value, threshold, out,
        min_readings=1, trigger=trigger,
    )  # fmt: skip


def _heard_lately(dev: Mapping[str, Any], when: datetime) -> bool:
    """Whether a neighbour's latest reading can speak for `when`: it is at most two of its
    own reporting intervals (plus a minute) older. Older means its partition is read behind
    this one (the alerts consumer reads partitions minutes apart in reading time when it
    catches up) or it fell silent: its old, lower level would hold back a real rise (a
    flash flood at 10 s came up to 11 minutes late), so it neither corroborates nor
    contradicts; a gauge read every 5 minutes, 4 minutes ago, still does."""
    at = datetime.fromisoformat(dev["at"])
    prev = dev.get("prev")
    if prev is None or when <= at:
        return True
    step = at - datetime.fromisoformat(prev[0])
    return step <= timedelta(0) or when - at <= 2 * step + timedelta(minutes=1)


def _level_at(dev: Mapping[str, Any], when: datetime) -> float:
    """A device's level as its own readings project it to `when`: its latest value, or,
    when it was rising and `when` is later, that rise carried on for at most one of its
    own reporting intervals. Gauges of one area read a few minutes apart: in a flash flood
    (1.6 m in 15 minutes) a neighbour read 4 minutes earlier is 0.4 m lower and still
    rising, and it then corroborates rather than contradicts; a flat neighbour (a drifting
    or spiking gauge's) projects flat."""
    at, v = datetime.fromisoformat(dev["at"]), float(dev["v"])
    prev = dev.get("prev")
    if prev is None or when <= at:
        return v
    p_at, p_v = datetime.fromisoformat(prev[0]), float(prev[1])
    step = at - p_at
    if step <= timedelta(0) or v <= p_v:
        return v
    return v + (v - p_v) * (min(when - at, step) / step)


def _relevant(rule: Rule, r: Reading) -> bool:
    if isinstance(rule, OfflineRule):
        return True
    if isinstance(rule, CombinedRule):
        return any(c.kind == r.kind and c.metric in r.metrics for c in rule.conditions)
    return any(m in r.metrics for m in rule.metrics())


# Readings held as clock-skewed and kept for evaluation, per stream (see "Clock skew").
PARKED_MAX = 1000
Parked = dict[str, list[tuple[Reading, dict[tuple[str, str, datetime], int]]]]


def evaluate(
    rules: RuleSet,
    state: dict[Key, RuleState],
    readings: Sequence[Reading],
    *,
    streams: Sequence[str] | None = None,
    heads: dict[str, datetime] | None = None,
    areas: Mapping[str, str | None] | None = None,
    flags: Mapping[tuple[str, str, datetime], int] | None = None,
    simulated: Collection[str] = frozenset(),
    ahead: dict[str, dict[str, datetime]] | None = None,
    parked: Parked | None = None,
) -> Evaluation:
    """Evaluate a batch in order, updating `state`, `heads` and `ahead` in place.

    Args:
        streams: per reading, the stream (Kafka partition) it came on; one stream if None.
        heads: the newest reading time per stream, carried between batches (a reading
            held as clock-skewed does not advance it).
        ahead: per stream, the devices held as clock-skewed and their newest reading
            time, carried between batches (memory only; see "Clock skew" above).
        parked: per stream, readings held as clock-skewed with their flags, evaluated
            when the head catches up with them; carried between batches (memory only).
        areas: device id -> registry area.
        flags: QARTOD flag per (device, metric, time); a value missing here passes. Give
            the final verdicts of earlier readings too (the quality evaluator's `reflags`):
            rules with `confirm: final` act on them.
        simulated: ids of simulated devices (the registry's `simulated` flag): their
            transitions carry CAP status `Exercise` whatever the rule says.
    """
    out = Evaluation()
    heads = {} if heads is None else heads
    ahead = {} if ahead is None else ahead
    parked = {} if parked is None else parked
    areas = areas or {}
    flags = dict(flags or {})
    stream_of = [streams[i] if streams is not None else "0" for i in range(len(readings))]
    for stream in set(stream_of) - set(heads):
        # A new stream's first head: the oldest of this batch's reading times on it (the
        # readings then advance it), so one skewed device among them does not set it.
        first = min(r.time for r, s in zip(readings, stream_of, strict=True) if s == stream)
        heads[stream] = out.heads[stream] = first
    # Per stream, this batch's (device, reading time): who else reports near the head.
    by_stream: dict[str, list[tuple[str, datetime]]] = {}
    for x, s_ in zip(readings, stream_of, strict=True):
        by_stream.setdefault(s_, []).append((x.device_id, x.time))
    # (reading, stream, unparked): a reading back from parking is evaluated but never moves
    # the head; the stream's other devices do. Else a clock running hours ahead would walk
    # its stream forward clock_skew at a time, each parked reading releasing the next, and
    # every other device of the stream would look silent (offline alerts in bursts).
    queue = deque((r, s, False) for r, s in zip(readings, stream_of, strict=True))
    while queue:
        r, stream, unparked = queue.popleft()
        head = heads[stream]
        skewed = False
        if r.time > head and not unparked:
            new_head: datetime | None = r.time
            if r.time - head > rules.clock_skew:
                batch = by_stream.get(stream, [])
                new_head = _skewed_head(state, ahead.setdefault(stream, {}), stream, r, head,
                                        rules.clock_skew, batch)  # fmt: skip
                skewed = new_head is None or r.time - new_head > rules.clock_skew
            if new_head is not None and new_head > head:
                heads[stream] = out.heads[stream] = head = new_head
                waiting = ahead.get(stream, {})
                for d in [d for d, t in waiting.items() if t <= head]:
                    del waiting[d]
                # Parked readings the head has come within clock_skew of: evaluated next,
                # in time order, before the rest of the batch.
                due: list[tuple[Reading, dict[tuple[str, str, datetime], int]]] = []
                keep: list[tuple[Reading, dict[tuple[str, str, datetime], int]]] = []
                for p in parked.get(stream, []):
                    (due if p[0].time - head <= rules.clock_skew else keep).append(p)
                if due:
                    parked[stream] = keep
                    for pr, pflags in sorted(due, key=lambda p: p[0].time, reverse=True):
                        flags.update(pflags)
                        queue.appendleft((pr, stream, True))
        out.skewed += skewed
        if skewed:
            stash = parked.setdefault(stream, [])
            own = {k: v for k, v in flags.items() if k[0] == r.device_id and k[2] == r.time}
            stash.append((r, own))
            if len(stash) > PARKED_MAX:
                del stash[0]
                out.dropped += 1
        stale = r.time < head - rules.stale_after
        out.stale += stale
        area = areas.get(r.device_id)
        for rule in rules.rules:
            if not rule.in_scope(r.device_id, r.kind, area) or not _relevant(rule, r):
                continue
            per_area = _per_area(rule, area)
            if skewed and not isinstance(rule, OfflineRule):
                continue  # parked: evaluated when the head catches up with it
            subject = f"area:{area}" if per_area else r.device_id
            key = (rule.id, subject)
            st = state.setdefault(key, RuleState())
            if per_area:
                # Per device cursors: an area hears from many devices.
                cursors: dict[str, str] = st.data.setdefault("cursors", {})
                seen = cursors.get(r.device_id)
                if seen is not None and r.time <= datetime.fromisoformat(seen):
                    continue
                cursors[r.device_id] = r.time.isoformat()
                st.cursor = max(st.cursor or r.time, r.time)
            else:
                if st.cursor is not None and r.time <= st.cursor:
                    continue
                if not skewed:  # a parked reading comes back through here when replayed
                    st.cursor = r.time
            out.changed[key] = st
            worst = max((_flag(flags, r, m) for m in rule.metrics() if m in r.metrics), default=1)
            at, judged, judged_stale = r.time, r, stale
            if rule.confirm == "final":
                # Act on the previous reading of this series, whose verdict the new one has
                # just made final (the centred spike test needs the right neighbour).
                # (an area's alert holds one reading per device)
                held_key = f"held:{r.device_id}" if per_area else "held"
                held = st.data.get(held_key)
                mine = {m: r.metrics[m] for m in rule.metrics() if m in r.metrics}
                st.data[held_key] = [r.time.isoformat(), worst, mine]
                if held is None:
                    continue
                at = datetime.fromisoformat(held[0])
                judged = r.model_copy(update={"time": at, "metrics": held[2]})
                worst = max(
                    [int(held[1])]
                    + [_flag(flags, judged, m) for m in rule.metrics() if m in judged.metrics]
                )
                judged_stale = at < head - rules.stale_after
            if worst >= FAIL and not isinstance(
                rule, OfflineRule | StuckRule | AqiRule | CombinedRule
            ):
                out.skipped_quality += 1
                continue
            if isinstance(rule, OfflineRule):
                st.data.update(stream=stream, kind=r.kind)
            peers = None
            if (
                isinstance(rule, LevelsRule)
                and rule.corroborate is not None
                and area
                and not per_area
            ):
                # The area's devices' latest values, shared state under `area:<id>`.
                shared = state.setdefault((rule.id, f"area:{area}"), RuleState())
                peers = shared.data.setdefault("peers", {})
                metric = rule.metrics()[0]
                if _flag(flags, judged, metric) < SUSPECT:
                    seen = peers.get(r.device_id)
                    if seen is None or datetime.fromisoformat(seen[0]) <= at:
                        peers[r.device_id] = [at.isoformat(), judged.metrics[metric]]
                shared.cursor = max(shared.cursor or at, at)
                out.changed[(rule.id, f"area:{area}")] = shared
            ctx = _Ctx(
                at=at,
                stale=judged_stale or skewed,
                suspect=worst == SUSPECT and not isinstance(rule, OfflineRule | StuckRule),
                device_id=None if per_area else r.device_id,
                area=area,
                device_kind=r.kind,
                simulated=r.device_id in simulated,
                head=head,
                skewed=skewed,
                peers=peers,
            )
            _evaluate_rule(rule, st, subject, judged, ctx, flags, out)
    out.transitions.extend(
        tick(rules, state, heads, areas=areas, simulated=simulated, ahead=ahead).transitions
    )
    for t in out.transitions:
        subject = f"area:{t.area}" if t.device_id is None else t.device_id
        out.changed[(t.rule.id, subject)] = state[(t.rule.id, subject)]
    return out


def _skewed_head(
    state: Mapping[Key, RuleState],
    held: dict[str, datetime],
    stream: str,
    r: Reading,
    head: datetime,
    skew: timedelta,
    batch: Sequence[tuple[str, datetime]] = (),
) -> datetime | None:
    """Where a reading more than `skew` ahead of its stream's head moves the head: None
    (held as clock-skewed) while another device of the stream reported within `skew` of
    the head (per the offline rules' state: when each device was last heard, on which
    stream, or this batch's readings on it) and no second device is held ahead; else the
    older of the two newest held devices' times, or the reading's own when no other device
    reports."""
    held[r.device_id] = max(r.time, held.get(r.device_id, r.time))
    others = [t for d, t in held.items() if d != r.device_id]
    if others:
        return min(r.time, max(others))  # a second device confirms the jump
    if any(d != r.device_id and abs(t - head) <= skew for d, t in batch):
        return None  # another device of the stream reads near the head in this very batch
    for (_rule, subject), st in state.items():
        data = st.data
        if subject == r.device_id or data.get("stream") != stream or "last" not in data:
            continue
        if datetime.fromisoformat(data["last"]) >= head - skew:
            return None  # the stream's other devices report: this one's clock is off
    return r.time  # nobody else on the stream reports: its own time is the stream's


def live_heads(
    heads: Mapping[str, datetime],
    seen: Mapping[str, datetime],
    now: datetime,
    lag: timedelta,
) -> dict[str, datetime]:
    """The offline clock per stream: its head, advanced by the wall clock when live.

    Args:
        heads: the newest reading time per stream.
        seen: per stream, the wall-clock time its head last advanced (unknown: not live).
        now: the wall clock.
        lag: a stream is live when its head was at most `lag` behind the wall clock when
            it advanced; a live stream's clock is then max(head, now - lag).
    """
    out: dict[str, datetime] = {}
    for stream, head in heads.items():
        arrived = seen.get(stream)
        live = arrived is not None and arrived - head <= lag
        out[stream] = max(head, now - lag) if live else head
    return out


def tick(
    rules: RuleSet,
    state: dict[Key, RuleState],
    heads: Mapping[str, datetime],
    *,
    areas: Mapping[str, str | None] | None = None,
    simulated: Collection[str] = frozenset(),
    ahead: Mapping[str, Mapping[str, datetime]] | None = None,
) -> Evaluation:
    """Offline rules: devices whose newest reading is `after` behind their stream's head.

    `heads` are the streams' reading-time heads (what `evaluate` runs it with) or, for the
    periodic wall-clock check of live data, `live_heads`. An offline alert opens at the
    head it was found at, `after` or more past the device's last reading. A device held
    as clock-skewed on its stream (`ahead`) at most `after` + `clock_skew` ahead of the
    head is reporting (its parked readings come next): it is not offline."""
    out = Evaluation()
    areas = areas or {}
    offline = {r.id: r for r in rules.rules if isinstance(r, OfflineRule)}
    if not offline:
        return out
    for (rule_id, subject), st in state.items():
        rule = offline.get(rule_id)
        if rule is None or st.stage > 0 or "last" not in st.data:
            continue
        stream = st.data.get("stream") or "0"
        head = heads.get(stream)
        held = (ahead or {}).get(stream, {}).get(subject)
        if held is not None and head is not None and held - head <= rule.after + rules.clock_skew:
            # Its readings wait just ahead of a stream that is catching up (parked): it
            # reports. One whose clock runs hours ahead is judged by when it was last heard.
            continue
        last = datetime.fromisoformat(st.data["last"])
        if head is None or head - last < rule.after:
            continue
        ctx = _Ctx(
            at=head,
            stale=False,
            suspect=False,
            device_id=subject,
            area=areas.get(subject),
            device_kind=st.data.get("kind") or rule.kind or "",
            simulated=subject in simulated,
        )
        silent = round((head - last) / timedelta(minutes=1), 1)
        _advance(rule, subject, st, 1, ctx, silent, rule.after / timedelta(minutes=1), out)
        out.changed[(rule_id, subject)] = st
    return out
