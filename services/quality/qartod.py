"""Data quality: an IOOS QARTOD flag on every stored value, judged as the stream goes by.

Each value gets the worst of four QARTOD tests (gross range, spike, rate of change, flat
line), ranked not evaluated < pass < suspect < fail, so "not evaluated" (2) survives only
when no test could run; that is how `ioos_qc.qartod.qartod_compare` aggregates too. The
flag values are QARTOD's: 1 pass, 2 not evaluated, 3 suspect, 4 fail.

Why not `ioos_qc` at run time. `ioos_qc` (3.0) installs here and its QARTOD functions are
the reference: tests/test_quality.py checks that this module flags the same series the
same way (a dev dependency). It does not fit the processor's stream, measured here:

- Its tests take whole numpy arrays and judge every element. In a stream we judge one new
  value against a few stored ones, so each call would carry a three-point array through
  numpy masked arrays: about 80 µs (gross range), 150 µs (spike), 180 µs (rate of change)
  and 350 µs (flat line) per value, ~0.75 ms per row, ~4.5 s for one default batch of 2000
  readings (6000 rows). The same logic in plain Python costs a few µs per row.
- `flat_line_test` turns its time thresholds into a point count with the median sampling
  interval of the whole input array; on a short streaming window that median is noise.
  Here the flat line is judged in time: how long the values have stayed within tolerance.
- Time-zone-aware datetimes (all of ours) raise a numpy warning inside `mapdates`, and it
  pulls numpy, pandas, scipy, xarray, shapely and h5netcdf (~360 MB) into a service that is
  otherwise plain asyncio.

So the four tests are implemented below from the QARTOD manuals' definitions, in the form
`ioos_qc` gives them (thresholds, strict comparisons, units):

- gross range: FAIL outside the sensor span (the metric registry's range unless a device
  overrides it with a narrower one), SUSPECT outside the operator's suspect span. A value
  outside the sensor span is no measurement: the sequence tests below neither judge it nor
  use it as another value's neighbour, and a value the spike test fails leaves the window
  once judged, before the value after it meets the rate and flat-line tests (`ioos_qc`
  runs them on the raw series; a sensor's 3960 NTU glitch then hid the 408 NTU spike right
  after it, and a 41.8 °C glitch left the ordinary 29.96 °C after it suspect). A window
  warmed from the database after a restart still holds stored spike failures (only values
  outside the span are dropped there).
- spike: the point n-1 is judged against its two neighbours by one of `ioos_qc`'s methods:
  "average", |x(n-1) - (x(n-2) + x(n))/2|, or "differential", the smaller of the two steps
  when they have opposite signs (0 otherwise); strictly greater than the thresholds.
- rate of change: a step |x(n) - x(n-1)| over dt is SUSPECT above `rate x dt + noise`
  (an optional fail rate is FAIL); with `noise` 0 this is `ioos_qc`'s |dx|/dt > rate.
- flat line: a value is SUSPECT (FAIL) when it and the values before it have stayed within
  `tolerance` (max - min < tolerance, as `ioos_qc`) for at least `suspect_s` (`fail_s`)
  seconds of reading time, or (with `suspect_points`) for that many readings. For a regular
  series and thresholds that are whole multiples of the interval the time test is exactly
  `ioos_qc`'s point count; for an irregular one it is better.

The same limit at any reporting interval (issue 14). Played at 10 s, per-hour rates met
by ordinary noise flagged ~95 % of pH, oxygen and temperature values, and a real rise of
1.1 m in 2 minutes was a "spike". What two readings dt apart can differ by is what the
quantity can do in dt (rate x dt) plus what the sensor's noise makes of two readings
(about 5 x sqrt(2) sigma, independent of dt). The rate test therefore adds that `noise`
allowance, stated in the defaults file from the sensors' noise: at 10 s the allowance
dominates (noise is never a rate fault), at 10 minutes the rate does. We chose this over
judging the rate across a window of time because it needs no more state, keeps the
per-step verdict and `ioos_qc` conformance, and over a sqrt(dt) allowance because
measurement noise is white (it does not grow with dt); the process's own variability is
what `rate` bounds. Spikes use the differential method in the defaults: measurement noise
is the same at any interval and a step change (a flash flood's rise, a litter boom
emptied) has one large step, not two opposite ones, so it is never a spike at any
interval; the average method flags the value before any step of twice the threshold.
A stuck sensor repeats one value exactly; for a sensor whose noise is well above its
resolution five equal readings are a stuck sensor whatever time they span, so the flat
line also counts repeats.

Drift is not a per-value test: a slow offset is only visible against the other devices
of the device's kind in its area, over an hour or so of reading time, which one series'
window cannot see (and the processor is partitioned by device). services/quality/drift.py
judges it on bucket means (the module says why neighbours and not the device's own
history); the evaluator is handed its verdicts (`set_drift`) and stores every following
value of a drifting series suspect. Its thresholds are the metric's `drift` entry in the
defaults file.

The spike test is centred: a point is judged by its neighbours on both sides, and the
newest point has no right neighbour yet. We keep the centred test rather than a one-sided
variant (which would flag the first value of every genuine step change as a spike): a
value is stored with the other tests' flag and "spike not evaluated yet"; when the next
value of the series arrives, the spike verdict for the previous one is folded into its
flag, in memory when it is in the same batch, otherwise by an UPDATE in the same
transaction (`Evaluation.reflags`). The trade-off: for one sampling interval a stored
value's flag lacks its spike verdict, and the last value before a gap (`max_gap_s`) or a
stream's end keeps it so, as QARTOD leaves the first and last points unevaluated. Reflags
only ever make a flag worse (by the rank above), so applying one twice changes nothing.

Late and out-of-order readings. Kafka keeps one device's records in order, but a reading's
time may be older than values already judged (buffered uploads, clock skew, duplicates).
Such a reading is stored with its own time and judged by gross range, by the spike test
between its two window neighbours, and, when it falls inside the current flat run and fits
its range, by the flat-line test as one of the run's values (a stuck sensor's reading sent
out of order is stuck too); it does not enter the window. Inserting it into the past would
change neighbours' verdicts already stored, and re-judging stored rows on every late
arrival would make a row's flag depend on the order of arrival.

Bounded state. Per (device, metric) series we keep at most `limits.window_points` values
plus a few numbers (about 2.5 KB with the default 16), and at most `limits.max_series`
series, least recently used evicted first (the default 20,000 is ~50 MB at most). The
windows are a cache of the newest stored rows: a series met for the first time, or again
after eviction or a processor restart, is warmed from the database (its newest rows within
`max_gap_s` before the batch's first reading of it) so verdicts do not depend on which
processor owns a partition after a rebalance, nor on restarts. A flat run longer than the
window is measured from the oldest value still in the window once the run is broken.

Redelivery. Rows already stored keep their flag: the insert is `ON CONFLICT DO NOTHING`,
and a redelivered reading is older than or equal to the warmed window's newest, so it is
judged as late and emits no reflag. `evaluate` does not touch the windows; `commit` does,
after the transaction has committed, so a failed and retried batch is judged afresh.

This module is pure (no I/O): the processor reads the defaults file and the devices'
overrides and hands them in.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas import KINDS, METRICS, Kind, Reading, metric_spec
from schemas.registry import COMMON
from services.common.errors import ConfigError

__all__ = [
    "Drift",
    "Evaluation",
    "Flag",
    "MetricQc",
    "QualityConfig",
    "QualityEvaluator",
    "SeriesKey",
    "worst",
]

SeriesKey = tuple[str, str]  # (device_id, metric)
RowKey = tuple[str, str, datetime]  # (device_id, metric, time): the readings table's key


class Flag(IntEnum):
    """IOOS QARTOD primary flags, as stored in `readings.quality`."""

    PASS = 1
    NOT_EVALUATED = 2
    SUSPECT = 3
    FAIL = 4

    @property
    def label(self) -> str:
        return self.name.lower()


# Aggregation order: a test that ran outranks one that could not; then the worse verdict.
# Indexed by the flag's value (-, PASS, NOT_EVALUATED, SUSPECT, FAIL): `worst` runs for every
# value stored, and a tuple index is several times cheaper than hashing an enum member.
_RANK = (0, 1, 0, 2, 3)


# The flags as plain ints for the hot path: an enum member's attribute lookup and its
# construction from an int cost more than the test itself (issue 11's profile). Flag is an
# IntEnum, so these compare equal to its members and are stored alike.
_PASS, _NOT_EVALUATED, _SUSPECT, _FAIL = 1, 2, 3, 4


def _worse(a: int, b: int) -> int:
    """`worst(a, b)` on plain ints: the first of the higher rank."""
    return b if _RANK[b] > _RANK[a] else a


def worst(*flags: Flag) -> Flag:
    """The QARTOD aggregate of several test flags: the first of the highest rank."""
    found, rank = Flag.NOT_EVALUATED, 0
    for flag in flags:
        if _RANK[flag] > rank:
            found, rank = flag, _RANK[flag]
    return found


# -- configuration ------------------------------------------------------------------------


class _Test(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Lets a device override switch a default test off: {"spike": {"enabled": 0}}.
    enabled: bool = True


class GrossRange(_Test):
    """Spans in the metric's unit. `fail_*` default to the registry's sensor span."""

    fail_min: float | None = None
    fail_max: float | None = None
    suspect_min: float | None = None
    suspect_max: float | None = None


class Spike(_Test):
    """Thresholds in the metric's unit.

    `method` is `ioos_qc`'s: "average" judges |x(n-1) - (x(n-2) + x(n)) / 2|;
    "differential" judges min(|x(n-1) - x(n-2)|, |x(n-1) - x(n)|) when the two steps have
    opposite signs (0 otherwise), so a step change or a steady rise is never a spike.
    """

    suspect: float = Field(gt=0)
    fail: float = Field(gt=0)
    method: Literal["average", "differential"] = "average"

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.fail < self.suspect:
            raise ValueError("spike.fail must be >= spike.suspect")
        return self


class RateOfChange(_Test):
    """Thresholds in the metric's unit per hour (ioos_qc takes per second: divide by 3600).

    A step |x(n) - x(n-1)| over dt seconds is suspect when it exceeds
    `suspect_per_hour` x dt / 3600 + `noise`: what the quantity can do in dt plus what the
    sensor's noise alone makes of two readings (see the module docstring). With `noise` 0
    this is `ioos_qc`'s test exactly.
    """

    suspect_per_hour: float = Field(gt=0)
    fail_per_hour: float | None = Field(default=None, gt=0)
    noise: float = Field(default=0.0, ge=0)


class FlatLine(_Test):
    """Seconds of reading time within `tolerance` (max - min < tolerance, in the unit).

    Repeats are also judged by count, however little time they span. With the sensor's noise
    (`noise`, 1-sigma in the unit, plus `noise_rel` x |value|) and `resolution` given, a value
    is suspect once it and the values before it, n in all, stayed within `tolerance`, where n
    is the smallest count that noise alone repeats with a chance under `repeat_chance`
    (see `repeats_needed`): few at 7 pH, many at 1 ug/m3, where the noise is under the
    resolution and equal readings are common. `suspect_points` is a fixed count instead
    (with the noise model: the least n). Below `points_min_value` repeats never count.
    """

    suspect_s: float = Field(gt=0)
    fail_s: float = Field(gt=0)
    tolerance: float = Field(gt=0)
    suspect_points: int | None = Field(default=None, ge=3)
    points_min_value: float | None = None
    noise: float = Field(default=0.0, ge=0)
    noise_rel: float = Field(default=0.0, ge=0)
    resolution: float = Field(default=0.0, ge=0)
    repeat_chance: float = Field(default=1e-3, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.fail_s < self.suspect_s:
            raise ValueError("flat_line.fail_s must be >= flat_line.suspect_s")
        return self


class Drift(_Test):
    """The gap to the area's median that the metric's noise and natural spread allow.

    Judged by services/quality/drift.py over bucket means of reading time, not per value:
    a device is drifting when the median of its gaps to its (area, kind) group's median
    over the last `limits.drift_window_s` exceeds `tolerance` + `tolerance_rel` x |the
    group's level|, judged once `min_devices` devices (itself included) share
    `min_buckets` buckets of `limits.drift_bucket_s`.
    """

    tolerance: float = Field(ge=0)
    tolerance_rel: float = Field(default=0.0, ge=0)
    min_buckets: int = Field(default=6, ge=1)
    min_devices: int = Field(default=3, ge=3)


def repeats_needed(
    value: float, noise: float, noise_rel: float, width: float, chance: float, least: float
) -> float:
    """How many values within `width` of each other make a stuck sensor at `value`.

    A healthy reading lands in the bin of width `width` around the previous ones with a
    chance of at most p = erf(width / (2 sqrt(2) sigma)) (the bin centred on the mean, the
    worst case), sigma = noise + noise_rel x |value|; n values in a row then have a chance
    under p^(n-1). The count is the smallest n with p^(n-1) < `chance`, at least `least`;
    infinite where sigma is 0 (a sensor at zero, whose noise is all under its resolution).
    Measurement noise is white, so the count means the same at any reporting interval; the
    quantity's own change between readings only makes honest repeats rarer.
    """
    sigma = noise + noise_rel * abs(value)
    p = math.erf(width / (2 * math.sqrt(2) * sigma)) if sigma > 0 else 1.0
    if p >= 1:
        return math.inf
    if p <= 0:
        return least
    return max(least, 1 + math.ceil(math.log(chance) / math.log(p)))


TestName = Literal["gross_range", "spike", "rate_of_change", "flat_line", "drift"]
_TEST_MODELS: dict[str, type[_Test]] = {
    "gross_range": GrossRange,
    "spike": Spike,
    "rate_of_change": RateOfChange,
    "flat_line": FlatLine,
    "drift": Drift,
}


class MetricQc(BaseModel):
    """The tests for one metric; a test left out does not run (its flag is 2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gross_range: GrossRange | None = None
    spike: Spike | None = None
    rate_of_change: RateOfChange | None = None
    flat_line: FlatLine | None = None
    drift: Drift | None = None

    def with_overrides(self, overrides: Mapping[str, Mapping[str, float]]) -> MetricQc:
        """This config with a device's `{test: {parameter: value}}` laid over it.

        Parameters merge over the default test's; a test without a default must be given
        in full. Raises `ValueError` (pydantic's) for unknown tests or bad parameters.
        """
        update: dict[str, Any] = {}
        for test, params in overrides.items():
            model = _TEST_MODELS.get(test)
            if model is None:
                raise ValueError(f"unknown QARTOD test {test!r} (known: {sorted(_TEST_MODELS)})")
            base = getattr(self, test)
            merged = {**(base.model_dump() if base is not None else {}), **params}
            update[test] = model.model_validate(merged)
        return MetricQc.model_validate({**self.model_dump(), **update})


class Limits(BaseModel):
    """How much state the evaluator may hold (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_series: int = Field(default=20_000, ge=1)
    window_points: int = Field(default=16, ge=3, le=1024)
    # Neighbours further apart than this are not neighbours: the window starts again.
    max_gap_s: float = Field(default=3600.0, gt=0)
    # Drift (services/quality/drift.py): bucket means of this many seconds of reading time,
    # over this recent window.
    drift_bucket_s: float = Field(default=300.0, gt=0)
    drift_window_s: float = Field(default=3600.0, gt=0)


class QualityConfig(BaseModel):
    """The defaults file (deploy/quality/defaults.yaml): limits and per-metric tests.

    `metrics` is keyed by kind (`water`, `air`, `flood`, `litter`) or `any` for the metrics
    every kind may report, then by metric name from the registry.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: Limits = Limits()
    metrics: dict[Kind | Literal["any"], dict[str, MetricQc]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_metrics(self) -> Self:
        for kind, per_metric in self.metrics.items():
            known = COMMON if kind == "any" else {**METRICS[kind], **COMMON}
            for name, qc in per_metric.items():
                spec = known.get(name)
                if spec is None:
                    raise ValueError(f"metrics.{kind}.{name}: not a metric of kind {kind!r}")
                _check_spans(f"metrics.{kind}.{name}", qc, spec.minimum, spec.maximum)
        return self

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "quality defaults") -> QualityConfig:
        """Parse and validate the defaults file's text; `ConfigError` says what is wrong."""
        try:
            return cls.model_validate(yaml.safe_load(text) or {})
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def for_metric(self, kind: Kind, metric: str) -> MetricQc:
        """The default tests for `metric` on a device of `kind` (none: an empty config)."""
        qc = self.metrics.get(kind, {}).get(metric) or self.metrics.get("any", {}).get(metric)
        return qc if qc is not None else MetricQc()


def _check_spans(where: str, qc: MetricQc, sensor_min: float, sensor_max: float) -> None:
    """QARTOD: the suspect span lies within the fail (sensor) span, and that within the
    registry's, since values outside the registry's range never become readings."""
    g = qc.gross_range
    if g is None:
        return
    fail_lo = sensor_min if g.fail_min is None else g.fail_min
    fail_hi = sensor_max if g.fail_max is None else g.fail_max
    sus_lo = fail_lo if g.suspect_min is None else g.suspect_min
    sus_hi = fail_hi if g.suspect_max is None else g.suspect_max
    if not sensor_min <= fail_lo <= sus_lo <= sus_hi <= fail_hi <= sensor_max:
        raise ValueError(
            f"{where}.gross_range: need registry min {sensor_min} <= fail_min {fail_lo} <= "
            f"suspect_min {sus_lo} <= suspect_max {sus_hi} <= fail_max {fail_hi} <= "
            f"registry max {sensor_max}"
        )


# -- the evaluator ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    """One series' effective tests, as plain numbers for the hot path."""

    gross: tuple[float, float, float, float] | None  # fail_lo, fail_hi, suspect_lo, suspect_hi
    spike: tuple[float, float, bool] | None  # suspect, fail, differential
    roc: tuple[float, float, float] | None  # suspect, fail per second (fail inf), noise
    # suspect_s, fail_s, tolerance, points, points_min_value, noise, noise_rel, bin, chance
    flat: tuple[float, float, float, float, float, float, float, float, float] | None


def _resolve(kind: Kind, metric: str, qc: MetricQc) -> _Resolved:
    spec = metric_spec(kind, metric)
    gross = None
    g = qc.gross_range
    if spec is not None and (g is None or g.enabled):
        # The sensor span always applies (QARTOD's FAIL span), even with no suspect span.
        fail_lo = spec.minimum if g is None or g.fail_min is None else g.fail_min
        fail_hi = spec.maximum if g is None or g.fail_max is None else g.fail_max
        sus_lo = fail_lo if g is None or g.suspect_min is None else g.suspect_min
        sus_hi = fail_hi if g is None or g.suspect_max is None else g.suspect_max
        gross = (fail_lo, fail_hi, sus_lo, sus_hi)
    s, r, f = qc.spike, qc.rate_of_change, qc.flat_line
    return _Resolved(
        gross=gross,
        spike=(
            (s.suspect, s.fail, s.method == "differential") if s is not None and s.enabled else None
        ),
        roc=(
            (
                r.suspect_per_hour / 3600,
                math.inf if r.fail_per_hour is None else r.fail_per_hour / 3600,
                r.noise,
            )
            if r is not None and r.enabled
            else None
        ),
        flat=(
            (
                f.suspect_s,
                f.fail_s,
                f.tolerance,
                (3 if f.noise or f.noise_rel else math.inf)
                if f.suspect_points is None
                else f.suspect_points,
                -math.inf if f.points_min_value is None else f.points_min_value,
                f.noise,
                f.noise_rel,
                max(f.tolerance, f.resolution),
                f.repeat_chance,
            )
            if f is not None and f.enabled
            else None
        ),
    )


def _flat_verdict(cfg: _Resolved, held: float, run_points: int, value: float) -> int:
    """The flat-line verdict of a value that ends a run of `run_points` values within the
    tolerance, begun `held` seconds of reading time before it."""
    assert cfg.flat is not None
    suspect_s, fail_s, _, points, points_from, noise, rel, width, chance = cfg.flat
    if held >= fail_s:
        return _FAIL
    if held >= suspect_s or (
        value >= points_from
        and run_points >= points
        and (
            not (noise or rel)
            or run_points >= repeats_needed(value, noise, rel, width, chance, points)
        )
    ):
        return _SUSPECT
    return _PASS


def _late_flat(s: _Series, cfg: _Resolved, ts: float, value: float) -> int:
    """The flat-line verdict of a late value inside the series' current flat run: it fits
    the run's range and came after the run began, so in order it would have been one of
    the run's values (a stuck sensor's reading sent out of order was passed as good).
    Not evaluated otherwise: a late value never starts or breaks a run."""
    if cfg.flat is None or not s.values or ts < s.run_start:
        return _NOT_EVALUATED
    if max(s.run_max, value) - min(s.run_min, value) >= cfg.flat[2]:
        return _NOT_EVALUATED
    before = bisect_left(s.times, ts) - bisect_left(s.times, s.run_start)
    return _flat_verdict(cfg, ts - s.run_start, before + 1, value)


def _spike(test: tuple[float, float, bool], left: float, mid: float, right: float) -> int:
    """The spike verdict of `mid` between its neighbours (see the module docstring)."""
    sus, fail, differential = test
    if differential:
        before, after = mid - left, mid - right
        if before * after > 0:
            before, after = abs(before), abs(after)
            diff = before if before < after else after
        else:
            diff = 0.0
    else:
        diff = abs(mid - (left + right) / 2)
    return _FAIL if diff > fail else _SUSPECT if diff > sus else _PASS


@dataclass(slots=True)
class _Series:
    """The newest values of one (device, metric), oldest first, and the flat run."""

    times: deque[float]  # epoch seconds
    values: deque[float]
    newest: datetime | None = None  # time of the newest value (its spike verdict is pending)
    cfg: _Resolved | None = None
    generation: int = -1  # the override generation `cfg` was resolved under
    run_start: float = 0.0  # flat line: the longest suffix whose range < tolerance
    run_min: float = 0.0
    run_max: float = 0.0
    run_points: int = 0  # values in the flat run (it may be longer than the window)
    # The newest time judged, a failed spike's too (it leaves the window, but a duplicate of
    # it is still late, not a new value).
    seen_ts: float = float("-inf")

    def copy(self, maxlen: int) -> _Series:
        return _Series(
            deque(self.times, maxlen),
            deque(self.values, maxlen),
            self.newest,
            self.cfg,
            self.generation,
            self.run_start,
            self.run_min,
            self.run_max,
            self.run_points,
            self.seen_ts,
        )

    def clear(self) -> None:
        self.times.clear()
        self.values.clear()
        self.newest = None

    def drop_outside(self, lo: float, hi: float) -> None:
        """Drop window values outside the sensor span [lo, hi] (a warmed window holds what
        the database has, failed values included; a live one never takes them in)."""
        if all(lo <= v <= hi for v in self.values):
            return
        last = self.times[-1]
        kept = [(t, v) for t, v in zip(self.times, self.values, strict=True) if lo <= v <= hi]
        self.times.clear()
        self.values.clear()
        for t, v in kept:
            self.times.append(t)
            self.values.append(v)
        if not self.times or self.times[-1] != last:
            self.newest = None  # its pending spike verdict goes with it

    def rebuild_run(self) -> None:
        """Recompute the flat run from the window (after a config change or a warm-up)."""
        if not self.values:
            return
        self.run_start, self.run_min, self.run_max = (
            self.times[-1],
            self.values[-1],
            self.values[-1],
        )
        self.run_points = 1
        self._extend_back(self.values[-1], len(self.values) - 1)

    def _extend_back(self, value: float, upto: int) -> None:
        """Grow the run backwards over window points [0, upto) while the range stays below
        the tolerance. The run then starts at the oldest point kept."""
        tol = self.cfg.flat[2] if self.cfg is not None and self.cfg.flat is not None else 0.0
        lo = hi = value
        for i in range(upto - 1, -1, -1):
            v = self.values[i]
            lo2, hi2 = min(lo, v), max(hi, v)
            if hi2 - lo2 >= tol:
                break
            lo, hi = lo2, hi2
            self.run_start = self.times[i]
            self.run_points += 1
        self.run_min, self.run_max = lo, hi


@dataclass
class Evaluation:
    """The outcome of one batch: flags for its rows and verdicts for rows stored before.

    `flags` holds the flag of each row key (the first occurrence's, as that is the row the
    insert keeps). `reflags` are spike verdicts (suspect or fail) for rows of earlier batches:
    the writer raises their stored flag to these when they are worse. Nothing of this is in
    the evaluator until `QualityEvaluator.commit`.
    """

    flags: dict[RowKey, int] = field(default_factory=dict)
    reflags: list[tuple[str, str, datetime, int]] = field(default_factory=list)
    late: int = 0  # rows judged by gross range alone (older than their series' newest)
    _staged: dict[SeriesKey, _Series] = field(default_factory=dict, repr=False)
    # Rows that entered a window in this batch, so are inserted by it (not redelivered).
    _fresh: set[RowKey] = field(default_factory=set, repr=False)


class QualityEvaluator:
    """Judges readings series by series with bounded windows; see the module docstring.

    Per batch: `missing()` names the series to warm from the database, `warm()` loads them,
    `evaluate()` judges the batch without changing any state, and `commit()` keeps the new
    windows once the batch's transaction has committed.
    """

    def __init__(self, config: QualityConfig) -> None:
        self.config = config
        self._series: OrderedDict[SeriesKey, _Series] = OrderedDict()
        self._overrides: dict[str, tuple[Kind, dict[str, MetricQc]]] = {}
        self._generation = 0  # bumped whenever the overrides change
        self.evicted = 0
        # Series found drifting against their area (services/quality/drift.py), with why:
        # their values are stored suspect while they are listed.
        self.drift: dict[SeriesKey, str] = {}

    def set_drift(self, drifting: Mapping[SeriesKey, str]) -> None:
        """Replace the series judged drifting (key -> reason) by the latest drift check."""
        self.drift = dict(drifting)

    # -- per-device overrides -------------------------------------------------------------

    def set_overrides(self, devices: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[str]:
        """Replace every device's overrides with these `(device_id, kind, qc_overrides)`.

        A device whose overrides do not validate keeps the defaults; the returned list says
        which and why (the processor logs it), so one bad row never stops the processor.
        """
        fresh: dict[str, tuple[Kind, dict[str, MetricQc]]] = {}
        errors: list[str] = []
        for device_id, kind_name, overrides in devices:
            try:
                if kind_name not in KINDS:
                    raise ValueError(f"unknown kind {kind_name!r}")
                kind: Kind = kind_name
                per_metric: dict[str, MetricQc] = {}
                for metric, tests in overrides.items():
                    spec = metric_spec(kind, metric)
                    if spec is None:
                        raise ValueError(f"{metric!r} is not a metric of kind {kind!r}")
                    qc = self.config.for_metric(kind, metric).with_overrides(tests)
                    _check_spans(metric, qc, spec.minimum, spec.maximum)
                    per_metric[metric] = qc
            except (ValueError, TypeError, AttributeError) as exc:
                errors.append(f"device {device_id}: qc_overrides ignored: {exc}")
                continue
            if per_metric:
                fresh[device_id] = (kind, per_metric)
        if fresh != self._overrides:
            self._overrides = fresh
            self._generation += 1
        return errors

    def metric_config(self, device_id: str, kind: Kind, metric: str) -> MetricQc:
        """The tests that apply to one device's metric: its override, else the default."""
        own = self._overrides.get(device_id)
        if own is not None and own[0] == kind and metric in own[1]:
            return own[1][metric]
        return self.config.for_metric(kind, metric)

    # -- warm-up --------------------------------------------------------------------------

    def missing(self, readings: Sequence[Reading]) -> dict[SeriesKey, datetime]:
        """Series of this batch with no window in memory, each with the earliest time worth
        loading (the batch's first reading of it minus `max_gap_s`)."""
        gap = timedelta(seconds=self.config.limits.max_gap_s)
        out: dict[SeriesKey, datetime] = {}
        for r in readings:
            for metric in r.metrics:
                key = (r.device_id, metric)
                if key in self._series:
                    continue
                since = r.time - gap
                if key not in out or since < out[key]:
                    out[key] = since
        return out

    def warm(self, key: SeriesKey, rows: Iterable[tuple[datetime, float]]) -> None:
        """Seed a series' window with its newest stored rows (any order; none is fine)."""
        n = self.config.limits.window_points
        ordered = sorted(rows)[-n:]
        s = _Series(deque(maxlen=n), deque(maxlen=n))
        gap = self.config.limits.max_gap_s
        for t, v in ordered:
            ts = t.timestamp()
            if s.times and ts - s.times[-1] > gap:
                s.clear()
            s.times.append(ts)
            s.values.append(v)
            s.newest = t
            s.seen_ts = ts
        self._series[key] = s  # its config (and flat run) are resolved on first evaluation

    # -- judging --------------------------------------------------------------------------

    def evaluate(self, readings: Sequence[Reading]) -> Evaluation:
        """Judge a batch in order. Changes no state: pass the result to `commit`."""
        ev = Evaluation()
        window = self.config.limits.window_points
        # Bound once: this loop runs for every value stored.
        staged, series, generation, drift = ev._staged, self._series, self._generation, self.drift
        keep_first = ev.flags.setdefault
        judge = self._judge
        for r in readings:
            device_id, at = r.device_id, r.time
            ts = at.timestamp()
            for metric, value in r.metrics.items():
                key = (device_id, metric)
                s = staged.get(key)
                if s is None:
                    old = series.get(key)
                    s = (
                        old.copy(window)
                        if old is not None
                        else _Series(deque(maxlen=window), deque(maxlen=window))
                    )
                    staged[key] = s
                if s.cfg is None or s.generation != generation:
                    s.cfg = _resolve(r.kind, metric, self.metric_config(device_id, r.kind, metric))
                    s.generation = generation
                    if s.cfg.gross is not None:
                        s.drop_outside(s.cfg.gross[0], s.cfg.gross[1])
                    s.rebuild_run()
                flag = judge(s, ev, device_id, metric, at, ts, value)
                if drift and key in drift:
                    flag = _worse(flag, _SUSPECT)
                keep_first((device_id, metric, at), flag)
        return ev

    def _judge(
        self,
        s: _Series,
        ev: Evaluation,
        device_id: str,
        metric: str,
        at: datetime,
        ts: float,
        value: float,
    ) -> int:
        cfg = s.cfg
        assert cfg is not None
        gross = _NOT_EVALUATED
        if cfg.gross is not None:
            fail_lo, fail_hi, sus_lo, sus_hi = cfg.gross
            if value < fail_lo or value > fail_hi:
                gross = _FAIL
            elif value < sus_lo or value > sus_hi:
                gross = _SUSPECT
            else:
                gross = _PASS
        if gross == _FAIL:
            # Outside what the sensor can measure: no value at all, so it is nobody's
            # neighbour (see the module docstring).
            return gross
        times, values = s.times, s.values
        if times:
            prev_t = times[-1]
            if ts <= s.seen_ts:
                ev.late += 1  # late, out of order or a duplicate: no neighbour's verdict moves
                late = _worse(self._late_spike(s, cfg, ts, value), _late_flat(s, cfg, ts, value))
                return _worse(gross, late)
            if ts - prev_t > self.config.limits.max_gap_s:
                s.clear()  # too far apart to be neighbours: the window starts again

        # Each test's flag, folded in QARTOD's order (gross, rate of change, flat line): a
        # test that does not run leaves the aggregate as it is, as NOT_EVALUATED would.
        flag = gross
        if times:
            if cfg.spike is not None and len(values) >= 2 and s.newest is not None:
                # The centred test for the previous point, now that it has a right neighbour.
                verdict = _spike(cfg.spike, values[-2], values[-1], value)
                self._fold_spike(ev, (device_id, metric, s.newest), verdict, cfg.gross is None)
                if verdict == _FAIL:
                    # A failed spike is no measurement either: it leaves the window, so the
                    # value after it is judged, by every test below, against the one before
                    # it (a 3960 NTU glitch made the 408 NTU after it look like half of a
                    # step and passed it; a 41.8 °C glitch made the 29.96 °C after it fail
                    # the rate of change against 29.69 °C).
                    times.pop()
                    values.pop()
                    s.rebuild_run()
            prev_t, prev_v = times[-1], values[-1]
            if cfg.roc is not None:
                # The step against what the quantity can do in dt plus the noise allowance.
                step, dt = abs(value - prev_v), ts - prev_t
                sus_rate, fail_rate, noise = cfg.roc
                flag = _worse(
                    flag,
                    _FAIL
                    if step > fail_rate * dt + noise
                    else _SUSPECT
                    if step > sus_rate * dt + noise
                    else _PASS,
                )
        if cfg.flat is not None:
            if not values:
                s.run_start, s.run_min, s.run_max, s.run_points = ts, value, value, 1
            else:
                lo = value if value < s.run_min else s.run_min
                hi = value if value > s.run_max else s.run_max
                if hi - lo < cfg.flat[2]:
                    s.run_min, s.run_max = lo, hi
                    s.run_points += 1
                else:  # the run is broken: the new run is the suffix that still fits
                    s.run_start, s.run_points = ts, 1
                    s._extend_back(value, len(values))
            flag = _worse(flag, _flat_verdict(cfg, ts - s.run_start, s.run_points, value))
        times.append(ts)
        values.append(value)
        s.newest = at
        s.seen_ts = ts
        ev._fresh.add((device_id, metric, at))
        return flag

    def _late_spike(self, s: _Series, cfg: _Resolved, ts: float, value: float) -> int:
        """The spike verdict of a late value between two values of the window (not
        evaluated for a duplicate, or with no neighbour on one side within `max_gap_s`).
        Its neighbours keep their verdicts and the window is not changed."""
        if cfg.spike is None:
            return _NOT_EVALUATED
        i = bisect_left(s.times, ts)
        gap = self.config.limits.max_gap_s
        if (
            i == 0
            or i == len(s.times)  # after the newest kept: a failed spike's duplicate
            or s.times[i] == ts
            or ts - s.times[i - 1] > gap
            or s.times[i] - ts > gap
        ):
            return _NOT_EVALUATED
        return _spike(cfg.spike, s.values[i - 1], value, s.values[i])

    @staticmethod
    def _fold_spike(ev: Evaluation, row: RowKey, verdict: int, no_gross: bool) -> None:
        if row in ev._fresh:  # inserted by this same batch: fold it in before the insert
            ev.flags[row] = _worse(ev.flags[row], verdict)
        elif verdict != _PASS or no_gross:
            # Stored by an earlier batch. With gross range on, its flag is at least pass,
            # so a pass changes nothing and costs no row update; without it, a pass may
            # lift a "not evaluated", as it would have in the same batch.
            ev.reflags.append((*row, verdict))

    def commit(self, ev: Evaluation) -> None:
        """Keep the windows of a batch whose transaction committed; evict beyond the cap."""
        for key, s in ev._staged.items():
            self._series[key] = s
            self._series.move_to_end(key)
        cap = self.config.limits.max_series
        while len(self._series) > cap:
            self._series.popitem(last=False)
            self.evicted += 1
        ev._staged = {}
        ev._fresh = set()

    def forget(self) -> None:
        """Drop every window (they are warmed again from the database on next sight).

        The processor calls it when its partition assignment changes: while another
        processor owned a device, that one stored newer rows than our windows hold."""
        self._series.clear()

    @property
    def series_count(self) -> int:
        return len(self._series)
