"""Quality flags scored against the simulator's ground truth, and the checks that meet it.

Pure (no stack): scenarios are played through the adapters and `QualityEvaluator` by
`services.evaluate.flags` at the demo's 10 s interval and at a field interval of 5 min,
with the shipped defaults file, on fixed seeds. Issue 14's targets: false flags at most 2 %
of fault-free values per metric at both intervals; spikes and stuck sensors caught at
least 95 % of the time.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest

from schemas import Reading
from services.common.settings import Settings
from services.evaluate.flags import OFFLINE_NOW, Labels, ScoredRow, play, score, score_scenario
from services.quality import Flag, QualityConfig, QualityEvaluator, load_quality_config
from simulators import ScenarioRun, load_scenario

T0 = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def defaults() -> QualityConfig:
    return load_quality_config(Settings().quality_file)


# Fault rates x3 so that an hour at 10 s still holds dozens of spikes and stuck episodes.
CADENCES = {
    "10s": {"interval": timedelta(seconds=10), "duration": timedelta(hours=1)},
    "5min": {"interval": timedelta(minutes=5), "duration": timedelta(hours=24)},
}


@pytest.mark.parametrize("cadence", CADENCES)
@pytest.mark.parametrize("scenario", ["normal-day", "monsoon-storm"])
def test_scenario_meets_the_false_flag_and_catch_targets(
    defaults: QualityConfig, scenario: str, cadence: str
) -> None:
    # The storm washes the air clean: stuck air sensors at 1-5 ug/m3 or ppb, where a healthy
    # sensor's noise is under its resolution, were the stuck episodes missed (92 % at 10 s).
    report = score_scenario(scenario, config=defaults, seed=1, fault_scale=3, **CADENCES[cadence])
    noisy = {m.metric: f"{m.share:.1%}" for m in report.metrics if m.share > 0.02}
    assert noisy == {}, report.table()
    assert all(m.fault_free > 500 for m in report.metrics)
    spike, stuck = report.fault("spike"), report.fault("stuck")
    assert spike.labelled >= 20 and stuck.labelled >= 10, report.table()
    assert spike.share >= 0.95, report.table()
    assert stuck.share >= 0.95, report.table()
    assert report.fault("out_of_range", "payloads").share == 1.0


def flood_gauge(step_s: float, seed: int = 7) -> list[Reading]:
    """A gauge through a flash flood: tide-level water with 8 mm of noise, then 1.1 m in
    2 minutes, 20 minutes at the crest, and an hour's recession."""
    rnd = random.Random(seed)
    out = []
    for i in range(int(4 * 3600 / step_s)):
        t = i * step_s
        rise_at = 3600.0
        if t < rise_at:
            level = 1.0
        elif t < rise_at + 120:
            level = 1.0 + 1.1 * (t - rise_at) / 120
        elif t < rise_at + 120 + 1200:
            level = 2.1
        else:
            level = max(1.0, 2.1 - 1.1 * (t - rise_at - 1320) / 3600)
        out.append(
            Reading.model_validate(
                {
                    "device_id": "gauge",
                    "kind": "flood",
                    "time": T0 + timedelta(seconds=t),
                    "received_at": T0 + timedelta(seconds=t),
                    "metrics": {"water_level_m": round(level + rnd.gauss(0, 0.008), 3)},
                }
            )
        )
    return out


def judge(cfg: QualityConfig, readings: list[Reading]) -> dict[datetime, int]:
    ev = QualityEvaluator(cfg)
    judged = ev.evaluate(readings)
    assert judged.reflags == []  # one batch: every spike verdict folded in before storing
    return {at: flag for (_, _, at), flag in judged.flags.items()}


@pytest.mark.parametrize("step_s", [10, 60, 300])
def test_a_fast_genuine_rise_of_water_level_passes_at_any_interval(
    defaults: QualityConfig, step_s: int
) -> None:
    flags = judge(defaults, flood_gauge(step_s))
    assert set(flags.values()) == {Flag.PASS}


@pytest.mark.parametrize("step_s", [10, 300])
def test_a_gauge_jumping_by_metres_and_back_is_still_a_spike(
    defaults: QualityConfig, step_s: int
) -> None:
    readings = flood_gauge(step_s)
    spiked = readings[20].model_copy(update={"metrics": {"water_level_m": 4.0}})
    flags = judge(defaults, [*readings[:20], spiked, *readings[21:]])
    assert flags[spiked.time] == Flag.FAIL
    # The steep way back is a rate-of-change suspect at 10 s; nothing else is flagged.
    others = {at: f for at, f in flags.items() if f != Flag.PASS and at != spiked.time}
    assert others in ({}, {readings[21].time: Flag.SUSPECT})


def noisy_ph(step_s: float, n: int, seed: int = 3) -> list[Reading]:
    """pH with the electrode noise the defaults allow for (0.03) on a slow daily cycle."""
    rnd = random.Random(seed)
    return [
        Reading.model_validate(
            {
                "device_id": "buoy",
                "kind": "water",
                "time": T0 + timedelta(seconds=i * step_s),
                "received_at": T0 + timedelta(seconds=i * step_s),
                "metrics": {"ph": round(7.8 + 0.0001 * i + rnd.gauss(0, 0.03), 3)},
            }
        )
        for i in range(n)
    ]


