"""Quality flags scored against the simulator's ground truth, offline or on what was stored.

Two halves, both pure:

- `score(rows, labels)` compares each stored flag with the fault labels: per metric, the
  share of fault-free values flagged suspect or fail (false flags); per fault type, the
  share caught. `citywatch evaluate` calls it on the rows the real stack stored; the unit
  tests call it on rows judged here.
- `play(run)` judges a scenario run without a broker: its messages through the adapters
  (`schemas.adapters.decode`) and `QualityEvaluator` in batches, with the database's
  semantics (the first insert of a row wins; a spike verdict only makes a stored flag
  worse), and returns the rows and their labels. `score_scenario` does both for a named
  scenario at a reporting interval, as `citywatch demo` plays it.

What counts as caught (the labels are the simulator's own, per reading: `Message.labels`,
one (reading time, metric, fault) for each fault it put into a value, keyed as the stored
row is, so a reading with two faults or a buffered upload of many readings is exact):

- `spike`: the spiked value is flagged suspect or fail.
- `stuck`: an episode (a device's metric repeating one value for 6-24 readings) is caught
  when any of its values is flagged. An episode whose value is also what the healthy
  sensor reads on both sides of it (a dry rain gauge stuck at 0) is *inert*: there is
  nothing false in the data to catch, so it is counted apart, not as missed. So is an
  episode of one value (cut short by the run's end): a sensor sticks at the value it
  reads, so its first value is true and a single one holds no repeat. So is an episode
  the run's end cuts below the fault's shortest length (`STUCK_MIN_READINGS`, 6): the
  scoring window, not the sensor, ended it, and 2-5 equal values are what the noise of a
  quiet sensor repeats too (the flat-line test's repeat count). An episode on
  a metric with no flat-line test (rain, humidity, litter: their healthy values repeat for
  hours) is counted as unjudged when `score` is told which metrics have one.
- `drift`: per value after the onset (the offset grows from zero, so early values are
  indistinguishable by design) and per device (any value of the drifting metric flagged).
- `out_of_range`: per value, a sensor reading the end of its range (accepted by the
  gateway, so stored), flagged; and per payload, one the gateway must reject (a value
  outside the registry's range) that the adapters did reject (offline only: the stack
  counts its own rejections).
- `low_battery`: the battery value is flagged (a true low value, which QARTOD calls suspect).

`score` takes every stored row, whatever the metric: `citywatch evaluate` hands it the rows
it reads back from the `readings` table, `play` the rows it judged offline, so both report
the same figures by the same rules.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas import Kind, Reading
from schemas.adapters import decode
from services.quality.drift import BucketMeans
from services.quality.drift import judge as judge_drift
from services.quality.qartod import Flag, QualityConfig, QualityEvaluator, worst
from simulators import Message, ScenarioRun, load_scenario
from simulators.faults import STUCK_MIN_READINGS

__all__ = [
    "FaultScore",
    "Labels",
    "MetricScore",
    "QualityScore",
    "ScoredRow",
    "flat_metrics",
    "labels_from_messages",
    "play",
    "score",
    "score_scenario",
]

RowKey = tuple[str, str, datetime]  # (device_id, metric, time), the readings table's key
# A fixed "now" for offline runs: the scenario lies wholly before it, and runs repeat.
OFFLINE_NOW = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
# How often (reading time) the offline player re-runs the drift check: the processor's
# default `processor.drift_refresh_s`, as if it kept pace with the readings.
DRIFT_REFRESH_S = 120.0


@dataclass(frozen=True, slots=True)
class ScoredRow:
    """One stored value and its flag (a row of `readings` plus its device's kind)."""

    device_id: str
    kind: str
    metric: str
    time: datetime
    value: float
    flag: int

    @property
    def key(self) -> RowKey:
        return (self.device_id, self.metric, self.time)


@dataclass
class Labels:
    """Ground truth per row: the value faults it carries; rows absent are fault-free."""

    faults: dict[RowKey, frozenset[str]] = field(default_factory=dict)
    # Payloads the gateway must reject, by the reason the simulator gave them, and how many
    # of each the adapters did reject (filled by `play`; the real stack counts its own).
    must_reject: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, msg: Message) -> None:
        """Take one played message's labels. Only a valid message stores rows (one the
        gateway must reject stores nothing); `must_reject` counts those by reason."""
        if msg.expected_reason:
            self.must_reject[msg.expected_reason] += 1
        if not msg.valid:
            return
        for at, metric, fault in msg.labels:
            key = (msg.device_id, metric, at)
            self.faults[key] = self.faults.get(key, frozenset()) | {fault}


@dataclass(frozen=True)
class MetricScore:
    metric: str  # "kind.metric", e.g. "water.ph"
    fault_free: int
    false_flags: int

    @property
    def share(self) -> float:
        return self.false_flags / self.fault_free if self.fault_free else 0.0


