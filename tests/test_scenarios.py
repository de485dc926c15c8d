"""Scenarios: shipped files load, any city works, expectations match the generated levels,
and a storm played fast through the real pipeline stores rows for every device and kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from schemas.registry import KINDS
from services.quality import load_quality_config
from simulators import Message, Publisher
from simulators.areas import AreasError, load_city, parse_city
from simulators.faults import FaultRates
from simulators.run import ScenarioRun
from simulators.scenarios import ScenarioError, available, load_scenario, parse_duration
from tests.harness import Namespace, Services, publish_in_device_order, wait_until

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_the_three_required_scenarios_ship_and_load() -> None:
    assert {"normal-day", "monsoon-storm", "haze-episode"} <= set(available())
    storm = load_scenario("monsoon-storm")
    assert storm.duration == timedelta(hours=6)
    assert storm.rain and storm.faults.duplicate > 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6h", timedelta(hours=6)),
        ("1h30m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        (90, timedelta(seconds=90)),
    ],
)
def test_durations_parse_as_written(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_scenario_with_an_unknown_fault_or_a_backwards_episode_is_refused() -> None:
    from simulators.scenarios import parse_scenario

    with pytest.raises(ScenarioError, match="unknown faults"):
        parse_scenario({"name": "x", "faults": {"gremlins": 0.1}})
    with pytest.raises(ScenarioError, match="start <= peak <= end"):
        parse_scenario(
            {
                "name": "x",
                "weather": {"rain": [{"start": "2h", "peak": "1h", "end": "3h", "peak_mm_h": 5}]},
            }
        )
    with pytest.raises(ScenarioError, match="no scenario"):
        load_scenario("no-such-scenario")


def test_sihanoukville_has_its_districts_beaches_and_river_mouths() -> None:
    city = load_city()
    assert city.name == "Sihanoukville" and city.utc_offset_h == 7
    ids = {a.id for a in city.areas}
    assert {"mittapheap", "prey-nob", "stueng-hav", "kampong-seila"} <= ids
    types = {a.type for a in city.areas}
    assert {"district", "beach", "river_mouth"} <= types
    for a in city.areas:
        assert 10.4 < a.lat < 11.3 and 103.4 < a.lon < 104.0, a.id
        if a.kinds.get("flood"):
            assert a.flood is not None and a.flood.watch < a.flood.warning < a.flood.danger


def test_any_city_runs_from_a_file_of_areas_and_coordinates(tmp_path: Path) -> None:
    areas = tmp_path / "kampot.yaml"
    areas.write_text(
        "city: Kampot\nutc_offset_h: 7\nareas:\n"
        "  - {id: old-market, lat: 10.6104, lon: 104.1815, radius_m: 800,\n"
        "     kinds: {air: 1, water: 1, litter: 1}}\n"
        "  - {id: praek-tuek-chhu, type: river_mouth, lat: 10.5900, lon: 104.1700,\n"
        "     kinds: {flood: 1, water: 1},\n"
        "     flood: {base_m: 1, tide_m: 0.4, response_m_per_mm: 0.02, recession_h: 4,\n"
        "             watch: 1.8, warning: 2.2, danger: 2.6}}\n",
        encoding="utf-8",
    )
    city = load_city(areas)
    run = ScenarioRun(
        load_scenario("monsoon-storm"), devices=8, city=city, now=NOW, faults=FaultRates()
    )
    assert {d.area.id for d in run.devices} == {"old-market", "praek-tuek-chhu"}
    assert {d.who.kind for d in run.devices} == set(KINDS)
    for d in run.devices:
        assert abs(d.who.lat - d.area.lat) < 0.01 and abs(d.who.lon - d.area.lon) < 0.01
    expected = run.expectations()
    assert expected["city"] == "Kampot"
    assert [f["area"] for f in expected["flood"]] == ["praek-tuek-chhu"]


def test_an_areas_file_with_levels_out_of_order_is_refused() -> None:
    bad = {"areas": [{"id": "a", "lat": 1, "lon": 1, "kinds": {"flood": 1},
                      "flood": {"base_m": 1, "response_m_per_mm": 0.01, "recession_h": 2,
                                "watch": 3, "warning": 2, "danger": 4}}]}  # fmt: skip
    with pytest.raises(AreasError, match="watch < warning < danger"):
        parse_city(bad)


def test_default_start_puts_the_whole_scenario_before_now_at_its_local_time() -> None:
    storm = load_scenario("monsoon-storm")
    start = storm.default_start(NOW, 7)
    assert start + storm.duration <= NOW
    assert (start + timedelta(hours=7)).hour == 13 and start.minute == 0
    assert NOW - start < timedelta(days=1) + storm.duration


def test_storm_expectations_cross_watch_warning_danger_in_known_areas_in_order() -> None:
    run = ScenarioRun(load_scenario("monsoon-storm"), devices=40, seed=1, now=NOW)
    expected = run.expectations()
    by_area = {f["area"]: f for f in expected["flood"]}
    for area in ("prek-toek-sap-mouth", "prey-nob", "kampong-seila"):
        ups = [c for c in by_area[area]["crossings"] if c["direction"] == "above"]
        assert [c["level"] for c in ups] == ["watch", "warning", "danger"], area
        times = [c["time"] for c in ups]
        assert times == sorted(times)
    assert by_area["stueng-hav-estuary"]["highest_level"] is None
    # The file is JSON and says when and what, for the alerts work to check against.
    again = json.loads(json.dumps(expected))
    assert again["scenario"] == "monsoon-storm" and again["start"] < again["end"]
    calm = ScenarioRun(load_scenario("normal-day"), devices=40, seed=1, now=NOW).expectations()
    assert all(not f["crossings"] for f in calm["flood"])


def test_storm_expectations_agree_with_the_generated_gauge_readings() -> None:
    run = ScenarioRun(
        load_scenario("monsoon-storm"), devices=80, seed=2, now=NOW, faults=FaultRates()
    )
    readings: dict[str, list[tuple[datetime, float]]] = {}
    for m in run.messages():
        if m.kind == "flood":
            body = json.loads(m.payload)
            readings.setdefault(m.device_id, []).append(
                (datetime.fromisoformat(body["time"]), body["metrics"]["water_level_m"])
            )
    checked = 0
    for area in run.expectations()["flood"]:
        for gauge in area["gauges"]:
            series = readings[gauge]
            for name, threshold in area["levels_m"].items():
                ups = [
                    c for c in area["crossings"] if c["level"] == name and c["direction"] == "above"
                ]
                first = next((t for t, v in series if v >= threshold), None)
                if not ups:
                    # never expected: no reading clearly over it (gauge noise is ~1 cm)
                    assert all(v < threshold + 0.04 for _, v in series), (gauge, name)
                    continue
                crossing = datetime.fromisoformat(ups[0]["time"])
                assert first is not None, (gauge, name)
                window = (crossing - timedelta(minutes=10), crossing + timedelta(minutes=15))
                assert window[0] <= first <= window[1], (gauge, name, first, crossing)
                checked += 1
    assert checked >= 9


@pytest.mark.stack
async def test_monsoon_storm_played_fast_stores_rows_for_every_device_and_kind(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
) -> None:
    await services.start("ingest", "processor")
    run = ScenarioRun(
        load_scenario("monsoon-storm"),
        devices=12,
        seed=7,
        prefix=ns.prefix,
        id_prefix=ns.device_prefix,
        fault_scale=3.0,  # a small fleet still meets most faults
    )
    msgs: list[Message] = list(run.messages())
    # Each device's messages reach Kafka in the run's order, whatever the broker does with
    # a burst: the spike check below needs a spike's neighbours judged as neighbours.
    await publish_in_device_order(ns, publisher, msgs)

    expected_rows = sum(m.rows for m in msgs)
    rejected = sum(1 for m in msgs if not m.valid)

    async def all_stored() -> bool:
        return await ns.rows(dbcon) == expected_rows

    await wait_until(all_stored, timeout=90, what=f"{expected_rows} rows of the storm")
    rows = await dbcon.fetch(
        "SELECT r.device_id, d.kind, count(*) AS n FROM readings r "
        "JOIN devices d USING (device_id) WHERE r.device_id LIKE $1 GROUP BY 1, 2",
        f"{ns.device_prefix}%",
    )
    stored = {r["device_id"]: r["kind"] for r in rows}
    assert stored == {d.who.device_id: d.who.kind for d in run.devices}
    assert set(stored.values()) == set(KINDS)
    # The storm's peak is in the table: gauges where danger is expected passed it.
    danger = [
        f for f in run.expectations()["flood"] if f["highest_level"] == "danger" and f["gauges"]
    ]
    assert danger
    for area in danger:
        peak = await dbcon.fetchval(
            "SELECT max(value) FROM readings "
            "WHERE device_id = ANY($1) AND metric = 'water_level_m'",
            area["gauges"],
        )
        assert peak is not None and peak >= area["levels_m"]["danger"], area["area"]
    # Every spike the run injected is flagged by the spike test (QARTOD suspect or fail)
    # wherever the centred test can judge it: its device's previous and next messages are
    # clean, single, on-time readings within the quality window's gap. (A spike beside a
    # late, buffered, skewed or missing neighbour is judged against other neighbours or not
    # at all, as services/quality/qartod.py documents; counters such as litter_items get
    # no spike test.)
    qc = load_quality_config(ns.settings.quality_file)
    kind_of = {d.who.device_id: d.who.kind for d in run.devices}
    max_gap = timedelta(seconds=qc.limits.max_gap_s)

    def single_time(m: Message) -> datetime | None:
        body = json.loads(m.payload) if m.valid else None
        if not isinstance(body, dict) or m.faults:
            return None
        return datetime.fromisoformat(body["time"].replace("Z", "+00:00"))

    by_device: dict[str, list[Message]] = {}
    for m in msgs:
        by_device.setdefault(m.device_id, []).append(m)
    judged = 0
    for series_msgs in by_device.values():
        for i in range(1, len(series_msgs) - 1):
            spike, prev, nxt = series_msgs[i], series_msgs[i - 1], series_msgs[i + 1]
            if not (spike.valid and spike.faults == ("spike",) and spike.fault_metric):
                continue
            if qc.for_metric(kind_of[spike.device_id], spike.fault_metric).spike is None:
                continue
            at = datetime.fromisoformat(json.loads(spike.payload)["time"].replace("Z", "+00:00"))
            t_prev, t_next = single_time(prev), single_time(nxt)
            if t_prev is None or t_next is None or t_next - at > max_gap or at - t_prev > max_gap:
                continue
            flag = await dbcon.fetchval(
                "SELECT quality FROM readings WHERE device_id = $1 AND metric = $2 AND time = $3",
                spike.device_id,
                spike.fault_metric,
                at,
            )
            judged += 1
            assert flag in (3, 4), (spike.device_id, spike.fault_metric, at, flag)
    assert judged > 0
    # Every payload the run meant to be refused is on the rejected topic, and only those.
    assert rejected > 0
    await ns.read_topic(ns.rejected_topic, rejected)
    assert await ns.end_offsets(ns.rejected_topic) == rejected


def test_flash_flood_lifts_a_river_by_more_than_a_metre_within_minutes_past_danger() -> None:
    run = ScenarioRun(load_scenario("flash-flood"), devices=40, seed=1, now=NOW)
    levels = run.env.flood["kampong-seila"].levels  # one-minute grid
    assert max(levels[i + 10] - levels[i] for i in range(len(levels) - 10)) > 1.0
    by_area = {f["area"]: f for f in run.expectations()["flood"]}
    assert by_area["kampong-seila"]["highest_level"] == "danger"
    assert by_area["prek-toek-sap-mouth"]["highest_level"] == "danger"
    assert by_area["stueng-hav"]["crossings"] == []


def test_every_value_fault_is_labelled_per_reading_and_every_silence_listed() -> None:
    rates = FaultRates(spike=0.02, stuck=0.01, drift=0.3, out_of_range=0.01, dropout=0.01)
    run = ScenarioRun(load_scenario("normal-day"), devices=24, seed=5, now=NOW, faults=rates)
    labels = {lb for m in run.messages() for lb in m.labels}
    faults = {f for _t, _m, f in labels}
    assert {"spike", "stuck", "drift", "out_of_range"} <= faults
    assert 0 < len(run.silences) <= run.stats.onsets["dropout"]
    assert sum(s["missed"] for s in run.silences) == run.stats.faults["dropout"]
