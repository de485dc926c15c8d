"""Scoring what CityWatch raised against the simulator's ground truth, and the hard rules. Pure.

Quality flags are scored by `services.evaluate.flags.score` (one scorer for the stored
flags and for the offline replay); this module scores alerts and checks issue 14's hard
targets on both.

Alerts: each upward transition (`firing`, `escalated`) read from `alert_events`, walked in
reading-time order per rule and area, is exactly one of
- matched: it answers an expected alert (same rule, area, severity; device for device
  alerts) within `tolerance` of the scenario's crossing; the delay is in scenario time. An
  alert that opens straight at a higher level also answers the lower levels crossed before;
- duplicate: another alert of the same rule and area is already open at that level or
  above (two gauges of one area each opening their own alert);

Device alerts (`device_rules`: offline, stuck, litter) are about one device, not an area:
for them "the same" means the same rule and device, so two devices of one area offline at
once are two matched alerts, never a duplicate, and a flap is that device's alert again.
- flap: the area already had that level earlier and the scenario never fell back below it
  in between (resolved too early, raised again);
- false: nothing in the scenario asked for it (counted by severity).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.evaluate.flags import QualityScore

__all__ = [
    "SEVERITY_ORDER",
    "AlertScore",
    "Expected",
    "Raised",
    "hard_rule_breaches",
    "score_alerts",
]

# How far ahead of the modelled crossing a flood alert may come (see hard_rule_breaches).
EARLY_LEAD = timedelta(minutes=15)

SEVERITY_ORDER = ("advisory", "watch", "warning", "danger")


# -- alerts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    """An alert the scenario's truth asks for: rule, area, severity, when (scenario time)."""

    rule: str
    area: str
    severity: str
    at: datetime
    device: str | None = None  # device alerts (offline): which device
    below_at: datetime | None = None  # when the truth fell back below this level
    # Flood levels: when the modelled level stands two gauge-noise deviations above the
    # level, so that a single reading shows it (~98 %). Lateness is measured from here: on a
    # river creeping up 1-2 cm a minute, 1 cm of noise hides a crossing for a minute.
    measurable_at: datetime | None = None


@dataclass(frozen=True)
class Raised:
    """One transition of an alert, as `alert_events` holds it (rule id without run suffix)."""

    alert_id: str
    rule: str
    area: str | None
    device: str | None
    state: str
    severity: str
    at: datetime  # reading time of the transition


@dataclass
class AlertScore:
    expected: list[Expected] = field(default_factory=list)
    matched: list[tuple[Expected, Raised]] = field(default_factory=list)
    false: list[Raised] = field(default_factory=list)
    duplicates: list[Raised] = field(default_factory=list)
    flaps: list[Raised] = field(default_factory=list)
    split: list[tuple[str, str]] = field(default_factory=list)  # (rule, area) not one alert

    @property
    def missed(self) -> list[Expected]:
        got = {id(e) for e, _ in self.matched}
        return [e for e in self.expected if id(e) not in got]

    def delays(self, rule: str | None = None) -> list[timedelta]:
        return [r.at - e.at for e, r in self.matched if rule is None or e.rule == rule]

    def false_by_severity(self) -> Counter[str]:
        return Counter(r.severity for r in self.false)

    def per_rule_area(self) -> dict[tuple[str, str], tuple[int, int, list[timedelta]]]:
        """(rule, area) -> (expected, matched, delays): the table's rows."""
        out: dict[tuple[str, str], tuple[int, int, list[timedelta]]] = {}
        for e in self.expected:
            n, m, d = out.get((e.rule, e.area), (0, 0, []))
            out[(e.rule, e.area)] = (n + 1, m, d)
        for e, r in self.matched:
            n, m, d = out[(e.rule, e.area)]
            out[(e.rule, e.area)] = (n, m + 1, [*d, r.at - e.at])
        return out


def _rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else 0


