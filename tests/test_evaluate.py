"""`citywatch evaluate`: the alert and flag scoring on hand-made inputs, and one short seeded
run through the real stack whose counts are checked at the source."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.common.settings import load_settings
from services.evaluate.flags import FaultScore, MetricScore, QualityScore
from services.evaluate.runner import EvaluateOptions, evaluate_one
from services.evaluate.scoring import Expected, Raised, hard_rule_breaches, score_alerts

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def ev(alert: str, state: str, severity: str, minute: float, area: str = "a") -> Raised:
    return Raised(alert, "flood-level", area, f"g-{alert}", state, severity, T0 + M * minute)


def exp(severity: str, minute: float, below: float | None = None, area: str = "a") -> Expected:
    return Expected(
        "flood-level",
        area,
        severity,
        T0 + M * minute,
        None,
        None if below is None else T0 + M * below,
    )


def test_one_alert_escalating_through_expected_levels_matches_each_with_its_delay() -> None:
    score = score_alerts(
        [exp("watch", 10), exp("warning", 20), exp("danger", 30)],
        [
            ev("1", "firing", "watch", 12),
            ev("1", "escalated", "warning", 20),
            ev("1", "escalated", "danger", 35),
        ],
    )
    assert not score.missed and not score.false and not score.duplicates and not score.split
    assert score.delays() == [2 * M, timedelta(0), 5 * M]


def test_an_alert_opening_straight_at_danger_answers_the_lower_levels_crossed_before() -> None:
    score = score_alerts(
        [exp("watch", 10), exp("warning", 12), exp("danger", 14)], [ev("1", "firing", "danger", 15)]
    )
    assert not score.missed
    assert sorted(score.delays()) == [M, 3 * M, 5 * M]


def test_a_second_gauge_opening_its_own_alert_in_the_area_is_a_duplicate() -> None:
    score = score_alerts(
        [exp("watch", 10)], [ev("1", "firing", "watch", 10), ev("2", "firing", "watch", 11)]
    )
    assert len(score.matched) == 1 and [r.alert_id for r in score.duplicates] == ["2"]


def test_raised_again_without_the_truth_falling_below_is_a_flap_and_with_it_is_not() -> None:
    flapping = score_alerts(
        [exp("watch", 10)],
        [
            ev("1", "firing", "watch", 10),
            ev("1", "resolved", "watch", 20),
            ev("2", "firing", "watch", 30),
        ],
    )
    assert len(flapping.flaps) == 1 and not flapping.false
    twice = score_alerts(
        [exp("watch", 10, below=25), exp("watch", 40)],
        [
            ev("1", "firing", "watch", 10),
            ev("1", "resolved", "watch", 30),
            ev("2", "firing", "watch", 41),
        ],
    )
    assert not twice.flaps and not twice.missed


def test_alerts_nothing_asked_for_are_false_by_severity_and_break_the_normal_day() -> None:
    score = score_alerts(
        [], [ev("1", "firing", "warning", 5, area="b"), ev("2", "firing", "advisory", 9, area="c")]
    )
    assert score.false_by_severity() == {"warning": 1, "advisory": 1}
    breaches = hard_rule_breaches("normal-day", QualityScore(), score, interval=5 * M)
    assert breaches == [
        "normal day: 1 alerts at warning or above",
        "normal day: 1 alerts below warning with no true condition",
    ]


def test_a_late_or_missing_flood_alert_breaks_the_storm_rules() -> None:
    score = score_alerts(
        [exp("watch", 10), exp("watch", 100, area="z")], [ev("1", "firing", "watch", 22)]
    )
    assert len(score.missed) == 1
    breaches = hard_rule_breaches("flash-flood", QualityScore(), score, interval=5 * M)
    assert breaches[0] == "1 of 2 expected flood alerts not raised"
    assert breaches[1].startswith("1 flood alerts off their crossing by more than one interval")


def test_false_flags_over_2_percent_or_spikes_missed_break_the_hard_rules() -> None:
    quality = QualityScore(
        metrics=(MetricScore("water.ph", 1000, 21), MetricScore("water.temperature_c", 1000, 20)),
        faults=(FaultScore("spike", "values", 20, 18), FaultScore("stuck", "episodes", 10, 10)),
    )
    breaches = hard_rule_breaches("haze-episode", quality, score_alerts([], []), interval=5 * M)
    assert breaches == [
        "false flags water.ph: 2.1% of fault-free readings (> 2 %)",
        "spike caught 90% of 20 values (< 95 %)",
    ]


@pytest.mark.stack
@pytest.mark.timeout(600)
def test_evaluate_scores_every_stored_reading_of_a_short_seeded_normal_day() -> None:
    settings = load_settings()
    opts = EvaluateOptions(duration=timedelta(hours=1), devices=16, seed=4, speed=0)
    result = asyncio.run(evaluate_one(settings, opts, "normal-day", timedelta(minutes=5)))
    # Every row the run stored was scored, each once, against a label or as fault-free.
    q = result.quality
    assert result.rows_stored > 0
    assert q.rows == result.rows_stored
    assert sum(m.fault_free for m in q.metrics) + q.faulty == q.rows
    # 16 devices report 12 times in an hour, 3 to 8 sensor metrics and battery and rssi each.
    assert 0.8 * 16 * 12 * 5 < q.rows <= 16 * 12 * 10
    # A calm hour: no flood level is expected, and the table names every flood expectation.
    assert not [e for e in result.alerts.expected if e.rule == "flood-level"]
    assert result.messages > 0