@dataclass(frozen=True)
class FaultScore:
    fault: str
    unit: str  # what is counted: "values", "episodes", "devices" or "payloads"
    labelled: int  # scored cases (inert and unjudged ones left out)
    caught: int
    inert: int = 0
    unjudged: int = 0  # on metrics with no test for this fault (stuck: no flat line)
    cut: int = 0  # stuck: episodes the run's end cut below the fault's shortest length

    @property
    def share(self) -> float:
        return self.caught / self.labelled if self.labelled else 1.0


@dataclass(frozen=True)
class QualityScore:
    metrics: tuple[MetricScore, ...] = ()
    faults: tuple[FaultScore, ...] = ()
    rows: int = 0  # rows scored: every row handed to `score`
    faulty: int = 0  # of them, rows carrying a fault label (the rest are fault-free)

    def metric(self, name: str) -> MetricScore:
        return next(m for m in self.metrics if m.metric == name)

    def fault(self, name: str, unit: str | None = None) -> FaultScore:
        """The first score of fault `name` (in `unit`); none scored: an empty one."""
        found = (f for f in self.faults if f.fault == name and unit in (None, f.unit))
        return next(found, FaultScore(name, unit or "", 0, 0))

    def table(self) -> str:
        """The report as plain text, one line per metric and per fault."""
        lines = [f"{'metric':<28}{'fault-free':>11}{'false flags':>13}"]
        for m in self.metrics:
            lines.append(f"{m.metric:<28}{m.fault_free:>11}{m.share:>12.1%}")
        lines.append(f"{'fault':<28}{'scored':>11}{'caught':>13}  (left out, unit)")
        for f in self.faults:
            lines.append(
                f"{f.fault:<28}{f.labelled:>11}{f.share:>12.1%}  "
                f"({f.inert} inert, {f.unjudged} unjudged, {f.cut} cut short, {f.unit})"
            )
        lines.append(f"rows scored: {self.rows} ({self.faulty} with a fault)")
        return "\n".join(lines)


# -- labels ---------------------------------------------------------------------------------


def labels_from_messages(messages: Iterable[Message]) -> Labels:
    """Labels from the simulator's per-reading `Message.labels` of the messages played."""
    labels = Labels()
    for msg in messages:
        labels.add(msg)
    return labels


# -- scoring --------------------------------------------------------------------------------


def _flagged(flag: int) -> bool:
    return flag in (Flag.SUSPECT, Flag.FAIL)


def score(
    rows: Iterable[ScoredRow], labels: Labels, flat_metrics: Collection[str] | None = None
) -> QualityScore:
    """Compare stored flags with the labels (see the module docstring for the rules).

    `flat_metrics` ("kind.metric") are those with a flat-line test: a stuck episode on any
    other metric is counted as unjudged, not missed (None: every metric is judged).
    """
    fault_free: Counter[str] = Counter()
    false_flags: Counter[str] = Counter()
    series: dict[tuple[str, str], list[ScoredRow]] = defaultdict(list)
    n = faulty = 0
    for row in rows:
        key = row.key
        n += 1
        series[(row.device_id, row.metric)].append(row)
        if key in labels.faults:
            faulty += 1
        else:
            name = f"{row.kind}.{row.metric}"
            fault_free[name] += 1
            false_flags[name] += _flagged(row.flag)

    caught: Counter[tuple[str, str]] = Counter()
    counted: Counter[tuple[str, str]] = Counter()
    inert = unjudged = cut = 0
    drifting: dict[str, bool] = {}
    for (device, metric), values in series.items():
        judged = flat_metrics is None or f"{values[0].kind}.{metric}" in flat_metrics
        values.sort(key=lambda r: r.time)
        start: int | None = None  # index of the open stuck episode's first value
        ends: list[ScoredRow | None] = [*values, None]  # None closes the last episode
        for i, cur in enumerate(ends):
            faults = labels.faults.get(cur.key, frozenset()) if cur is not None else frozenset()
            for f in ("spike", "drift", "out_of_range", "low_battery"):
                if cur is not None and f in faults:
                    counted[(f, "values")] += 1
                    caught[(f, "values")] += _flagged(cur.flag)
            if cur is not None and "drift" in faults:
                drifting[device] = drifting.get(device, False) or _flagged(cur.flag)
            if "stuck" in faults:
                start = i if start is None else start
                continue
            if start is None:
                continue
            episode = values[start:i]
            neighbours = values[start - 1 : start] if start else []
            if cur is not None:
                neighbours.append(cur)
            if len(episode) == 1 or (
                neighbours and all(n.value == episode[-1].value for n in neighbours)
            ):
                inert += 1  # nothing false to catch: the healthy sensor's own value
            elif cur is None and len(episode) < STUCK_MIN_READINGS:
                cut += 1  # the run ended first: 2-5 repeats say nothing the noise cannot
            elif not judged:
                unjudged += 1
            else:
                counted[("stuck", "episodes")] += 1
                caught[("stuck", "episodes")] += any(_flagged(r.flag) for r in episode)
            start = None
    counted[("drift", "devices")] = len(drifting)
    caught[("drift", "devices")] = sum(drifting.values())
    reasons = labels.must_reject
    faults_out = [
        FaultScore(
            f,
            unit,
            counted[(f, unit)],
            caught[(f, unit)],
            inert if f == "stuck" else 0,
            unjudged if f == "stuck" else 0,
            cut if f == "stuck" else 0,
        )
        for f, unit in (
            ("spike", "values"),
            ("stuck", "episodes"),
            ("drift", "values"),
            ("drift", "devices"),
            ("out_of_range", "values"),
            ("low_battery", "values"),
        )
    ]
    faults_out.append(
        FaultScore(
            "out_of_range", "payloads", reasons["out_of_range"], labels.rejected["out_of_range"]
        )
    )
    return QualityScore(
        metrics=tuple(
            MetricScore(name, fault_free[name], false_flags[name]) for name in sorted(fault_free)
        ),
        faults=tuple(faults_out),
        rows=n,
        faulty=faulty,
    )


