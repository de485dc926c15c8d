"""Unit tests of the alert rules file and the pure engine: each rule type raises once,
escalates, resolves, does not flap; replays, stale readings and failed values raise nothing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import Reading
from schemas.city import load_city
from services.alerts.engine import (
    Evaluation,
    Key,
    Parked,
    RuleState,
    Transition,
    aqi,
    evaluate,
    live_heads,
    nowcast,
    rain_mm,
    tick,
)
from services.alerts.rules import LevelsRule, RuleSet, check_areas, load_rules, parse_rules
from services.common.errors import ConfigError
from services.common.settings import Settings
from services.quality import QualityEvaluator, load_quality_config

SHIPPED_RULES = Path(__file__).resolve().parents[1] / "deploy" / "alerts" / "rules.yaml"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TITLES = 'title_en: "x {value} {unit} {device} {area} {severity}"\n    title_km: "x"\n'


def ruleset(body: str, stale_after: str = "30m") -> RuleSet:
    return parse_rules(f"stale_after: {stale_after}\nrules:\n{body}")


def rule(text: str) -> str:
    """One rule's YAML lines (indented under `rules:`), with titles added."""
    lines = text.strip().splitlines()
    return "  - " + "\n    ".join(lines) + "\n    " + TITLES


def reading(device: str, minute: float, kind: str = "flood", **metrics: float) -> Reading:
    at = T0 + timedelta(minutes=minute)
    return Reading(device_id=device, kind=kind, time=at, received_at=at, metrics=metrics)  # type: ignore[arg-type]


class Engine:
    """The engine with its state carried between batches, as the service does."""

    def __init__(self, rules: RuleSet, areas: Mapping[str, str | None] | None = None) -> None:
        self.rules = rules
        self.state: dict[Key, RuleState] = {}
        self.heads: dict[str, datetime] = {}
        self.ahead: dict[str, dict[str, datetime]] = {}
        self.parked: Parked = {}
        self.areas = dict(areas or {})
        self.log: list[Transition] = []

    def feed(self, *readings: Reading, **kw: Any) -> Evaluation:
        ev = evaluate(
            self.rules, self.state, list(readings), heads=self.heads, areas=self.areas,
            ahead=self.ahead, parked=self.parked, **kw,
        )  # fmt: skip
        self.log += ev.transitions
        return ev

    def series(
        self,
        device: str,
        values: list[float],
        start: float = 0,
        step: float = 5,
        metric: str = "water_level_m",
        kind: str = "flood",
    ) -> list[Transition]:
        before = len(self.log)
        for i, v in enumerate(values):
            self.feed(reading(device, start + i * step, kind, **{metric: v}))
        return self.log[before:]

    def restart(self) -> None:
        """What a restart keeps: the JSON stored per (rule, subject) and the heads."""
        self.state = {
            k: RuleState.from_json(st.cursor, st.to_json()) for k, st in self.state.items()
        }


def kinds(ts: list[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, t.severity) for t in ts]


# -- the rules file -----------------------------------------------------------------------


def test_shipped_rules_cover_every_kind_and_rule_type() -> None:
    rules = load_rules(SHIPPED_RULES)
    assert {r.type for r in rules.rules} == {
        "threshold",
        "rate_of_change",
        "levels",
        "aqi",
        "combined",
        "offline",
        "stuck",
    }
    covered = {r.kind for r in rules.rules} | {
        c.kind for r in rules.rules for c in getattr(r, "conditions", ())
    }
    assert {"water", "air", "flood", "litter"} <= covered
    text = SHIPPED_RULES.read_text(encoding="utf-8")
    for source in ("WHO", "EPA", "PLACEHOLDER"):
        assert source in text