def only_rate_of_change(defaults: QualityConfig) -> QualityConfig:
    roc = defaults.for_metric("water", "ph").rate_of_change
    assert roc is not None and roc.noise > 0
    return QualityConfig.model_validate(
        {"metrics": {"water": {"ph": {"rate_of_change": roc.model_dump()}}}}
    )


def test_sensor_noise_at_10_s_is_not_a_rate_of_change_fault(defaults: QualityConfig) -> None:
    flags = judge(only_rate_of_change(defaults), noisy_ph(10, 2000))
    assert set(flags.values()) == {Flag.PASS}  # the sensor span (gross range) judges the first


def test_a_step_beyond_the_rate_and_the_noise_is_still_a_rate_of_change_fault(
    defaults: QualityConfig,
) -> None:
    readings = noisy_ph(10, 100)
    stepped = [
        r.model_copy(update={"metrics": {"ph": r.metrics["ph"] + 0.6}}) if i >= 50 else r
        for i, r in enumerate(readings)
    ]
    flags = judge(only_rate_of_change(defaults), stepped)
    assert [at for at, f in flags.items() if f == Flag.SUSPECT] == [stepped[50].time]


# -- the scorer's rules --------------------------------------------------------------------


def row(metric: str, minute: int, value: float, flag: int, device: str = "d") -> ScoredRow:
    return ScoredRow(device, "water", metric, T0 + timedelta(minutes=minute), value, flag)


def test_scorer_counts_false_flags_on_fault_free_values_and_catches_per_fault() -> None:
    rows = [
        row("ph", 0, 7.0, 1),
        row("ph", 1, 7.1, 3),  # fault-free and flagged: a false flag
        row("ph", 2, 9.9, 4),  # a caught spike
        row("ph", 3, 7.0, 1),
        row("ph", 4, 9.9, 1),  # a missed spike
        # a stuck episode caught on its last value, and one where nothing is false
        *(row("temperature_c", m, 29.1, 3 if m == 4 else 1) for m in range(1, 5)),
        row("temperature_c", 5, 29.4, 1),
        *(row("turbidity_ntu", m, 0.0, 1) for m in range(6)),
        row("conductivity_uscm", 0, 420.0, 1),
        row("conductivity_uscm", 1, 421.5, 1),  # a stuck episode the run's end cut to one value
    ]
    labels = Labels(
        faults={
            rows[2].key: frozenset({"spike"}),
            rows[4].key: frozenset({"spike"}),
            **{r.key: frozenset({"stuck"}) for r in rows[5:9]},
            **{r.key: frozenset({"stuck"}) for r in rows[11:14]},
            rows[-1].key: frozenset({"stuck"}),
        },
    )
    report = score(rows, labels)
    assert (report.metric("water.ph").fault_free, report.metric("water.ph").false_flags) == (3, 1)
    assert (report.fault("spike").labelled, report.fault("spike").caught) == (2, 1)
    stuck = report.fault("stuck")
    assert (stuck.labelled, stuck.caught, stuck.inert) == (1, 1, 2)
    assert (report.rows, report.faulty) == (len(rows), 10)
    unjudged = score(rows, labels, flat_metrics={"water.ph"}).fault("stuck")
    assert (unjudged.labelled, unjudged.unjudged, unjudged.inert) == (0, 1, 2)


def test_labels_name_each_faulty_value_even_in_buffered_uploads_and_double_faults(
    defaults: QualityConfig,
) -> None:
    scenario = load_scenario("normal-day")
    scenario = dataclasses.replace(
        scenario, intervals=dict.fromkeys(scenario.intervals, timedelta(minutes=5))
    )

    def run() -> ScenarioRun:  # the same seeded run each time
        return ScenarioRun(scenario, devices=60, seed=1, now=OFFLINE_NOW, fault_scale=3)

    rows, labels = play(run(), defaults)
    stored = {r.key for r in rows}
    # Every labelled value is a stored row: none is lost, none left unscored as ambiguous.
    assert labels.faults and set(labels.faults) <= stored
    # The run holds the cases one label per message could not resolve, and they are exact:
    # readings with two value faults on different metrics (a drifting device's spike) ...
    value_faults: dict[tuple[str, datetime], dict[str, frozenset[str]]] = {}
    for (device, metric, at), f in labels.faults.items():
        if f & {"spike", "stuck", "drift"}:
            value_faults.setdefault((device, at), {})[metric] = f
    assert any(len(per_metric) > 1 for per_metric in value_faults.values())
    # ... and buffered uploads of several readings, each labelled at its own time.
    uploads = [m for m in run().messages() if m.valid and m.readings > 1 and m.labels]
    assert uploads
    for m in uploads:
        for at, metric, fault in m.labels:
            assert fault in labels.faults[(m.device_id, metric, at)]