# -- offline play ---------------------------------------------------------------------------


def play(
    run: ScenarioRun,
    config: QualityConfig,
    *,
    batch: int = 500,
    drift: bool = True,
    drift_refresh_s: float = DRIFT_REFRESH_S,
) -> tuple[list[ScoredRow], Labels]:
    """Judge a `simulators.ScenarioRun`'s readings as the processor would, with no broker.

    Messages are decoded by the gateway's adapters at the scenario time they are sent,
    judged in batches of `batch` readings, and stored with the readings table's rules.
    With `drift`, the drift check (services/quality/drift.py) runs on the bucket means of
    the values stored so far (fail left out, as the processor's query does) every
    `drift_refresh_s` of reading time, with the fleet's areas as the registry holds them,
    and its verdicts apply to the values judged after it, as in the processor.
    """
    evaluator = QualityEvaluator(config)
    limits = config.limits
    buckets = BucketMeans(limits.drift_bucket_s, limits.drift_window_s)
    places: dict[str, tuple[str, Kind]] = {
        p.device_id: (p.area, p.kind) for p in run.device_profiles() if p.area
    }
    drift_at = float("-inf")
    stored: dict[RowKey, int] = {}
    values: dict[RowKey, tuple[str, float]] = {}
    played: list[Message] = []
    pending: list[Reading] = []
    rejected: Counter[str] = Counter()

    def flush() -> None:
        ev = evaluator.evaluate(pending)
        for key, flag in ev.flags.items():
            if key not in stored:
                stored[key] = flag
                if drift and flag != Flag.FAIL:
                    device, metric, at = key
                    buckets.add(device, metric, at.timestamp(), values[key][1])
        for device, metric, at, flag in ev.reflags:
            key = (device, metric, at)
            if key in stored:
                stored[key] = int(worst(Flag(stored[key]), Flag(flag)))
        evaluator.commit(ev)
        pending.clear()
        nonlocal drift_at
        if drift and buckets.newest - drift_at >= drift_refresh_s:
            report = judge_drift(buckets.means(), places, config)
            evaluator.set_drift({k: v.reason for k, v in report.drifting.items()})
            drift_at = buckets.newest

    for msg in run.messages():
        played.append(msg)
        received = run.clock.wall_at(msg.sent_at) if msg.sent_at is not None else OFFLINE_NOW
        out = decode(msg.topic, msg.payload, received)
        if not isinstance(out, list):
            if msg.expected_reason:
                rejected[msg.expected_reason] += 1
            continue
        for r in out:
            for metric, value in r.metrics.items():
                values.setdefault((r.device_id, metric, r.time), (r.kind, value))
        pending.extend(out)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()

    labels = labels_from_messages(played)
    labels.rejected.update(rejected)
    rows = [
        ScoredRow(device, kind, metric, at, value, stored[(device, metric, at)])
        for (device, metric, at), (kind, value) in values.items()
    ]
    return rows, labels


def score_scenario(
    name: str,
    interval: timedelta,
    *,
    config: QualityConfig,
    devices: int = 60,
    seed: int = 1,
    duration: timedelta | None = None,
    fault_scale: float = 1.0,
    drift: bool = True,
) -> QualityScore:
    """Play a named scenario with every device reporting every `interval` (as `citywatch
    demo` does) for `duration` (the scenario's own by default) and score its flags
    (`drift` False: without the drift check, to measure what it adds)."""
    scenario = load_scenario(name)
    scenario = dataclasses.replace(
        scenario,
        intervals=dict.fromkeys(scenario.intervals, interval),
        duration=duration or scenario.duration,
    )
    run = ScenarioRun(
        scenario, devices=devices, seed=seed, now=OFFLINE_NOW, fault_scale=fault_scale
    )
    rows, labels = play(run, config, drift=drift)
    return score(rows, labels, flat_metrics(config))


def flat_metrics(config: QualityConfig) -> set[str]:
    """The "kind.metric" names whose default tests include a flat line."""
    return {
        f"{kind}.{metric}"
        for kind, per_metric in config.metrics.items()
        for metric, qc in per_metric.items()
        if qc.flat_line is not None and qc.flat_line.enabled
    }
