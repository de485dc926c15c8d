"""Unit tests for alert rules loading and the pure threshold-with-hysteresis evaluation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import Reading
from services.alerts.engine import (
    Key,
    OpenEpisode,
    RuleState,
    Transition,
    alert_id_for,
    evaluate,
)
from services.alerts.rules import RuleSet, ThresholdRule, load_rules
from services.common.errors import ConfigError
from services.common.settings import AlertSettings

SHIPPED_RULES = Path(__file__).resolve().parents[1] / "deploy" / "alerts" / "rules.yaml"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

RULE_YAML = """\
  - id: {id}
    kind: {kind}
    metric: {metric}
    direction: {direction}
    threshold: {threshold}
    clear: {clear}
    severity: warning
    title_en: "Level {{value}} {{unit}} at {{device}}"
    title_km: "Level {{value}} {{unit}} at {{device}}"
"""


def rule_yaml(
    id: str = "flood-level-warning",
    kind: str = "flood",
    metric: str = "water_level_m",
    direction: str = "above",
    threshold: float = 2.5,
    clear: float = 2.2,
) -> str:
    return RULE_YAML.format(
        id=id, kind=kind, metric=metric, direction=direction, threshold=threshold, clear=clear
    )


def write_rules(tmp_path: Path, *rules: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n" + "".join(rules), encoding="utf-8")
    return path


FLOOD = ThresholdRule(
    id="flood-level-warning",
    kind="flood",
    metric="water_level_m",
    direction="above",
    threshold=2.5,
    clear=2.2,
    severity="warning",
    title_en="Flood warning: {value} {unit} at {device}",
    title_km="km {value} {unit} {device}",
)
LOW_OXYGEN = ThresholdRule(
    id="water-oxygen-low",
    kind="water",
    metric="dissolved_oxygen_mgl",
    direction="below",
    threshold=3.0,
    clear=4.0,
    severity="watch",
    title_en="Low oxygen {value} {unit} at {device}",
    title_km="km {value} {unit} {device}",
)
RULES = RuleSet(rules=(FLOOD, LOW_OXYGEN))
FLOOD_KEY: Key = ("flood-level-warning", "gauge-1")


def flood(minute: int, level: float, device: str = "gauge-1") -> Reading:
    t = T0 + timedelta(minutes=minute)
    return Reading(
        device_id=device, kind="flood", time=t, received_at=t, metrics={"water_level_m": level}
    )


def oxygen(minute: int, value: float) -> Reading:
    t = T0 + timedelta(minutes=minute)
    return Reading(
        device_id="intake-1",
        kind="water",
        time=t,
        received_at=t,
        metrics={"dissolved_oxygen_mgl": value},
    )


def kinds(transitions: list[Transition]) -> list[str]:
    return [t.kind for t in transitions]


# -- loading ------------------------------------------------------------------------------


def test_shipped_rules_file_loads_with_unique_ids() -> None:
    rules = load_rules(SHIPPED_RULES)
    ids = [r.id for r in rules.rules]
    assert "flood-level-warning" in ids
    assert len(ids) == len(set(ids))


def test_settings_point_at_the_shipped_rules_file() -> None:
    assert AlertSettings().rules_file.resolve() == SHIPPED_RULES


def test_shipped_rules_titles_fill_in_value_unit_and_device() -> None:
    for rule in load_rules(SHIPPED_RULES).rules:
        en, km = rule.titles(12.5, "dev-1")
        assert "12.5" in en
        assert "dev-1" in en
        assert "12.5" in km


def test_valid_rules_file_loads(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path, rule_yaml()))
    assert rules.for_metric("flood", "water_level_m")[0].threshold == 2.5


def test_duplicate_rule_id_is_config_error_naming_the_id(tmp_path: Path) -> None:
    path = write_rules(tmp_path, rule_yaml(), rule_yaml(metric="rain_mm_h"))
    with pytest.raises(ConfigError, match=r"duplicate rule ids.*flood-level-warning"):
        load_rules(path)


def test_unknown_metric_is_config_error_naming_the_metric(tmp_path: Path) -> None:
    path = write_rules(tmp_path, rule_yaml(metric="tsunami_m"))
    with pytest.raises(ConfigError, match="tsunami_m") as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_metric_of_another_kind_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pm25_ugm3"):
        load_rules(write_rules(tmp_path, rule_yaml(metric="pm25_ugm3")))


def test_clear_above_threshold_for_above_rule_is_config_error(tmp_path: Path) -> None:
    path = write_rules(tmp_path, rule_yaml(threshold=2.5, clear=3.0))
    with pytest.raises(ConfigError, match="clear must be at or below threshold"):
        load_rules(path)


def test_clear_below_threshold_for_below_rule_is_config_error(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        rule_yaml(kind="water", metric="dissolved_oxygen_mgl", direction="below", clear=2.0),
    )
    with pytest.raises(ConfigError, match="clear must be at or above threshold"):
        load_rules(path)


def test_invalid_yaml_is_config_error_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [\n  - id: x\n  unclosed: {", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_rules(path)
    assert str(path) in str(info.value)


def test_missing_rules_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read alert rules"):
        load_rules(tmp_path / "absent.yaml")


def test_empty_rules_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid"):
        load_rules(path)


def test_unknown_rule_field_is_config_error(tmp_path: Path) -> None:
    path = write_rules(tmp_path, rule_yaml() + "    window: 5m\n")
    with pytest.raises(ConfigError, match="window"):
        load_rules(path)


def test_non_utf8_rules_file_is_config_error(tmp_path: Path) -> None:
    # Bug: load_rules catches OSError and YAMLError, but read_text(encoding="utf-8") raises
    # UnicodeDecodeError (a ValueError), which escapes instead of a ConfigError.
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"rules: []\n# \xff saved as Latin-1\n")
    with pytest.raises(ConfigError):
        load_rules(path)


def test_title_with_unknown_placeholder_is_config_error_at_load(tmp_path: Path) -> None:
    # Bug: titles are only formatted when an alert is stored (store.py), so a typo such as
    # {level} loads fine and then raises KeyError inside the alert service's batch handler.
    path = write_rules(tmp_path, rule_yaml().replace("Level {value}", "Level {level}", 1))
    with pytest.raises(ConfigError, match="level"):
        load_rules(path)


# -- evaluation ---------------------------------------------------------------------------


def test_crossing_threshold_opens_exactly_one_firing_alert() -> None:
    state: dict[Key, RuleState] = {}
    out = evaluate(RULES, state, [flood(0, 1.0), flood(1, 2.5)])
    assert kinds(out.transitions) == ["firing"]
    fired = out.transitions[0]
    assert (fired.rule.id, fired.device_id, fired.value, fired.at) == (
        "flood-level-warning",
        "gauge-1",
        2.5,
        T0 + timedelta(minutes=1),
    )
    assert fired.alert_id == alert_id_for("flood-level-warning", "gauge-1", fired.at)
    assert state[FLOOD_KEY].open == OpenEpisode(fired.alert_id, fired.at)


def test_staying_above_threshold_raises_nothing_more() -> None:
    state: dict[Key, RuleState] = {}
    evaluate(RULES, state, [flood(0, 3.0)])
    out = evaluate(RULES, state, [flood(1, 3.1), flood(2, 4.0), flood(3, 2.5)])
    assert out.transitions == []
    assert state[FLOOD_KEY].open is not None


def test_hovering_between_clear_and_threshold_neither_resolves_nor_reopens() -> None:
    state: dict[Key, RuleState] = {}
    opened = evaluate(RULES, state, [flood(0, 2.6)]).transitions[0]
    hover = [flood(1, 2.4), flood(2, 2.49), flood(3, 2.2), flood(4, 2.3), flood(5, 2.5)]
    out = evaluate(RULES, state, hover)
    assert out.transitions == []
    assert state[FLOOD_KEY].open == OpenEpisode(opened.alert_id, opened.at)


def test_hovering_between_clear_and_threshold_without_open_alert_opens_nothing() -> None:
    out = evaluate(RULES, {}, [flood(0, 2.3), flood(1, 2.49), flood(2, 2.21)])
    assert out.transitions == []


def test_dropping_below_clear_resolves_the_same_alert_id() -> None:
    state: dict[Key, RuleState] = {}
    out = evaluate(RULES, state, [flood(0, 2.7), flood(1, 2.3), flood(2, 2.19)])
    assert kinds(out.transitions) == ["firing", "resolved"]
    fired, resolved = out.transitions
    assert resolved.alert_id == fired.alert_id
    assert (resolved.value, resolved.at) == (2.19, T0 + timedelta(minutes=2))
    assert state[FLOOD_KEY].open is None


def test_crossing_again_after_resolving_opens_a_new_alert() -> None:
    out = evaluate(RULES, {}, [flood(0, 3.0), flood(1, 1.0), flood(2, 3.0)])
    assert kinds(out.transitions) == ["firing", "resolved", "firing"]
    assert out.transitions[0].alert_id != out.transitions[2].alert_id


def test_cursor_advances_to_the_newest_reading_time() -> None:
    state: dict[Key, RuleState] = {}
    out = evaluate(RULES, state, [flood(0, 1.0), flood(5, 1.1)])
    assert out.cursors == {FLOOD_KEY: T0 + timedelta(minutes=5)}
    assert state[FLOOD_KEY].cursor == T0 + timedelta(minutes=5)


@pytest.mark.parametrize("minute", [5, 4, 0], ids=["same_time", "older", "much_older"])
def test_replayed_reading_at_or_before_cursor_changes_nothing(minute: int) -> None:
    state: dict[Key, RuleState] = {}
    evaluate(RULES, state, [flood(5, 1.0)])
    before = RuleState(state[FLOOD_KEY].cursor, state[FLOOD_KEY].open)
    out = evaluate(RULES, state, [flood(minute, 9.0)])
    assert out.transitions == []
    assert out.cursors == {}
    assert state[FLOOD_KEY] == before


def test_replaying_a_whole_episode_raises_nothing_new() -> None:
    stream = [flood(0, 1.0), flood(1, 3.0), flood(2, 1.0)]
    state: dict[Key, RuleState] = {}
    assert len(evaluate(RULES, state, stream).transitions) == 2
    assert evaluate(RULES, state, stream).transitions == []


def test_rebuilt_state_after_restart_continues_the_same_episode() -> None:
    live: dict[Key, RuleState] = {}
    fired = evaluate(RULES, live, [flood(0, 3.0)]).transitions[0]
    # A restarted service rebuilds its state from what it stored: cursor + open episode.
    restored = {FLOOD_KEY: RuleState(T0, OpenEpisode(fired.alert_id, fired.at))}
    again = evaluate(RULES, restored, [flood(0, 3.0), flood(1, 3.2)])
    assert again.transitions == []
    out = evaluate(RULES, restored, [flood(2, 1.0)])
    assert kinds(out.transitions) == ["resolved"]
    assert out.transitions[0].alert_id == fired.alert_id


def test_below_rule_fires_at_threshold_and_resolves_above_clear() -> None:
    state: dict[Key, RuleState] = {}
    stream = [oxygen(0, 6.0), oxygen(1, 3.0), oxygen(2, 3.5), oxygen(3, 4.0), oxygen(4, 4.1)]
    out = evaluate(RULES, state, stream)
    assert kinds(out.transitions) == ["firing", "resolved"]
    fired, resolved = out.transitions
    assert (fired.value, resolved.value) == (3.0, 4.1)
    assert fired.alert_id == resolved.alert_id
    assert fired.rule.id == "water-oxygen-low"


def test_above_rule_fires_exactly_at_threshold_and_resolves_strictly_below_clear() -> None:
    assert kinds(evaluate(RULES, {}, [flood(0, 2.5), flood(1, 2.2)]).transitions) == ["firing"]


def test_devices_have_separate_episodes() -> None:
    state: dict[Key, RuleState] = {}
    out = evaluate(RULES, state, [flood(0, 3.0, "gauge-1"), flood(0, 3.0, "gauge-2")])
    assert [t.device_id for t in out.transitions] == ["gauge-1", "gauge-2"]
    assert out.transitions[0].alert_id != out.transitions[1].alert_id
    out = evaluate(RULES, state, [flood(1, 1.0, "gauge-2")])
    assert [(t.kind, t.device_id) for t in out.transitions] == [("resolved", "gauge-2")]
    assert state[FLOOD_KEY].open is not None


def test_metrics_without_a_rule_are_ignored() -> None:
    t = T0
    reading = Reading(
        device_id="gauge-1",
        kind="flood",
        time=t,
        received_at=t,
        metrics={"rain_mm_h": 400.0, "battery_pct": 1.0},
    )
    state: dict[Key, RuleState] = {}
    out = evaluate(RULES, state, [reading])
    assert out.transitions == []
    assert state == {}


def test_alert_id_is_deterministic_per_rule_device_and_start() -> None:
    a = alert_id_for("flood-level-warning", "gauge-1", T0)
    assert a == alert_id_for("flood-level-warning", "gauge-1", T0)
    assert isinstance(a, uuid.UUID)
    assert a.version == 5
    assert a != alert_id_for("flood-level-warning", "gauge-2", T0)
    assert a != alert_id_for("air-pm25-unhealthy", "gauge-1", T0)
    assert a != alert_id_for("flood-level-warning", "gauge-1", T0 + timedelta(microseconds=1))


def test_same_opening_reading_yields_same_alert_id_in_fresh_state() -> None:
    first = evaluate(RULES, {}, [flood(0, 3.0)]).transitions[0]
    second = evaluate(RULES, {}, [flood(0, 3.0)]).transitions[0]
    assert first.alert_id == second.alert_id
