"""Drift: a device whose level moves away from its area's other devices of the same kind.

Issue 14 asks that "a slow offset against the device's own history or its neighbours in
the area is flagged". We judge against the neighbours, and say here why not the history:

- Own history. A drifting sensor's offset grows by a fraction of its daily range per day
  (the simulator: 0.07 m/h on a gauge, 0.1 pH/h). Within a day that is what a tide, the
  daily oxygen cycle or a rising river does to a healthy sensor, so a history check that
  flags it also flags those, and a real flood rise must never be hidden. A daily-mean
  baseline would separate them, but needs clean days before the drift starts; the
  simulator's drift starts in the first hour and no scenario lasts more than a day.
- Neighbours. Devices of one kind in one area (an area is one water body for water and
  flood devices: a river mouth, an estuary, a beach) see the same tide, the same cycle and
  the same flood. The platform already relies on that: one area's gauges are judged
  against one set of flood levels, and the alerts engine asks an area's other gauges to
  corroborate a crossing. So the gap between a device and its area's median is small and
  steady, and a gap that grows beyond the metric's noise and the area's natural spread is
  the device, not the water. A flood lifts every gauge together: the gap stays put.

How. Per (area, kind, metric) with a `drift` test in the defaults file: each device's
readings are averaged in `limits.drift_bucket_s` buckets of reading time (values flagged
fail left out). In every bucket in which at least `min_devices` devices of the group
reported, a device's gap is its mean minus the median of all the group's means there (the
device included: with three devices one drifting sensor never moves the median far). A
device's drift is the median of its gaps over the group's last `limits.drift_window_s`,
judged when it has `min_buckets` such buckets; it is drifting when that exceeds
`tolerance + tolerance_rel x |the group's median level|`. Medians, not means, so that a
spike, a dropout or a reading taken at the other end of a bucket during a fast rise does
not make a gap.

What is left unjudged, and reported so: a device with fewer than `min_devices - 1`
neighbours of its kind in its area. With one neighbour a growing gap says one of the two
drifts, not which, and flagging both would flag a healthy sensor; with none there is
nothing to compare. In the simulated city (60 devices) only about a third of the devices
have two neighbours, so most drift there stays unjudged: see the README's figures.

A device found drifting has its subsequent readings of that metric stored suspect
(QARTOD 3) until the gap is back within the tolerance: the processor runs `judge` on
bucket means it reads from the database every `processor.drift_refresh_s` and hands the
verdicts to the evaluator (`QualityEvaluator.set_drift`); `services/evaluate/flags.py`
runs the same `judge` on the values it has judged, so offline and stack give the same
verdicts. This module is pure.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

from schemas import KINDS, Kind
from services.quality.qartod import QualityConfig, SeriesKey

__all__ = ["BucketMeans", "DriftReport", "DriftVerdict", "drift_metrics", "is_kind", "judge"]

# (area, kind, metric): the devices that ought to read alike.
GroupKey = tuple[str, Kind, str]


@dataclass(frozen=True, slots=True)
class DriftVerdict:
    """One device's metric against its area's median over the recent window."""

    device_id: str
    metric: str
    gap: float  # the median of its bucket gaps, in the metric's unit
    allowed: float  # the tolerance it was judged against
    devices: int  # devices of the group, itself included
    buckets: int  # buckets the gap is the median of

    @property
    def drifting(self) -> bool:
        return abs(self.gap) > self.allowed

    @property
    def reason(self) -> str:
        return (
            f"drift: {self.metric} reads {self.gap:+.3g} against the median of "
            f"{self.devices} devices of its kind in its area over {self.buckets} buckets "
            f"(allowed {self.allowed:.3g})"
        )


@dataclass
class DriftReport:
    """What `judge` found: every judged series, and those it could not judge."""

    verdicts: dict[SeriesKey, DriftVerdict] = field(default_factory=dict)
    # Series with a drift test but too few neighbours (or common buckets) to be judged.
    unjudged: set[SeriesKey] = field(default_factory=set)

    @property
    def drifting(self) -> dict[SeriesKey, DriftVerdict]:
        return {k: v for k, v in self.verdicts.items() if v.drifting}


def judge(
    means: Mapping[SeriesKey, Mapping[float, float]],
    places: Mapping[str, tuple[str, Kind]],
    config: QualityConfig,
) -> DriftReport:
    """Judge every series of `means` against its area group (see the module docstring).

    Args:
        means: per (device, metric), bucket start (epoch seconds) -> mean of the bucket.
        places: per device, its (area id, kind); a device not listed is not judged.
        config: the quality defaults; only metrics with an enabled `drift` test are judged.
    """
    groups: dict[GroupKey, dict[str, Mapping[float, float]]] = defaultdict(dict)
    report = DriftReport()
    for (device, metric), buckets in means.items():
        place = places.get(device)
        if place is None or not buckets:
            continue
        area, kind = place
        test = config.for_metric(kind, metric).drift
        if test is None or not test.enabled:
            continue
        groups[(area, kind, metric)][device] = buckets
    window = config.limits.drift_window_s
    for (_, kind, metric), members in groups.items():
        test = config.for_metric(kind, metric).drift
        assert test is not None
        end = max(max(b) for b in members.values())
        since = end - window
        per_bucket: dict[float, dict[str, float]] = defaultdict(dict)
        for device, buckets in members.items():
            for start, mean in buckets.items():
                if start > since:
                    per_bucket[start][device] = mean
        gaps: dict[str, list[float]] = defaultdict(list)
        levels: list[float] = []
        for row in per_bucket.values():
            if len(row) < test.min_devices:
                continue
            middle = statistics.median(row.values())
            levels.append(middle)
            for device, mean in row.items():
                gaps[device].append(mean - middle)
        allowed = test.tolerance + test.tolerance_rel * (
            abs(statistics.median(levels)) if levels else 0.0
        )
        for device in members:
            own = gaps.get(device, [])
            key = (device, metric)
            if len(members) < test.min_devices or len(own) < test.min_buckets:
                report.unjudged.add(key)
                continue
            report.verdicts[key] = DriftVerdict(
                device, metric, statistics.median(own), allowed, len(members), len(own)
            )
    return report


def drift_metrics(config: QualityConfig) -> list[str]:
    """The metric names with an enabled drift test in the defaults (what the query reads)."""
    return sorted(
        {
            metric
            for per_metric in config.metrics.values()
            for metric, qc in per_metric.items()
            if qc.drift is not None and qc.drift.enabled
        }
    )


def is_kind(name: str) -> TypeGuard[Kind]:
    return name in KINDS


class BucketMeans:
    """Bucket sums of values as they are judged, for `judge` without a database.

    The offline player feeds it; the processor reads the same means from `readings`.
    `keep_s` bounds what is held: buckets older than that before the newest are dropped.
    """

    def __init__(self, bucket_s: float, keep_s: float) -> None:
        self.bucket_s = bucket_s
        self.keep_s = keep_s
        self._sums: dict[SeriesKey, dict[float, list[float]]] = defaultdict(dict)
        self.newest = float("-inf")

    def add(self, device_id: str, metric: str, ts: float, value: float) -> None:
        start = ts - ts % self.bucket_s
        cell = self._sums[(device_id, metric)].setdefault(start, [0.0, 0.0])
        cell[0] += value
        cell[1] += 1
        self.newest = max(self.newest, start)

    def add_all(self, rows: Iterable[tuple[str, str, float, float]]) -> None:
        for device_id, metric, ts, value in rows:
            self.add(device_id, metric, ts, value)

    def means(self) -> dict[SeriesKey, dict[float, float]]:
        """Bucket means of what is held, after dropping buckets older than `keep_s`."""
        cutoff = self.newest - self.keep_s
        out: dict[SeriesKey, dict[float, float]] = {}
        for key, buckets in self._sums.items():
            for start in [s for s in buckets if s <= cutoff]:
                del buckets[start]
            if buckets:
                out[key] = {s: total / n for s, (total, n) in buckets.items()}
        return out