def score_alerts(
    expected: Iterable[Expected],
    events: Iterable[Raised],
    *,
    tolerance: timedelta = timedelta(hours=1),
    device_rules: Collection[str] = frozenset(),
) -> AlertScore:
    """Match raised transitions to expected alerts (see the module docstring); alerts of
    `device_rules` are scored per device."""
    score = AlertScore(expected=sorted(expected, key=lambda e: e.at))
    # alert id -> (rule, subject, severity rank); the subject is the area, or for device
    # rules the area and device
    open_at: dict[str, tuple[str, str, int]] = {}
    reached: dict[tuple[str, str, int], datetime] = {}  # (rule, subject, rank) -> last raised
    taken: set[int] = set()
    alert_ids: dict[tuple[str, str], set[str]] = {}
    for ev in sorted(events, key=lambda r: r.at):
        area = ev.area or ""
        per_device = ev.rule in device_rules
        subject = f"{area}|{ev.device or ''}" if per_device else area
        rank = _rank(ev.severity)
        if ev.state == "resolved":
            open_at.pop(ev.alert_id, None)
            continue
        if ev.state not in ("firing", "escalated"):
            if ev.state == "deescalated" and ev.alert_id in open_at:
                open_at[ev.alert_id] = (ev.rule, subject, rank)
            continue
        others = [
            s
            for a, (rl, sj, s) in open_at.items()
            if a != ev.alert_id and rl == ev.rule and sj == subject
        ]
        open_at[ev.alert_id] = (ev.rule, subject, rank)
        if any(s >= rank for s in others):
            score.duplicates.append(ev)
            continue
        hits = [
            (i, e)
            for i, e in enumerate(score.expected)
            if i not in taken
            and e.rule == ev.rule
            and e.area == area
            and (e.device is None or e.device == ev.device)
            and (not per_device or e.device == ev.device)
            and _rank(e.severity) <= rank
            and e.at - tolerance <= ev.at <= e.at + tolerance
        ]
        exact = [(i, e) for i, e in hits if _rank(e.severity) == rank]
        if exact:
            # The same level: the nearest crossing; lower levels already passed come along.
            best = min(exact, key=lambda ie: abs(ie[1].at - ev.at))
            chosen = [
                best,
                *((i, e) for i, e in hits if _rank(e.severity) < rank and e.at <= ev.at),
            ]
            for i, e in chosen:
                taken.add(i)
                score.matched.append((e, ev))
            if not per_device:
                alert_ids.setdefault((ev.rule, area), set()).add(ev.alert_id)
        else:
            last = reached.get((ev.rule, subject, rank))
            fell = last is not None and any(
                e.rule == ev.rule
                and e.area == area
                and (not per_device or e.device == ev.device)
                and _rank(e.severity) == rank
                and e.below_at is not None
                and last <= e.below_at <= ev.at
                for e in score.expected
            )
            if last is not None and not fell:
                score.flaps.append(ev)
            else:
                score.false.append(ev)
        reached[(ev.rule, subject, rank)] = ev.at
    score.split = sorted(k for k, ids in alert_ids.items() if len(ids) > 1)
    return score


# -- hard rules (issue 14, "Targets") -------------------------------------------------------------
def hard_rule_breaches(
    scenario: str,
    quality: QualityScore,
    alerts: AlertScore,
    *,
    interval: timedelta,
    flood_rule: str = "flood-level",
) -> list[str]:
    """What breaks the hard targets, one sentence each (empty: all hold)."""
    out: list[str] = []
    if scenario == "normal-day":
        raised = [*alerts.false, *alerts.duplicates, *alerts.flaps, *(r for _, r in alerts.matched)]
        high = [r for r in raised if _rank(r.severity) >= _rank("warning")]
        if high:
            out.append(f"normal day: {len(high)} alerts at warning or above")
        unfounded = [r for r in alerts.false if _rank(r.severity) < _rank("warning")]
        if unfounded:
            out.append(f"normal day: {len(unfounded)} alerts below warning with no true condition")
    if scenario in ("monsoon-storm", "flash-flood"):
        flood = [e for e in alerts.expected if e.rule == flood_rule]
        missed = [e for e in alerts.missed if e.rule == flood_rule]
        if missed:
            out.append(f"{len(missed)} of {len(flood)} expected flood alerts not raised")
        dup = [r for r in alerts.duplicates if r.rule == flood_rule]
        if dup:
            out.append(f"{len(dup)} flood alerts raised twice in one area")
        # Late is a breach past one interval after the crossing a reading can show
        # (`Expected.measurable_at`). Early is judged against EARLY_LEAD: a gauge's
        # measured level (noise ~1 cm) reaches a level minutes before the noiseless model
        # when the river creeps up to it, and that alert rests on measured values at the
        # level; only an alert far ahead of any true crossing is off.
        late = [
            d
            for e, r in alerts.matched
            if e.rule == flood_rule
            for d in [r.at - e.at]
            if r.at - (e.measurable_at or e.at) > interval or d < -EARLY_LEAD
        ]
        if late:
            worst = max(late, key=abs)
            out.append(
                f"{len(late)} flood alerts off their crossing by more than one interval "
                f"({interval}) late or {EARLY_LEAD} early; worst {_minutes(worst)}"
            )
        split = [k for k in alerts.split if k[0] == flood_rule]
        if split:
            out.append(f"{len(split)} areas' flood levels came as separate alerts, not one")
    for m in quality.metrics:
        if m.share > 0.02:
            out.append(f"false flags {m.metric}: {m.share:.1%} of fault-free readings (> 2 %)")
    for fault, unit in (("spike", "values"), ("stuck", "episodes")):
        c = quality.fault(fault, unit)
        if c.labelled and c.share < 0.95:
            out.append(f"{fault} caught {c.share:.0%} of {c.labelled} {unit} (< 95 %)")
    return out


def _minutes(d: timedelta) -> str:
    return f"{d.total_seconds() / 60:+.1f} min"


def median_minutes(delays: list[timedelta]) -> str:
    return _minutes(timedelta(seconds=statistics.median(d.total_seconds() for d in delays)))