def test_a_bad_rules_file_is_refused_with_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        + rule(
            "id: ok\nkind: flood\nmetric: water_level_m\nthreshold: 2\nclear: 1\nseverity: watch"
        )
        + rule(
            "id: bad\ntype: levels\nkind: flood\nmetric: water_level_m\n"
            "levels: {watch: 3.0, warning: 2.0}"
        )
        + rule("id: late\ntype: offline\nafter: soon\nseverity: watch"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    msg = str(err.value)
    assert "line 14" in msg and "levels must rise" in msg
    assert "line 19" in msg and "'soon' is not a duration" in msg
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_rules("rules: [\n")
    with pytest.raises(ConfigError, match="duplicate rule ids"):
        ruleset(rule("id: a\ntype: offline\nafter: 1m\nseverity: watch") * 2)


def test_a_rule_without_type_is_a_threshold_rule() -> None:
    rs = ruleset(
        rule("id: t\nkind: flood\nmetric: water_level_m\nthreshold: 2\nclear: 1\nseverity: watch")
    )
    assert rs.rules[0].type == "threshold"


# -- threshold -----------------------------------------------------------------------------

THRESHOLD = rule(
    "id: high\nkind: flood\nmetric: water_level_m\nthreshold: 2.5\nclear: 2.2\n"
    "for: 10m\nhold: 10m\nseverity: warning"
)


def test_threshold_opens_once_after_its_duration_and_resolves_after_its_hold() -> None:
    eng = Engine(ruleset(THRESHOLD))
    # 5-minute readings: over at 5, 10 (5 min: not yet), 15 (10 min: opens)
    assert kinds(eng.series("g", [2.0, 2.6, 2.7], step=5)) == []
    assert kinds(eng.series("g", [2.8, 3.0], start=15)) == [("firing", "warning")]
    # hovering between clear and threshold keeps it open; dipping under clear only briefly
    # (less than the hold) resolves nothing
    assert eng.series("g", [2.4, 2.3, 2.1, 2.4, 2.1, 2.0], start=25) == []
    [resolved] = eng.series("g", [2.0, 1.9], start=55)
    assert resolved.kind == "resolved" and resolved.alert_id == eng.log[0].alert_id


def test_threshold_value_hovering_at_the_level_does_not_flap() -> None:
    eng = Engine(
        ruleset(
            rule(
                "id: h\nkind: flood\nmetric: water_level_m\nthreshold: 2.5\n"
                "clear: 2.2\nseverity: watch"
            )
        )
    )
    # two readings over open it (persistence); then hovering neither resolves nor reopens
    eng.series("g", [2.51, 2.52] + [2.49, 2.51, 2.48, 2.52, 2.49, 2.51, 2.3, 2.5] * 3)
    assert kinds(eng.log) == [("firing", "watch")]


def test_threshold_duration_is_reset_by_a_value_back_under() -> None:
    eng = Engine(ruleset(THRESHOLD))
    eng.series("g", [2.6, 2.0, 2.6, 2.0, 2.6, 2.0, 2.6])
    assert eng.log == []


def test_replayed_and_late_readings_change_nothing() -> None:
    eng = Engine(ruleset(THRESHOLD))
    batch = [reading("g", m, water_level_m=v) for m, v in [(0, 2.6), (5, 2.7), (10, 2.8)]]
    eng.feed(*batch)
    assert kinds(eng.log) == [("firing", "warning")]
    again = eng.feed(*batch)
    assert again.transitions == [] and again.changed == {}
    eng.feed(reading("g", 7, water_level_m=1.0))  # late: older than the cursor
    assert len(eng.log) == 1


def test_state_survives_a_restart_through_its_json() -> None:
    eng = Engine(ruleset(THRESHOLD))
    eng.series("g", [2.6, 2.7])  # pending: 5 of 10 minutes
    eng.restart()
    assert kinds(eng.series("g", [2.8], start=10)) == [("firing", "warning")]
    eng.restart()
    assert kinds(eng.series("g", [1.0, 1.0, 1.0], start=15)) == [("resolved", "warning")]


# -- levels --------------------------------------------------------------------------------

LEVELS = rule(
    "id: stages\ntype: levels\nkind: flood\nmetric: water_level_m\n"
    "levels: {watch: 2.0, warning: 2.5, danger: 3.0}\n"
    "area_levels: {low-town: {watch: 1.3, warning: 1.6, danger: 1.9}}\n"
    "clear_margin: 0.1\nhold: 10m"
)


CORROBORATED = rule(
    "id: stages\ntype: levels\nkind: flood\nmetric: water_level_m\n"
    "levels: {watch: 2.0, warning: 2.5, danger: 3.0}\n"
    "corroborate: {window: 30m, tolerance: 0.5}\nhold: 10m"
)
NORTH = {"drifty": "north", "g2": "north", "g3": "north", "lone": "south"}


def rounds(eng: Engine, start: float, **levels: list[float]) -> None:
    """Feed the gauges' readings round by round, 5 minutes apart, in time order."""
    for i in range(max(len(v) for v in levels.values())):
        eng.feed(*(reading(d, start + 5 * i, water_level_m=v[i]) for d, v in levels.items()))


def test_a_drifting_gauge_alone_raises_no_flood_warning_its_areas_other_gauges_contradict() -> None:
    eng = Engine(ruleset(CORROBORATED), areas=NORTH)
    # the drifting gauge reads warning levels; its two neighbours read 1.0 m: contradicted
    rounds(eng, 0, drifty=[2.6, 2.7, 2.8, 2.9], g2=[1.0] * 4, g3=[1.0] * 4)
    assert eng.log == []
    # a real flood: every gauge of the area rises; the drifting one's warning now stands
    # (its danger does not: its neighbours read well below the danger level)
    rounds(eng, 20, drifty=[2.9, 3.0, 3.0], g2=[2.2, 2.3, 2.4], g3=[2.1, 2.2, 2.3])
    assert [(t.kind, t.device_id, t.severity) for t in eng.log if t.device_id == "drifty"] == [
        ("firing", "drifty", "warning")
    ]
    # a gauge with no other reporting gauge in its area is judged alone
    lone = Engine(ruleset(CORROBORATED), areas=NORTH)
    lone.series("lone", [2.6, 2.7])
    assert kinds(lone.log) == [("firing", "warning")]
    # without corroboration the same drift opens a warning: the option is what stops it
    plain = Engine(ruleset(LEVELS), areas=NORTH)
    rounds(plain, 0, drifty=[2.6, 2.7], g2=[1.0] * 2, g3=[1.0] * 2)
    assert [(t.device_id, t.severity) for t in plain.log] == [("drifty", "warning")]


def test_corroboration_forgets_neighbours_silent_longer_than_its_window() -> None:
    eng = Engine(ruleset(CORROBORATED), areas=NORTH)
    rounds(eng, 0, drifty=[1.0], g2=[1.0])
    # g2 falls silent; an hour later the drifting gauge has no recent neighbour: alone
    rounds(eng, 60, drifty=[2.6, 2.7])
    assert [(t.kind, t.device_id) for t in eng.log] == [("firing", "drifty")]


PER_AREA = rule(
    "id: stages\ntype: levels\nkind: flood\nmetric: water_level_m\nper: area\n"
    "levels: {watch: 2.0, warning: 2.5, danger: 3.0}\n"
    "corroborate: {window: 30m, tolerance: 0.3}\nclear_margin: 0.1\nhold: 10m"
)


def area_log(eng: Engine) -> list[tuple[str, str, str | None, str | None]]:
    return [(t.kind, t.severity, t.device_id, t.area) for t in eng.log]


def test_an_areas_gauges_raise_one_alert_that_escalates_and_deescalates_as_one() -> None:
    eng = Engine(ruleset(PER_AREA), areas=NORTH)
    rounds(
        eng,
        0,
        g2=[1.0, 2.1, 2.6, 3.1, 3.2, 2.7, 2.6, 2.6, 2.6, 1.5, 1.4, 1.4, 1.4],
        g3=[1.0, 2.0, 2.5, 2.9, 3.0, 2.6, 2.5, 2.5, 2.5, 1.4, 1.3, 1.3, 1.3],
    )
    assert area_log(eng) == [
        ("firing", "watch", None, "north"),
        ("escalated", "warning", None, "north"),
        ("escalated", "danger", None, "north"),
        ("deescalated", "warning", None, "north"),  # below 2.9 on both gauges for 10 min
        ("resolved", "warning", None, "north"),
    ]
    assert len({t.alert_id for t in eng.log}) == 1
    # each stage opened on the round that crossed it (corroborated by the other gauge)
    assert [t.trigger_at for t in eng.log[:3]] == [T0 + timedelta(minutes=m) for m in (5, 10, 15)]
    assert [t.trigger_value for t in eng.log[:3]] == [2.1, 2.6, 3.1]
    # a device without an area keeps its own alert
    eng.series("nowhere", [2.6, 2.7], start=100)
    assert [(t.device_id, t.area) for t in eng.log[5:]] == [("nowhere", None)]


def test_an_areas_stage_opens_on_the_first_reading_another_gauge_corroborates() -> None:
    eng = Engine(ruleset(PER_AREA), areas=NORTH)
    rounds(eng, 0, g2=[1.0], g3=[1.0])
    # g2 crosses warning; g3, read in the same round, is 0.2 m below: two samples agree
    eng.feed(reading("g3", 5, water_level_m=2.3), reading("g2", 5, water_level_m=2.6))
    assert area_log(eng) == [("firing", "warning", None, "north")]
    assert eng.log[0].trigger_at == T0 + timedelta(minutes=5)
    # the same crossing with the neighbour still at 1.0 m: contradicted, nothing opens
    slow = Engine(ruleset(PER_AREA), areas=NORTH)
    rounds(slow, 0, g2=[1.0, 2.6], g3=[1.0, 1.0])
    assert slow.log == []


def test_a_neighbour_read_minutes_earlier_in_a_fast_rise_corroborates_by_its_own_rise() -> None:
    eng = Engine(ruleset(PER_AREA), areas=NORTH)
    # g3 reads at :00 and :05, rising 0.18 m/min; g2 at :04 and :09 crosses warning (2.5).
    # g3's 1.9 m, read 4 minutes before, is below 2.5 - 0.3, but its own rise carries it
    # to 2.62 m by :09: the area's warning opens on g2's crossing reading.
    eng.feed(reading("g3", 0, water_level_m=1.0), reading("g2", 4, water_level_m=1.2))
    eng.feed(reading("g3", 5, water_level_m=1.9), reading("g2", 9, water_level_m=2.6))
    assert area_log(eng) == [("firing", "warning", None, "north")]
    assert eng.log[0].trigger_at == T0 + timedelta(minutes=9)
    # control: a neighbour flat at 1.9 m supports watch (2.0 - 0.3) but contradicts warning
    flat = Engine(ruleset(PER_AREA), areas=NORTH)
    flat.feed(reading("g3", 0, water_level_m=1.9), reading("g2", 4, water_level_m=1.2))
    flat.feed(reading("g3", 5, water_level_m=1.9), reading("g2", 9, water_level_m=2.6))
    assert area_log(flat) == [("firing", "watch", None, "north")]


def test_a_lone_gauges_smooth_rise_opens_on_the_crossing_a_spike_from_far_below_waits() -> None:
    # "lone" is its area's only gauge. Its previous reading, 2.3 m, was within the 0.3 m
    # tolerance of warning (2.5) and the rise passed the quality checks: the crossing
    # reading itself opens warning (watch's run began at 2.3 m already, a reading earlier).
    eng = Engine(ruleset(PER_AREA), areas=NORTH)
    eng.series("lone", [1.0, 1.9, 2.3, 2.6])
    assert area_log(eng)[-1] == ("escalated", "warning", None, "south")
    assert eng.log[-1].trigger_at == T0 + timedelta(minutes=15)
    # a spike from far below (1.0 -> 2.6 m): its previous reading corroborates nothing, the
    # next reading must confirm it
    spike = Engine(ruleset(PER_AREA), areas=NORTH)
    spike.series("lone", [1.0, 1.0, 2.6])
    assert spike.log == []
    spike.series("lone", [2.6], start=15)
    assert area_log(spike) == [("firing", "warning", None, "south")]
    # a spike the quality checks could not judge (their window was empty: first sight,
    # a restart) from a river at watch, 2.3 m, to 3.4 m: its own 2.3 m is within the
    # tolerance of warning, but the jump is not a rise it was on: no warning on it
    # (storm at 10 s: a 4.38 m spike raised Mittapheap's warning from 1.38 m)
    jump = Engine(ruleset(PER_AREA), areas=NORTH)
    jump.series("lone", [2.3, 2.3, 3.4])
    assert area_log(jump) == [("firing", "watch", None, "south")]
    # a suspect rise (the rate-of-change test) is no smooth rise: it waits as well
    sus = Engine(ruleset(PER_AREA), areas=NORTH)
    sus.series("lone", [1.0, 2.3])
    crossing = reading("lone", 10, water_level_m=2.6)
    sus.feed(crossing, flags={("lone", "water_level_m", crossing.time): 3})
    assert [t.severity for t in sus.log] == ["watch"]


def test_a_lone_drifting_gauge_its_areas_gauges_contradict_never_opens_the_areas_alert() -> None:
    eng = Engine(ruleset(PER_AREA), areas=NORTH)
    # persisting for an hour does not help: its neighbours read 1.0 m every round
    rounds(eng, 0, drifty=[2.6 + 0.02 * i for i in range(12)], g2=[1.0] * 12, g3=[1.0] * 12)
    assert eng.log == []
    # control: the same rule without corroboration opens the area's alert on the drift
    plain = Engine(
        ruleset(PER_AREA.replace("corroborate: {window: 30m, tolerance: 0.3}\n    ", "")),
        areas=NORTH,
    )
    rounds(plain, 0, drifty=[2.6, 2.7], g2=[1.0] * 2, g3=[1.0] * 2)
    assert area_log(plain) == [("firing", "warning", None, "north")]


def test_an_areas_only_reporting_gauge_needs_two_readings_at_the_stage() -> None:
    eng = Engine(ruleset(PER_AREA), areas=NORTH)
    rounds(eng, 0, lone=[1.0, 2.6])
    assert eng.log == []  # one sample, nobody to corroborate it
    rounds(eng, 10, lone=[2.7])
    assert area_log(eng) == [("firing", "warning", None, "south")]
    assert (eng.log[0].trigger_at, eng.log[0].trigger_value) == (T0 + timedelta(minutes=5), 2.6)
    # a one-reading spike of the lone gauge opens nothing
    spike = Engine(ruleset(PER_AREA), areas=NORTH)
    rounds(spike, 0, lone=[1.0, 3.4, 1.0, 1.0])
    assert spike.log == []


def test_levels_one_alert_escalates_and_deescalates_in_order() -> None:
    eng = Engine(ruleset(LEVELS))
    # each stage is entered by two readings (persistence: min_readings 2 by default)
    ts = eng.series(
        "g",
        [
            *(1.5, 2.1, 2.2, 2.6, 2.7, 3.1, 3.2, 2.95, 2.92, 2.85),
            *(2.6, 2.4, 2.3, 2.2, 1.8, 1.7, 1.6, 1.5),
        ],
    )
    assert [(t.kind, t.severity, t.previous_severity) for t in ts] == [
        ("firing", "watch", None),
        ("escalated", "warning", "watch"),
        ("escalated", "danger", "warning"),
        ("deescalated", "warning", "danger"),  # 2.85 < 2.9, held for 10 minutes
        ("deescalated", "watch", "warning"),
        ("resolved", "watch", None),
    ]
    assert len({t.alert_id for t in ts}) == 1
    assert [t.threshold for t in ts[:3]] == [2.0, 2.5, 3.0]
    # the trigger is the reading that crossed the level, not the one that confirmed it
    assert [t.trigger_value for t in ts[:3]] == [2.1, 2.6, 3.1]
    assert [t.trigger_at for t in ts[:3]] == [T0 + timedelta(minutes=m) for m in (5, 15, 25)]
    assert [t.value for t in ts[:3]] == [2.2, 2.7, 3.2]


def test_levels_jump_straight_to_danger_and_use_the_areas_own_levels() -> None:
    eng = Engine(ruleset(LEVELS), areas={"town-gauge": "low-town"})
    assert kinds(eng.series("g", [1.0, 3.3, 3.4])) == [("firing", "danger")]
    assert kinds(eng.series("town-gauge", [1.2, 1.7, 1.75])) == [("firing", "warning")]


def test_levels_hovering_at_a_stage_does_not_flap_between_stages() -> None:
    eng = Engine(ruleset(LEVELS))
    eng.series("g", [2.51, 2.52] + [2.51, 2.49, 2.52, 2.45, 2.5, 2.47] * 4)
    assert kinds(eng.log) == [("firing", "warning")]


# -- rate of change --------------------------------------------------------------------------

RATE = rule(
    "id: rise\ntype: rate_of_change\nkind: flood\nmetric: water_level_m\nrate_per_hour: 0.3\n"
    "clear_per_hour: 0.1\nwindow: 30m\nseverity: watch"
)


def test_rate_of_change_opens_on_a_fast_rise_once_and_resolves_when_it_levels_off() -> None:
    eng = Engine(ruleset(RATE))
    rising = [1.0 + 0.05 * i for i in range(12)]  # 0.05 per 5 min = 0.6 m/h
    flat = [rising[-1]] * 10
    ts = eng.series("g", [1.0] * 6 + rising + flat)
    assert kinds(ts) == [("firing", "watch"), ("resolved", "watch")]
    assert 0.3 <= ts[0].value <= 0.61


def test_rate_of_change_ignores_a_slow_tide() -> None:
    eng = Engine(ruleset(RATE))
    eng.series("g", [1.0 + 0.01 * i for i in range(40)])  # 0.12 m/h
    assert eng.log == []


# -- air quality index -------------------------------------------------------------------------


def test_aqi_follows_the_2024_pm25_breakpoints() -> None:
    assert [aqi("pm25_ugm3", c) for c in (0, 9.0, 9.1, 35.4, 35.5, 55.4, 55.5, 125.4)] == [
        0,
        50,
        51,
        100,
        101,
        150,
        151,
        200,
    ]
    assert [aqi("pm25_ugm3", c) for c in (125.5, 225.4, 225.5, 325.4)] == [201, 300, 301, 500]
    assert [aqi("pm10_ugm3", c) for c in (54, 55, 154.9, 155, 254, 255, 355, 425)] == [
        50,
        51,
        100,
        101,
        150,
        151,
        201,
        301,
    ]


def test_nowcast_matches_epas_worked_example_and_needs_two_of_three_hours() -> None:
    # AirNow's worked example ("How is the NowCast algorithm calculated?"): w* = 10/90
    # -> w = 0.5, NowCast 17.4 µg/m³.
    hours = [13.0, 16, 10, 21, 74, 64, 53, 82, 90, 75, 80, 50]
    assert nowcast(hours, "pm25_ugm3") == 17.4
    assert nowcast([None, 20.0, 30.0], "pm25_ugm3") == pytest.approx(24.0)
    assert nowcast([50.0, None, None, 50.0], "pm25_ugm3") is None


AQI_RULE = rule("id: aqi\ntype: aqi\naveraging: nowcast\nhold: 1h")


def air(eng: Engine, device: str, hour: float, pm25: float, pm10: float = 10.0) -> None:
    for minute in (0, 20, 40):
        eng.feed(reading(device, hour * 60 + minute, "air", pm25_ugm3=pm25, pm10_ugm3=pm10))


def test_aqi_rule_is_one_alert_whose_severity_follows_the_category() -> None:
    eng = Engine(ruleset(AQI_RULE))
    for h, pm in enumerate([5, 5, 40, 60, 60, 60, 150, 150, 150, 150, 20, 5, 5, 5, 5, 5, 5]):
        air(eng, "a", h, pm)
    air(eng, "a", 17, 5)
    assert [(t.kind, t.category) for t in eng.log][:3] == [
        ("firing", "unhealthy_sensitive"),
        ("escalated", "unhealthy"),
        ("escalated", "very_unhealthy"),
    ]
    assert eng.log[-1].kind == "resolved"
    assert len({t.alert_id for t in eng.log}) == 1
    assert [t.severity for t in eng.log[:3]] == ["advisory", "watch", "warning"]


AQI_AREA = rule("id: aqi\ntype: aqi\naveraging: nowcast\nper: area\nhold: 1h")


def test_an_areas_air_stations_share_one_aqi_alert_at_the_worst_stations_category() -> None:
    """Residents read one alert for their area: two stations crossing an hour apart raise
    one advisory (no second look-alike), the worse station escalates it, and it resolves
    only when every station of the area is clean again. A station without an area keeps
    its own alert."""
    eng = Engine(ruleset(AQI_AREA), areas={"a1": "port", "a2": "port", "lone": None})
    a1 = [5, 5, 45, 45, 70, 70, 70, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    a2 = [5, 5, 5, 45, 45, 45, 45, 45, 45, 45, 45, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    for h, (p1, p2) in enumerate(zip(a1, a2, strict=True)):
        air(eng, "a1", h, p1)
        air(eng, "a2", h, p2)
    assert {t.alert_id for t in eng.log} == {eng.log[0].alert_id}  # one alert throughout
    assert {(t.device_id, t.area) for t in eng.log} == {(None, "port")}
    assert [(t.kind, t.category) for t in eng.log] == [
        ("firing", "unhealthy_sensitive"),
        ("escalated", "unhealthy"),  # a1's 70 µg/m³
        ("deescalated", "unhealthy_sensitive"),  # a1 is clean, a2 is still at 45
        ("resolved", "moderate"),  # a2 too: only now
    ]
    resolved_at = eng.log[-1].at
    assert resolved_at > T0 + timedelta(hours=11)  # after a2's last 45 µg/m³ hour
    for h in range(20, 24):
        air(eng, "lone", h, 45)
    assert [(t.device_id, t.kind) for t in eng.log[4:]] == [("lone", "firing")]


def test_aqi_24h_needs_eighteen_hours_of_data() -> None:
    eng = Engine(ruleset(rule("id: aqi24\ntype: aqi\naveraging: 24h")))
    for h in range(18):
        air(eng, "a", h, 100)
    assert eng.log == []
    air(eng, "a", 18, 100)
    assert kinds(eng.log) == [("firing", "watch")]  # 24-hour average 100 -> Unhealthy


def test_aqi_uses_pm10_when_it_is_worse() -> None:
    eng = Engine(ruleset(AQI_RULE))
    for h in range(4):
        air(eng, "a", h, 5, pm10=300)
    assert [t.category for t in eng.log] == ["unhealthy"]


# -- combined ----------------------------------------------------------------------------------

COMBINED = rule(
    "id: storm\ntype: combined\nconditions:\n"
    "  - {kind: flood, metric: rain_mm_h, above: 30}\n"
    "  - {kind: flood, metric: water_level_m, rising_per_hour: 0.2}\n"
    "window: 1h\nhold: 30m\nseverity: warning"
)


def test_combined_rule_raises_one_alert_per_area_when_all_conditions_meet() -> None:
    areas = {"rain-1": "north", "gauge-1": "north", "gauge-2": "north", "rain-9": "south"}
    eng = Engine(ruleset(COMBINED), areas=areas)
    eng.series("rain-9", [50.0], metric="rain_mm_h")  # rain in another area: no alert
    eng.series("gauge-1", [1.0, 1.0], start=0)
    assert eng.log == []
    eng.series("rain-1", [45.0], start=10, metric="rain_mm_h")
    assert eng.log == []  # rain alone
    # rising 0.3 m/h and more over 30 minutes (the condition's default span)
    eng.series("gauge-1", [1.05, 1.1, 1.15, 1.2], start=15)
    eng.series("gauge-2", [2.0, 2.1], start=36)  # a second gauge in the same area
    [fired] = eng.log
    assert fired.kind == "firing" and fired.device_id is None and fired.area == "north"
    # the rain stops; an hour later the area's conditions no longer meet: resolved after hold
    eng.series("rain-1", [0.0] * 20, start=30, metric="rain_mm_h")
    eng.series("gauge-1", [1.1] * 20, start=31)
    assert kinds(eng.log) == [("firing", "warning"), ("resolved", "warning")]


def test_gauge_noise_between_two_readings_is_not_a_rising_river() -> None:
    # A gauge's 1-2 cm noise between readings 5 minutes apart is 0.24 m/h: on a normal
    # day it met "rising 0.2 m/h" several times, and one heavy-rain reading then made a
    # warning. The rise is judged over at least 30 minutes: noise averages out there.
    areas = {"rain-1": "north", "gauge-1": "north"}
    eng = Engine(ruleset(COMBINED), areas=areas)
    noise = [0.70, 0.72, 0.70, 0.72, 0.70, 0.72, 0.70, 0.72, 0.70, 0.72, 0.70, 0.72]
    eng.series("gauge-1", noise, start=0)
    eng.series("rain-1", [45.0, 45.0], start=50, metric="rain_mm_h")
    eng.series("gauge-1", [0.70, 0.72], start=60)
    assert eng.log == []


# -- silence -------------------------------------------------------------------------------------

OFFLINE = rule("id: offline\ntype: offline\nafter: 30m\nseverity: advisory")


def test_offline_is_measured_against_the_streams_newest_reading_time() -> None:
    eng = Engine(ruleset(OFFLINE))
    eng.feed(reading("quiet", 0, water_level_m=1.0), reading("busy", 0, water_level_m=1.0))
    eng.series("busy", [1.0] * 6, start=5)  # up to minute 30: quiet silent 30 min
    assert [(t.kind, t.device_id) for t in eng.log] == [("firing", "quiet")]
    assert eng.log[0].value == 30.0
    eng.series("busy", [1.0] * 3, start=35)
    assert len(eng.log) == 1  # still offline: no second alert
    eng.feed(reading("quiet", 50, water_level_m=1.0))
    assert [(t.kind, t.device_id) for t in eng.log][-1] == ("resolved", "quiet")


def test_one_device_stamping_hours_ahead_moves_no_streams_clock() -> None:
    # "skewed" stamps its readings 7 h ahead (seed 1's ochheuteal-beach-water-0007); the
    # others report every 5 min. Its readings must not make them look silent or stale.
    eng = Engine(ruleset(OFFLINE + PLAIN))
    held = 0
    for m in range(0, 65, 5):
        ev = eng.feed(
            reading("a", m, water_level_m=1.0 if m < 50 else 2.6),
            reading("skewed", m + 7 * 60, water_level_m=1.0),
            reading("b", m, water_level_m=1.0),
        )
        held += ev.skewed
        assert ev.stale == 0  # b's readings, after the skewed one, are not stale
    assert eng.heads["0"] == T0 + timedelta(minutes=60)
    assert held == 13  # every skewed reading held and counted
    # no offline alert for a or b (nor the skewed device, heard at the stream's time);
    # a's threshold alert opened on its own readings, not held back as stale
    assert [(t.kind, t.rule.id, t.device_id) for t in eng.log] == [("firing", "p", "a")]


def test_a_skewed_devices_parked_readings_never_walk_its_stream_forward() -> None:
    # Seen in `citywatch evaluate` (haze, 5 min): after ~7 h of play the stream's clock came
    # within clock_skew of the skewed device's first parked reading; evaluating it moved
    # the head, which released the next one, and so on: the head ran 7 h ahead in one batch
    # and every other device of the partition was reported offline at once.
    eng = Engine(ruleset(OFFLINE))
    for m in range(0, 9 * 60, 5):
        eng.feed(
            reading("a", m, water_level_m=1.0),
            reading("skewed", m + 7 * 60, water_level_m=1.0),
            reading("b", m, water_level_m=1.0),
        )
        assert eng.heads["0"] == T0 + timedelta(minutes=m)  # a and b set the clock
    assert [(t.kind, t.device_id) for t in eng.log] == []


def test_readings_held_as_clock_skewed_are_evaluated_once_their_stream_catches_up() -> None:
    # The demo's case: its fleet's backfill is an hour behind the wall clock while a gauge
    # an engineer just installed reports live at danger. Held as skewed at first, its two
    # readings are evaluated when the backfill reaches them: the area's alert opens, at
    # the gauge's reading time, and no reading of it is lost.
    eng = Engine(ruleset(OFFLINE + PER_AREA), areas={"a": "north", "g": "south"})
    eng.series("a", [1.0] * 3, start=0)  # the backfill: head at minute 10
    ev = eng.feed(reading("g", 60, water_level_m=3.4), reading("g", 61, water_level_m=3.4))
    assert ev.skewed == 2 and eng.log == []  # held: the stream is an hour behind
    eng.series("a", [1.0] * 8, start=15)  # the backfill catches up to minute 50
    assert [(t.kind, t.severity, t.area) for t in eng.log] == [("firing", "danger", "south")]
    assert eng.log[0].at == T0 + timedelta(minutes=61)


def test_a_skewed_device_first_in_a_streams_first_batch_does_not_set_its_clock() -> None:
    eng = Engine(ruleset(OFFLINE))
    eng.feed(reading("skewed", 7 * 60, water_level_m=1.0), reading("a", 0, water_level_m=1.0))
    assert eng.heads["0"] == T0
    eng.series("a", [1.0] * 4, start=5)
    assert eng.log == [] and eng.heads["0"] == T0 + timedelta(minutes=20)


def test_a_whole_streams_jump_moves_its_clock_once_two_devices_confirm_it() -> None:
    # The gateway was down for 2 h (no buffer): both devices come back far ahead. The
    # first is held, the second confirms: the clock jumps and offline is not delayed.
    eng = Engine(ruleset(OFFLINE))
    eng.feed(reading("a", 0, water_level_m=1.0), reading("b", 0, water_level_m=1.0),
             reading("c", 0, water_level_m=1.0))  # fmt: skip
    first = eng.feed(reading("a", 120, water_level_m=1.0))
    assert first.skewed == 1 and eng.heads["0"] == T0
    eng.feed(reading("b", 120, water_level_m=1.0))
    assert eng.heads["0"] == T0 + timedelta(minutes=120)
    # c stays silent: offline at the stream's new clock (it was silent all along)
    assert ("firing", "c") in [(t.kind, t.device_id) for t in eng.log]
    # a lone device on its own stream after a silence moves its stream's clock by itself
    lone = Engine(ruleset(OFFLINE))
    lone.feed(reading("solo", 0, water_level_m=1.0), streams=["p9"])
    ev = lone.feed(reading("solo", 90, water_level_m=1.0), streams=["p9"])
    assert ev.skewed == 0 and lone.heads["p9"] == T0 + timedelta(minutes=90)


def test_offline_heads_are_per_stream() -> None:
    eng = Engine(ruleset(OFFLINE))
    eng.feed(reading("a", 0, water_level_m=1.0), streams=["p0"])
    eng.feed(reading("b", 120, water_level_m=1.0), streams=["p1"])  # another partition
    assert eng.log == []


STUCK = rule(
    "id: stuck\ntype: stuck\nkind: flood\nmetric: water_level_m\nafter: 1h\n"
    "tolerance: 0.001\nseverity: advisory"
)


def test_stuck_sensor_raises_once_and_resolves_when_the_value_moves() -> None:
    eng = Engine(ruleset(STUCK))
    eng.series("g", [1.0, 1.01, 1.02] + [1.5] * 14 + [1.52])
    assert kinds(eng.log) == [("firing", "advisory"), ("resolved", "advisory")]
    assert eng.log[0].at == T0 + timedelta(minutes=15 + 60)


# -- quality and staleness ---------------------------------------------------------------------

PLAIN = rule(
    "id: p\nkind: flood\nmetric: water_level_m\nthreshold: 2.5\nclear: 2.2\nseverity: warning"
)


def test_a_value_flagged_fail_is_not_evaluated() -> None:
    eng = Engine(ruleset(PLAIN))
    bad = reading("g", 0, water_level_m=9.0)
    ev = eng.feed(bad, flags={("g", "water_level_m", bad.time): 4})
    assert eng.log == [] and ev.skipped_quality == 1


def test_a_single_suspect_spike_opens_nothing_but_two_suspect_values_confirm() -> None:
    eng = Engine(ruleset(PLAIN))
    spike = reading("g", 0, water_level_m=5.0)
    eng.feed(spike, flags={("g", "water_level_m", spike.time): 3})
    eng.series("g", [1.0], start=5)
    assert eng.log == []
    rise = [reading("g", 10 + i * 5, water_level_m=3.0) for i in range(2)]
    eng.feed(*rise, flags={("g", "water_level_m", r.time): 3 for r in rise})
    assert kinds(eng.log) == [("firing", "warning")]
    assert eng.log[0].at == rise[1].time


def test_readings_far_behind_the_stream_head_open_nothing_but_fresh_ones_do() -> None:
    eng = Engine(ruleset(PLAIN))
    eng.feed(reading("live", 120, water_level_m=1.0))  # the stream is at minute 120
    backlog = [reading("buffered", m, water_level_m=3.0) for m in range(0, 60, 5)]
    ev = eng.feed(*backlog)
    assert eng.log == [] and ev.stale == len(backlog)
    eng.feed(*(reading("buffered", m, water_level_m=3.0) for m in (121, 126)))
    assert [(t.kind, t.device_id) for t in eng.log] == [("firing", "buffered")]


def test_combined_rule_does_not_reopen_when_an_areas_devices_arrive_out_of_time_order() -> None:
    # One device's readings may come (another partition) after a later one's of the area.
    eng = Engine(ruleset(COMBINED), areas={"rain-1": "north", "gauge-1": "north"})
    eng.series("gauge-1", [1.0, 1.0, 1.0], start=0, step=10)
    eng.feed(reading("rain-1", 25, rain_mm_h=45.0), reading("gauge-1", 30, water_level_m=1.1))
    eng.series("rain-1", [0.0] * 12, start=40, step=10, metric="rain_mm_h")  # resolves at 120
    eng.series("gauge-1", [1.1] * 7, start=41, step=10)  # arrives after, older times
    assert kinds(eng.log) == [("firing", "warning"), ("resolved", "warning")]


# -- persistence and final verdicts (issue 14) ------------------------------------------------


def test_one_sample_the_checks_passed_opens_nothing_under_persistence() -> None:
    # The demo's false warnings: one simulated spike, flagged pass, opened an alert.
    eng = Engine(ruleset(PLAIN + LEVELS))
    eng.series("g", [1.0, 1.0, 9.0, 1.0, 1.0, 1.0])
    assert eng.log == []
    # a jump to danger confirmed by a reading at warning opens at warning, not danger
    assert kinds(eng.series("h", [1.0, 3.2, 2.6, 2.6])) == [
        ("firing", "warning"),
        ("firing", "warning"),
    ]


def test_persistence_and_final_are_validated_with_defaults_per_type() -> None:
    rs = ruleset(PLAIN + OFFLINE + STUCK + AQI_RULE + COMBINED)
    assert {r.id: (r.confirm, r.min_readings) for r in rs.rules} == {
        "p": ("persist", 2),
        "offline": ("persist", 1),  # persistence is its own `after`
        "stuck": ("persist", 1),
        "aqi": ("persist", 2),
        "storm": ("persist", 2),
    }
    with pytest.raises(ConfigError, match="one reading alone must not open"):
        ruleset(
            rule(
                "id: one\nkind: flood\nmetric: water_level_m\nthreshold: 2\nclear: 1\n"
                "severity: watch\nmin_readings: 1"
            )
        )
    with pytest.raises(ConfigError, match="confirm 'final' is for threshold"):
        ruleset(rule("id: silent\ntype: offline\nafter: 1m\nseverity: watch\nconfirm: final"))
    # one reading with a duration is persistence too
    ruleset(
        rule(
            "id: dur\nkind: flood\nmetric: water_level_m\nthreshold: 2\nclear: 1\n"
            "severity: watch\nmin_readings: 1\nfor: 10m"
        )
    )


FINAL = rule(
    "id: fin\nkind: flood\nmetric: water_level_m\nthreshold: 2.5\nclear: 2.2\n"
    "severity: warning\nconfirm: final\nmin_readings: 1"
)


def test_final_rules_act_on_a_reading_once_its_successor_made_its_verdict_final() -> None:
    eng = Engine(ruleset(FINAL))
    spike = reading("g", 5, water_level_m=4.0)
    after = reading("g", 10, water_level_m=1.0)
    eng.feed(reading("g", 0, water_level_m=1.0), spike)
    assert eng.log == []  # the spike waits for its right neighbour
    # the neighbour's arrival gives the spike its final verdict (a reflag): suspect
    eng.feed(after, flags={("g", "water_level_m", spike.time): 3})
    assert eng.log == []
    # a real rise: the first reading over is judged pass when the next one arrives and
    # opens the alert at its own time, one reporting interval later in arrival
    eng.series("g", [3.0, 3.1], start=15)
    [fired] = eng.log
    assert fired.kind == "firing" and fired.at == T0 + timedelta(minutes=15)
    assert fired.trigger_value == 3.0


def test_an_alert_never_resolves_before_it_starts_when_a_buffer_is_uploaded() -> None:
    eng = Engine(ruleset(OFFLINE))
    eng.feed(reading("quiet", 0, water_level_m=1.0), reading("busy", 0, water_level_m=1.0))
    eng.series("busy", [1.0] * 8, start=5)  # quiet offline at minute 30
    [fired] = eng.log
    # quiet comes back and uploads its buffer: its first reading is from minute 5
    eng.series("quiet", [1.0] * 8, start=5)
    resolved = eng.log[-1]
    assert resolved.kind == "resolved" and resolved.alert_id == fired.alert_id
    assert resolved.at >= fired.started_at
    assert kinds(eng.log) == [("firing", "advisory"), ("resolved", "advisory")]  # no refire


def test_offline_silence_is_caught_whatever_the_batch_size() -> None:
    # Played fast, a whole 40-minute silence and the return arrive in one batch.
    eng = Engine(ruleset(OFFLINE))
    batch = [reading(d, m, water_level_m=1.0) for m in range(0, 90, 5) for d in ("a", "b")]
    eng.feed(*[r for r in batch if not (r.device_id == "a" and 20 < r.time.minute < 60)])
    [fired, resolved] = eng.log
    assert (fired.kind, fired.device_id, fired.at) == ("firing", "a", T0 + timedelta(minutes=50))
    assert resolved.kind == "resolved" and resolved.at == T0 + timedelta(minutes=60)
    assert fired.value == 40.0


def test_a_live_partition_whose_devices_all_fall_silent_is_reported_by_the_wall_clock() -> None:
    # Both devices of one partition stop at minute 10; the head stays there. In reading
    # time alone nothing is offline; the stream was live (its head arrived 5 s behind the
    # wall clock), so the wall clock minus the allowed lag (2 min) advances the check.
    eng = Engine(ruleset(OFFLINE))
    eng.feed(reading("a", 10, water_level_m=1.0), reading("b", 10, water_level_m=1.0))
    seen = {"0": T0 + timedelta(minutes=10, seconds=5)}
    head = eng.heads["0"]
    assert tick(eng.rules, eng.state, eng.heads).transitions == []
    early = live_heads(eng.heads, seen, T0 + timedelta(minutes=41), timedelta(minutes=2))
    assert early == {"0": T0 + timedelta(minutes=39)}
    assert tick(eng.rules, eng.state, early).transitions == []  # 29 min: not yet
    now = T0 + timedelta(minutes=45)
    clock = live_heads(eng.heads, seen, now, timedelta(minutes=2))
    fired = tick(eng.rules, eng.state, clock).transitions
    assert [(t.kind, t.device_id, t.at) for t in fired] == [
        ("firing", "a", T0 + timedelta(minutes=43)),
        ("firing", "b", T0 + timedelta(minutes=43)),
    ]
    assert eng.heads["0"] == head  # the reading-time head itself never moves by the clock
    # a device comes back: resolved at its reading time, never before it started
    eng.log = []
    eng.feed(reading("a", 44, water_level_m=1.0))
    [back] = eng.log
    assert back.kind == "resolved" and back.at >= fired[0].started_at


def test_replayed_history_is_never_live_so_playback_speed_changes_no_offline_alert() -> None:
    # A day-old stream arriving now (a replay, a scenario played from the past): the wall
    # clock does not advance it, whatever the time between ticks.
    old = {"0": T0}
    seen = {"0": T0 + timedelta(days=1)}
    for now in (T0 + timedelta(days=1), T0 + timedelta(days=2)):
        assert live_heads(old, seen, now, timedelta(minutes=2)) == old
    assert live_heads(old, {}, T0 + timedelta(days=1), timedelta(minutes=2)) == old
    # and the same silence is found at the same reading time played in 1 or 18 batches
    found = []
    for size in (1, 36):
        eng = Engine(ruleset(OFFLINE))
        rs = [reading(d, m, water_level_m=1.0) for m in range(0, 90, 5) for d in ("a", "b")]
        rs = [r for r in rs if not (r.device_id == "a" and 20 < r.time.minute < 60)]
        for i in range(0, len(rs), size):
            eng.feed(*rs[i : i + size])
        found.append([(t.kind, t.device_id, t.at) for t in eng.log])
    assert found[0] == found[1] and found[0][0][0] == "firing"


def test_simulated_devices_raise_exercise_alerts() -> None:
    eng = Engine(ruleset(PLAIN))
    eng.series("real", [3.0, 3.0])
    for r in (reading("sim", m, water_level_m=3.0) for m in (0, 5)):
        eng.feed(r, simulated={"sim"})
    assert [(t.device_id, t.status) for t in eng.log] == [
        ("real", "Actual"),
        ("sim", "Exercise"),
    ]


# -- rain on accumulation (issue 14) -----------------------------------------------------------

RAIN = rule(
    "id: wet\ntype: combined\nconditions:\n"
    "  - {kind: flood, metric: rain_mm_h, accumulated_mm: 30, over: 1h}\n"
    "  - {kind: flood, metric: water_level_m, rising_per_hour: 0.2}\n"
    "window: 1h\nhold: 30m\nseverity: warning"
)


def test_rain_accumulation_integrates_intensity_over_reading_time() -> None:
    def pts(step_s: float, rates: list[float]) -> list[list[Any]]:
        return [[(T0 + timedelta(seconds=i * step_s)).isoformat(), v] for i, v in enumerate(rates)]

    # an hour of 40 mm/h at 10 s or 5 min cadence: 40 mm either way
    for step in (10.0, 300.0):
        n = int(3600 / step)
        assert (
            rain_mm(pts(step, [40.0] * (n + 1)), T0 + timedelta(hours=1), timedelta(hours=1)) == 40
        )
    # one 180 mm/h spike among dry readings: its own interval only
    spike = [0.0] * 10 + [180.0] + [0.0] * 10
    assert rain_mm(pts(10, spike), T0 + timedelta(seconds=200), timedelta(hours=1)) == 0.5
    assert rain_mm(pts(300, spike), T0 + timedelta(seconds=6000), timedelta(hours=1)) == 15
    # a gauge silent for an hour is not assumed to have rained all along
    gap = [[T0.isoformat(), 0.0], [(T0 + timedelta(hours=1)).isoformat(), 60.0]]
    assert rain_mm(gap, T0 + timedelta(hours=1), timedelta(hours=1)) == 15


def test_one_rain_spike_and_a_rise_raise_no_heavy_rain_warning_but_an_hours_rain_does() -> None:
    areas = {"rain-1": "north", "gauge-1": "north"}
    eng = Engine(ruleset(RAIN), areas=areas)
    eng.series("gauge-1", [1.0, 1.05, 1.1, 1.15, 1.2, 1.25], start=0, step=5)  # 0.6 m/h
    eng.series("rain-1", [0.0, 0.0, 180.0, 0.0, 0.0], start=1, step=5, metric="rain_mm_h")
    assert eng.log == []  # the demo's false warning: one spike, 15 mm at most
    eng.series("rain-1", [40.0] * 12, start=26, step=5, metric="rain_mm_h")
    eng.series("gauge-1", [1.3 + 0.05 * i for i in range(14)], start=30, step=5)
    [fired] = eng.log
    assert fired.kind == "firing" and fired.area == "north" and fired.value >= 30
    assert fired.rule.unit() == "mm"


def test_a_rain_spike_failed_by_the_next_reading_leaves_the_hours_accumulation() -> None:
    """20 mm/h of real rain (20 mm in the hour) and one 180 mm/h spike read at a 5-minute
    cadence (+13 mm) would pass 30 mm; the shipped quality checks fail the spike when the
    next reading arrives, as the service hands the verdicts over (flags and reflags)."""
    qc = QualityEvaluator(load_quality_config(Settings().quality_file))
    eng = Engine(ruleset(RAIN), areas={"rain-1": "north", "gauge-1": "north"})

    def feed(device: str, minute: float, **metrics: float) -> None:
        r = reading(device, minute, **metrics)
        judged = qc.evaluate([r])
        qc.commit(judged)
        flags = dict(judged.flags)
        for device_id, metric, at, flag in judged.reflags:
            flags[(device_id, metric, at)] = max(flag, flags.get((device_id, metric, at), flag))
        eng.feed(r, flags=flags)

    # a real gauge's intensity varies by tenths (one repeated to the hundredth is stuck)
    rain = [180.0 if i == 7 else round(20.0 + 0.37 * (i % 3), 2) for i in range(13)]
    for i in range(13):  # an hour of rain at 5 minutes, the spike at minute 35
        feed("rain-1", 5 * i, rain_mm_h=rain[i])
        feed("gauge-1", 5 * i + 1, water_level_m=1.0 + 0.05 * i)  # 0.6 m/h, rising
    assert eng.log == []
    # The control: without the spike's verdict the same readings open the warning.
    control = Engine(ruleset(RAIN), areas={"rain-1": "north", "gauge-1": "north"})
    for i in range(13):
        control.feed(reading("rain-1", 5 * i, rain_mm_h=rain[i]))
        control.feed(reading("gauge-1", 5 * i + 1, water_level_m=1.0 + 0.05 * i))
    assert [t.kind for t in control.log] == ["firing"]


def test_shipped_rules_name_areas_by_the_shipped_citys_ids() -> None:
    city = load_city()
    rules = load_rules(SHIPPED_RULES, city)
    levels = next(r for r in rules.rules if isinstance(r, LevelsRule))
    assert set(levels.area_levels) <= city.ids()
    text = SHIPPED_RULES.read_text(encoding="utf-8")
    named = text.replace("      stueng-hav:", '      "Stueng Hav":')
    with pytest.raises(
        ConfigError, match=r"'Stueng Hav' is not an area id .*write its id 'stueng-hav'"
    ):
        check_areas(parse_rules(named), city)
    with pytest.raises(ConfigError, match="'atlantis' is not an area id"):
        check_areas(parse_rules(text.replace("      mittapheap:", "      atlantis:")), city)


def test_a_neighbour_read_minutes_behind_on_its_partition_does_not_hold_back_a_rise() -> None:
    # At 10 s the alerts consumer may read one gauge's partition minutes (of reading time)
    # behind the other's: the flash flood's first gauge over the level waited up to 11 min
    # for its neighbour's old, lower reading to be overtaken. A neighbour heard within two
    # of its own intervals still contradicts (a drifting gauge stays held back).
    s = 10 / 60  # 10 s in minutes
    eng = Engine(ruleset(PER_AREA), areas={"a": "north", "b": "north"})
    eng.series("b", [1.0, 1.0, 1.0], start=0, step=s)  # b's partition is read up to 0:20
    eng.series("a", [1.0, 1.0], start=0, step=s)
    # a, read 8 minutes further on, is over watch; b's last reading is 8 minutes old
    assert kinds(eng.series("a", [2.2, 2.25, 2.3], start=8, step=s)) == [("firing", "watch")]
    # the control: b reads low right now, so a drifting a is held back
    eng2 = Engine(ruleset(PER_AREA), areas={"a": "north", "b": "north"})
    eng2.series("b", [1.0, 1.0], start=0, step=s)
    eng2.series("a", [1.0, 1.0], start=0, step=s)
    for i in range(3):
        eng2.feed(reading("b", 8 + i * s, water_level_m=1.0))
        eng2.feed(reading("a", 8 + i * s + 0.01, water_level_m=2.2 + 0.05 * i))
    assert eng2.log == []
