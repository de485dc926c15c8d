"""The drift check (services/quality/drift.py): a device against its area's devices of its kind.

Pure: bucket means in, verdicts out; the evaluator applies them to the values that follow.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from schemas import Kind, Reading
from services.quality import Flag, QualityConfig, QualityEvaluator
from services.quality.drift import BucketMeans, judge

T0 = datetime(2026, 11, 24, 0, 0, tzinfo=UTC).timestamp()
CFG = QualityConfig.model_validate(
    {
        "limits": {"drift_bucket_s": 300, "drift_window_s": 3600},
        "metrics": {"flood": {"water_level_m": {"drift": {"tolerance": 0.1}}}},
    }
)


def level(t_s: float) -> float:
    """A tide of 1 m range with a period of 12.4 h: what every gauge of the area sees."""
    return 1.0 + 0.5 * math.sin(2 * math.pi * t_s / (12.4 * 3600))


def gauges(
    n: int,
    hours: float,
    offset_per_h: dict[str, float] | None = None,
    rise: tuple[float, float] | None = None,
    step_s: float = 10,
    seed: int = 1,
) -> BucketMeans:
    """`n` gauges g0.. in one area reading the tide with 8 mm of noise every `step_s`;
    `offset_per_h` drifts some; `rise` = (start s, metres) lifts all of them at once."""
    rng = random.Random(seed)
    means = BucketMeans(300, 3600)
    t = 0.0
    while t < hours * 3600:
        for i in range(n):
            device = f"g{i}"
            value = level(t) + rng.gauss(0, 0.008)
            value += (offset_per_h or {}).get(device, 0.0) * t / 3600
            if rise is not None and t >= rise[0]:
                value += rise[1]
            means.add(device, "water_level_m", T0 + t, value)
        t += step_s
    return means


def places(n: int, area: str = "stueng-hav") -> dict[str, tuple[str, Kind]]:
    return {f"g{i}": (area, "flood") for i in range(n)}


def test_a_drifting_gauge_among_steady_neighbours_is_flagged_and_they_are_not() -> None:
    # 0.07 m/h, the simulator's gauge drift: 0.2 m after three hours.
    report = judge(gauges(4, 3, {"g1": 0.07}).means(), places(4), CFG)
    assert set(report.drifting) == {("g1", "water_level_m")}
    verdict = report.verdicts[("g1", "water_level_m")]
    assert verdict.gap > 0.1
    assert "drift: water_level_m" in verdict.reason
    assert all(not report.verdicts[(f"g{i}", "water_level_m")].drifting for i in (0, 2, 3))
    assert not report.unjudged


def test_an_offset_within_the_tolerance_is_not_drift() -> None:
    # After one hour at 0.07 m/h the hour's median gap is ~0.035 m: inside 0.1 m.
    report = judge(gauges(3, 1, {"g1": 0.07}).means(), places(3), CFG)
    assert report.verdicts and not report.drifting


def test_a_whole_area_rising_together_is_not_drift() -> None:
    # A flash flood: every gauge 1.1 m up at once, half an hour before the end.
    report = judge(gauges(3, 3, rise=(2.5 * 3600, 1.1)).means(), places(3), CFG)
    assert len(report.verdicts) == 3 and not report.drifting


def test_a_fast_rise_read_at_different_moments_of_five_minute_buckets_is_not_drift() -> None:
    # At a 5 min cadence one gauge reads just after the rise, the others just before: one
    # bucket's gap is the whole rise; the hour's median gap is not.
    means = BucketMeans(300, 3600)
    for i, phase in enumerate((10.0, 150.0, 290.0)):
        t = phase
        while t < 3 * 3600:
            rise = 1.1 if t >= 2 * 3600 + 100 else 0.0
            means.add(f"g{i}", "water_level_m", T0 + t, level(t) + rise)
            t += 300
    report = judge(means.means(), places(3), CFG)
    assert len(report.verdicts) == 3 and not report.drifting


def test_a_gauge_with_one_neighbour_or_none_is_left_unjudged() -> None:
    # Two gauges drifting apart: one of them drifts, but which cannot be told, so neither
    # is flagged (that would flag a healthy gauge half the time); a lone gauge likewise.
    pair = judge(gauges(2, 3, {"g1": 0.2}).means(), places(2), CFG)
    assert not pair.verdicts
    assert pair.unjudged == {("g0", "water_level_m"), ("g1", "water_level_m")}
    alone = judge(gauges(1, 3, {"g0": 0.2}).means(), places(1), CFG)
    assert not alone.verdicts and alone.unjudged == {("g0", "water_level_m")}


def test_neighbours_in_another_area_or_of_another_kind_do_not_count() -> None:
    means = gauges(3, 3, {"g1": 0.2}).means()
    split: dict[str, tuple[str, Kind]] = {
        "g0": ("stueng-hav", "flood"),
        "g1": ("stueng-hav", "flood"),
        "g2": ("otres", "flood"),
    }
    report = judge(means, split, CFG)
    assert not report.verdicts and len(report.unjudged) == 3


def test_metrics_without_a_drift_test_are_not_judged() -> None:
    means = {(f"g{i}", "rain_mm_h"): {T0: float(i * 50)} for i in range(3)}
    report = judge(means, places(3), CFG)
    assert not report.verdicts and not report.unjudged


def test_the_evaluator_stores_a_drifting_series_values_suspect_until_cleared() -> None:
    evaluator = QualityEvaluator(CFG)

    def flag_at(t_s: float) -> int:
        r = Reading.model_validate(
            {
                "device_id": "g1",
                "kind": "flood",
                "time": datetime.fromtimestamp(T0 + t_s, UTC),
                "received_at": datetime.fromtimestamp(T0 + t_s, UTC),
                "metrics": {"water_level_m": 1.0},
            }
        )
        ev = evaluator.evaluate([r])
        evaluator.commit(ev)
        return ev.flags[("g1", "water_level_m", r.time)]

    assert flag_at(0) != Flag.SUSPECT
    report = judge(gauges(3, 3, {"g1": 0.07}).means(), places(3), CFG)
    evaluator.set_drift({k: v.reason for k, v in report.drifting.items()})
    assert flag_at(10) == Flag.SUSPECT
    evaluator.set_drift({})
    assert flag_at(20) != Flag.SUSPECT


def test_bucket_means_keep_only_the_window() -> None:
    means = BucketMeans(300, 3600)
    means.add("g0", "water_level_m", T0, 1.0)
    means.add("g0", "water_level_m", T0 + 100, 2.0)
    assert means.means() == {("g0", "water_level_m"): {T0 - T0 % 300: 1.5}}
    means.add("g0", "water_level_m", T0 + timedelta(hours=2).total_seconds(), 3.0)
    assert list(means.means()[("g0", "water_level_m")].values()) == [3.0]
