"""Unit tests for the simulated fleet: reproducible, and decodable exactly as it claims."""

from __future__ import annotations

import base64
import json
import re
import struct
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import islice, pairwise
from statistics import mean
from typing import Any

import pytest

from schemas import METRICS, Reading, Rejection
from schemas.adapters import decode_native
from schemas.registry import KINDS, metric_spec
from simulators.faults import FAULTS, FaultRates
from simulators.fleet import Fleet, Message
from simulators.formats import FORMATS, SENML_UNITS, Format, Identity, Sample, frm_payload
from simulators.run import ScenarioRun
from simulators.scenarios import load_scenario

START = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
RECEIVED = START + timedelta(days=1)


def take(fleet: Fleet, n: int, step_ms: float = 60_000) -> list[Message]:
    return list(islice(fleet.messages(start=START, step_ms=step_ms), n))


def test_same_seed_gives_identical_messages() -> None:
    a = take(Fleet(per_kind=3, seed=7, malformed_share=0.2), 200)
    b = take(Fleet(per_kind=3, seed=7, malformed_share=0.2), 200)
    assert a == b
    assert [m.payload for m in a] == [m.payload for m in b]


def test_different_seeds_give_different_payloads() -> None:
    a = take(Fleet(per_kind=2, seed=1), 20)
    b = take(Fleet(per_kind=2, seed=2), 20)
    assert [m.payload for m in a] != [m.payload for m in b]


def test_messages_round_robin_over_every_device_of_every_kind() -> None:
    fleet = Fleet(per_kind=3, seed=1)
    msgs = take(fleet, len(fleet.devices) * 2)
    assert len(fleet.devices) == 3 * len(KINDS)
    assert Counter(m.device_id for m in msgs) == {d.device_id: 2 for d in fleet.devices}
    assert {m.topic.split("/")[1] for m in msgs} == set(KINDS)


def test_topics_follow_the_uplink_grammar_under_the_prefix() -> None:
    fleet = Fleet(per_kind=1, seed=1, prefix="tabc", id_prefix="t1-")
    for m in take(fleet, len(fleet.devices)):
        prefix, kind, device_id, up = m.topic.split("/")
        assert (prefix, up, device_id) == ("tabc", "up", m.device_id)
        assert device_id.startswith(f"t1-{kind}-")


def test_valid_messages_decode_into_readings_within_registry_ranges() -> None:
    fleet = Fleet(per_kind=3, seed=11)
    seen: set[tuple[str, str]] = set()
    for m in take(fleet, 600, step_ms=5 * 60_000):  # ~2 days: the whole daily swing
        assert m.valid
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert not isinstance(result, Rejection), (m, result)
        assert len(result) == 1
        reading = result[0]
        assert reading.device_id == m.device_id
        assert reading.time_from_gateway is False
        for name, value in reading.metrics.items():
            spec = metric_spec(reading.kind, name)
            assert spec is not None, name
            assert spec.accepts(value), (reading.kind, name, value)
            seen.add((reading.kind, name))
    assert {k for k, _ in seen} == set(KINDS)


def test_valid_message_reading_time_is_start_plus_step() -> None:
    fleet = Fleet(per_kind=1, seed=3)
    for i, m in enumerate(take(fleet, 8, step_ms=1500)):
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(result, list)
        assert result[0].time == START + timedelta(milliseconds=1500 * i)


def test_message_rows_equals_number_of_decoded_metrics() -> None:
    for m in take(Fleet(per_kind=2, seed=5), 80):
        readings = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(readings, list)
        assert m.rows == sum(len(r.metrics) for r in readings)
        assert m.rows == len(readings[0].metrics)


def test_seq_increases_per_device() -> None:
    fleet = Fleet(per_kind=1, seed=2)
    by_device: dict[str, list[int | None]] = {}
    for m in take(fleet, len(fleet.devices) * 3):
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(result, list)
        by_device.setdefault(m.device_id, []).append(result[0].seq)
    assert all(seqs == [1, 2, 3] for seqs in by_device.values())


def test_fully_malformed_fleet_is_rejected_with_exactly_the_expected_reason() -> None:
    fleet = Fleet(per_kind=2, seed=9, malformed_share=1.0)
    reasons: Counter[str] = Counter()
    for m in take(fleet, 300):
        assert not m.valid
        assert m.rows == 0
        assert m.expected_reason is not None
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(result, Rejection), m
        assert result.reason == m.expected_reason, (m, result.detail)
        assert result.raw == m.payload
        reasons[result.reason] += 1
    # every malformed kind the simulator knows appears in a run this long
    assert set(reasons) == {
        "not_json",
        "not_utf8",
        "wrong_type",
        "unknown_metric",
        "out_of_range",
        "time_without_zone",
        "device_mismatch",
    }


def test_mixed_fleet_valid_flag_matches_decode_outcome() -> None:
    for m in take(Fleet(per_kind=2, seed=4, malformed_share=0.3), 200):
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(result, list) == m.valid
        if not m.valid:
            assert isinstance(result, Rejection)
            assert result.reason == m.expected_reason


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_malformed_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="malformed_share"):
        Fleet(per_kind=1, malformed_share=share)


def test_fleet_restricted_to_some_kinds_only_sends_those() -> None:
    fleet = Fleet(per_kind=2, seed=1, kinds=("flood",))
    for m in take(fleet, 10):
        readings = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(readings, list)
        assert all(isinstance(r, Reading) and r.kind == "flood" for r in readings)
        assert set(readings[0].metrics) <= set(METRICS["flood"]) | {"battery_pct"}


# -- scenario fleets: behaviours, faults, formats ------------------------------------------------
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
QUIET = FaultRates()


@cache
def healthy(name: str, devices: int = 60) -> tuple[ScenarioRun, tuple[Message, ...]]:
    """A fault-free run of a shipped scenario (cached: several tests read the same one)."""
    run = ScenarioRun(load_scenario(name), devices=devices, seed=3, now=NOW, faults=QUIET)
    return run, tuple(run.messages())


def native_rows(
    msgs: tuple[Message, ...], kind: str
) -> dict[str, list[tuple[datetime, dict[str, float]]]]:
    """Per device of `kind`: (time, metrics) of every native reading, in order."""
    out: dict[str, list[tuple[datetime, dict[str, float]]]] = {}
    for m in msgs:
        if m.kind != kind or not m.valid:
            continue
        body = json.loads(m.payload)
        for item in body if isinstance(body, list) else [body]:
            t = datetime.fromisoformat(item["time"])
            out.setdefault(m.device_id, []).append((t, item["metrics"]))
    return out


def local_hour(t: datetime) -> float:
    return (t.hour + 7 + t.minute / 60) % 24


def test_same_seed_gives_identical_scenario_bytes_and_another_seed_does_not() -> None:
    def payloads(seed: int) -> list[bytes]:
        run = ScenarioRun(
            load_scenario("monsoon-storm"),
            devices=24,
            seed=seed,
            now=NOW,
            formats={f: 1.0 for f in FORMATS},
        )
        return [m.payload for m in run.messages()]

    assert payloads(5) == payloads(5)
    assert payloads(5) != payloads(6)


def test_scenario_messages_come_in_scenario_time_order_within_the_scenario() -> None:
    run, msgs = healthy("monsoon-storm")
    times = [m.sent_at for m in msgs]
    assert all(t is not None and run.start <= t < run.end for t in times)
    assert times == sorted(times)  # type: ignore[type-var]


def test_water_dissolved_oxygen_peaks_in_the_afternoon_and_bottoms_before_dawn() -> None:
    _, msgs = healthy("normal-day")
    by_hour: dict[int, list[float]] = {}
    for series in native_rows(msgs, "water").values():
        for t, metrics in series:
            by_hour.setdefault(int(local_hour(t)), []).append(metrics["dissolved_oxygen_mgl"])
    hourly = {h: mean(v) for h, v in by_hour.items()}
    assert 13 <= max(hourly, key=hourly.__getitem__) <= 17
    assert 2 <= min(hourly, key=hourly.__getitem__) <= 6
    assert hourly[15] - hourly[4] > 1.5


def test_water_turbidity_rises_after_storm_rain_and_is_low_before() -> None:
    run, msgs = healthy("monsoon-storm")
    before, after = [], []
    for series in native_rows(msgs, "water").values():
        for t, metrics in series:
            since = t - run.start
            if since < timedelta(minutes=30):
                before.append(metrics["turbidity_ntu"])
            elif timedelta(hours=2, minutes=30) <= since <= timedelta(hours=3, minutes=30):
                after.append(metrics["turbidity_ntu"])
    assert mean(before) < 15
    assert mean(after) > 5 * mean(before)


def test_flood_level_follows_the_tide_on_a_dry_day_at_river_mouths() -> None:
    _, msgs = healthy("normal-day")
    for device, series in native_rows(msgs, "flood").items():
        if "river-mouth" not in device and "estuary" not in device:
            continue
        levels = [m["water_level_m"] for _, m in series]
        # Tidal range of ~0.5-1 m, far above the gauge noise (~1 cm).
        assert 0.4 < max(levels) - min(levels) < 1.5, device


def test_flood_level_rises_with_storm_rain_and_recedes_after() -> None:
    run, msgs = healthy("monsoon-storm")
    series = native_rows(msgs, "flood")
    gauges = [d for d in series if "prek-toek-sap-mouth" in d]
    assert gauges
    for device in gauges:
        levels = [(t, m["water_level_m"]) for t, m in series[device]]
        first = levels[0][1]
        peak_t, peak = max(levels, key=lambda p: p[1])
        assert peak > first + 1.5
        assert run.start + timedelta(hours=2) < peak_t < run.start + timedelta(hours=5)
        assert levels[-1][1] < peak - 0.3  # recession under way by the end


def test_air_traffic_peaks_raise_no2_at_rush_hour() -> None:
    _, msgs = healthy("normal-day")
    rush, midday = [], []
    for device, series in native_rows(msgs, "air").items():
        if "mittapheap" not in device:
            continue
        for t, m in series:
            h = local_hour(t)
            if 7.5 <= h <= 8.5 or 17.5 <= h <= 18.5:
                rush.append(m["no2_ppb"])
            elif 11.5 <= h <= 13.5:
                midday.append(m["no2_ppb"])
    assert mean(rush) > 2 * mean(midday)


def test_haze_episode_pushes_pm25_past_unhealthy_and_pm10_never_below_pm25() -> None:
    run, msgs = healthy("haze-episode")
    peak_window, morning = [], []
    for series in native_rows(msgs, "air").values():
        for t, m in series:
            assert m["pm10_ugm3"] >= m["pm25_ugm3"]
            since = t - run.start
            if timedelta(hours=8) <= since <= timedelta(hours=10):
                peak_window.append(m["pm25_ugm3"])
            elif since <= timedelta(hours=1):
                morning.append(m["pm25_ugm3"])
    assert mean(peak_window) > 55.5 > mean(morning)


def test_litter_accumulates_and_collection_resets_beach_stations() -> None:
    _, msgs = healthy("normal-day")
    resets = 0
    for device, series in native_rows(msgs, "litter").items():
        items = [m["litter_items"] for _, m in series]
        drops = [
            (t, a, b) for (t, _), a, b in zip(series[1:], items, items[1:], strict=False) if b < a
        ]
        for _t, _a, b in drops:
            assert b < 60  # a collection empties the station: it restarts near zero
        if "beach" in device:
            assert any(6.5 <= local_hour(t) < 6.75 for t, _, _ in drops), device
        resets += len(drops)
        rises = sum(1 for a, b in pairwise(items) if b > a)
        assert rises > len(items) / 3  # between collections, it only grows
    assert resets > 0


def test_litter_surges_at_river_booms_after_the_storm() -> None:
    run, msgs = healthy("monsoon-storm")
    for device, series in native_rows(msgs, "litter").items():
        if "river-mouth" not in device:
            continue
        first_hour = [m["litter_items"] for t, m in series if t - run.start < timedelta(hours=1)]
        storm = [
            m["litter_items"]
            for t, m in series
            if timedelta(hours=2) <= t - run.start <= timedelta(hours=4)
        ]
        inflow_before = first_hour[-1] - first_hour[0]
        inflow_storm = max(storm) - min(storm)
        assert inflow_storm > 3 * max(inflow_before, 1), device


def test_every_healthy_scenario_message_decodes_within_registry_ranges() -> None:
    for name in ("normal-day", "monsoon-storm", "haze-episode"):
        run, msgs = healthy(name)
        for m in msgs:
            assert m.valid and m.faults == ()
            result = decode_native(m.topic, m.payload, RECEIVED)
            assert isinstance(result, list), (m, result)
            assert m.rows == sum(len(r.metrics) for r in result)
        kinds = {m.kind for m in msgs}
        assert kinds == set(KINDS)
        assert {m.device_id for m in msgs} == {d.who.device_id for d in run.devices}


def test_devices_stand_in_their_areas_around_sihanoukville() -> None:
    run, _ = healthy("monsoon-storm")
    for d in run.devices:
        dlat = (d.who.lat - d.area.lat) * 111_320
        dlon = (d.who.lon - d.area.lon) * 111_320 * 0.983
        assert (dlat**2 + dlon**2) ** 0.5 <= d.area.radius_m * 1.01 + 2
        assert 10.4 < d.who.lat < 11.3 and 103.4 < d.who.lon < 104.0
    areas = {d.area.id for d in run.devices}
    assert {"mittapheap", "prey-nob", "stueng-hav", "kampong-seila"} <= areas


# -- faults ---------------------------------------------------------------------------------------
def faulty(fault: str, rate: float, devices: int = 40, fmt: Format = "native") -> ScenarioRun:
    rates = FaultRates(**{fault: rate})
    return ScenarioRun(
        load_scenario("normal-day"), devices=devices, seed=9, now=NOW, faults=rates, formats=fmt
    )


@pytest.mark.parametrize(
    ("fault", "rate"),
    [
        ("spike", 0.05),
        ("duplicate", 0.05),
        ("out_of_order", 0.05),
        ("malformed", 0.05),
        ("dropout", 0.01),
        ("stuck", 0.01),
        ("late", 0.01),
    ],
)
def test_each_per_reading_fault_fires_at_roughly_its_rate(fault: str, rate: float) -> None:
    run = faulty(fault, rate)
    msgs = list(run.messages())
    labelled = [m for m in msgs if fault in m.faults]
    if fault == "dropout":  # a dropout sends nothing; the run counts the readings lost
        assert not labelled and run.stats.faults["dropout"] > 0
    else:
        assert labelled, fault
    assert set(run.stats.onsets) == {fault}
    observed = run.stats.onsets[fault] / run.stats.readings
    assert 0.6 * rate < observed < 1.4 * rate, (fault, observed)


@pytest.mark.parametrize("fault", ["drift", "low_battery", "clock_skew"])
def test_each_per_device_fault_hits_roughly_its_share_of_devices(fault: str) -> None:
    run = faulty(fault, 0.25, devices=200)
    msgs = list(run.messages())
    hit = {m.device_id for m in msgs if fault in m.faults}
    assert 0.15 * 200 < len(hit) < 0.35 * 200, len(hit)
    assert run.stats.onsets[fault] == len(hit)


def test_value_faults_name_the_metric_and_spikes_stay_physically_possible() -> None:
    run = faulty("spike", 0.05)
    for m in run.messages():
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(result, list)  # in range: a quality flag's job, not a rejection
        if m.fault == "spike":
            assert m.fault_metric in result[0].metrics


def test_stuck_values_repeat_exactly() -> None:
    run = faulty("stuck", 0.01)
    previous: dict[str, tuple[str, float] | None] = {}
    same = changed = 0
    for m in run.messages():
        last = previous.get(m.device_id)
        if m.fault != "stuck":
            previous[m.device_id] = None
            continue
        assert m.fault_metric is not None
        value = json.loads(m.payload)["metrics"][m.fault_metric]
        if last is not None and last[0] == m.fault_metric:
            same += last[1] == value
            changed += last[1] != value  # only where one episode directly follows another
        previous[m.device_id] = (m.fault_metric, value)
    assert same > 20 * max(changed, 1)


def test_duplicates_repeat_the_bytes_and_add_no_rows() -> None:
    msgs = list(faulty("duplicate", 0.05).messages())
    for prev, m in pairwise(msgs):
        if m.fault == "duplicate":
            assert (m.topic, m.payload) == (prev.topic, prev.payload)
            assert m.rows == 0 and m.valid


def test_out_of_order_messages_arrive_after_a_newer_reading_of_their_device() -> None:
    msgs = list(faulty("out_of_order", 0.05).messages())
    seen_seq: dict[str, int] = {}
    late_ones = 0
    for m in msgs:
        seq = json.loads(m.payload)["seq"]
        if m.fault == "out_of_order":
            assert seq < seen_seq[m.device_id]
            late_ones += 1
        seen_seq[m.device_id] = max(seen_seq.get(m.device_id, 0), seq)
    assert late_ones


def test_late_uploads_carry_buffered_readings_with_their_own_times() -> None:
    run = faulty("late", 0.01)
    found = 0
    for m in run.messages():
        if m.fault != "late":
            continue
        body = json.loads(m.payload)
        assert isinstance(body, list) and len(body) == m.readings >= 2
        times = [datetime.fromisoformat(b["time"]) for b in body]
        assert times == sorted(times) and m.sent_at is not None and times[0] < m.sent_at
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(result, list) and len(result) == len(body)
        found += 1
    assert found


def test_clock_skew_puts_readings_seven_hours_ahead_and_says_when_they_are_refused() -> None:
    run = faulty("clock_skew", 0.3)
    skewed = [m for m in run.messages() if m.fault == "clock_skew"]
    assert skewed
    for m in skewed:
        t = datetime.fromisoformat(json.loads(m.payload)["time"])
        assert m.sent_at is not None and t - m.sent_at == timedelta(hours=7)
        receipt = run.clock.wall_at(m.sent_at)
        assert m.valid == (t <= receipt + timedelta(minutes=5))
        if not m.valid:
            assert m.expected_reason == "time_in_future" and m.rows == 0


def test_malformed_scenario_payloads_are_rejected_with_their_expected_reason() -> None:
    for m in faulty("malformed", 0.2).messages():
        result = decode_native(m.topic, m.payload, RECEIVED)
        assert isinstance(result, Rejection) == (m.fault == "malformed")
        if isinstance(result, Rejection):
            assert result.reason == m.expected_reason


def test_fault_names_are_the_documented_ones() -> None:
    run = ScenarioRun(load_scenario("monsoon-storm"), devices=120, seed=2, now=NOW, fault_scale=8)
    labels = {f for m in run.messages() for f in m.faults}
    assert labels <= set(FAULTS)
    assert labels >= set(FAULTS) - {"dropout"}  # dropouts send nothing to label
    assert run.stats.faults["dropout"] > 0


# -- formats ------------------------------------------------------------------------------------
WHO = Identity("otres-river-mouth-flood-0001", "flood", 10.566, 103.584, "otres-river-mouth")
SAMPLES = [
    Sample(START + timedelta(minutes=5 * i), 40 + i,
           {"water_level_m": 2.31 + i / 100, "rain_mm_h": 12.5, "flow_m3s": 48.2,
            "battery_pct": 81.0, "rssi_dbm": -97.0})
    for i in range(3)
]  # fmt: skip
SENML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:./_-]*$")  # RFC 8428 §4.5.1
SENML_KEYS = {"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}


def test_native_encoding_is_one_object_or_a_list_decodable_as_such() -> None:
    from simulators.formats import encode_native

    topic, one = encode_native("citywatch", WHO, SAMPLES[:1])
    assert topic == f"citywatch/flood/{WHO.device_id}/up"
    assert json.loads(one)["seq"] == 40
    _, many = encode_native("citywatch", WHO, SAMPLES)
    result = decode_native(topic, many, RECEIVED)
    assert isinstance(result, list)
    assert [r.time for r in result] == [s.time for s in SAMPLES]
    assert result[1].metrics == SAMPLES[1].metrics


def test_senml_pack_follows_rfc_8428() -> None:
    from simulators.formats import encode_senml

    topic, payload = encode_senml("citywatch", WHO, SAMPLES)
    assert topic == f"citywatch/flood/{WHO.device_id}/up"
    pack = json.loads(payload)
    assert isinstance(pack, list) and len(pack) == 3 * 5
    first = pack[0]
    assert first["bn"] == f"urn:dev:mac:{WHO.dev_eui}:" and first["bn"].endswith(":")
    assert first["bt"] == SAMPLES[0].time.timestamp()
    resolved: list[tuple[str, float, str, float]] = []
    for rec in pack:
        assert set(rec) <= SENML_KEYS
        assert ("bn" in rec) == (rec is first)  # base fields once, in the first record
        name = first["bn"] + rec["n"]
        assert SENML_NAME.match(name)
        t = first["bt"] + rec.get("t", 0)
        resolved.append((rec["n"], t, rec["u"], rec["v"]))
    # (name, time) pairs are unique, and times resolve to the samples' times.
    assert len({(n, t) for n, t, _, _ in resolved}) == len(resolved)
    assert sorted({t for _, t, _, _ in resolved}) == [s.time.timestamp() for s in SAMPLES]
    by_name = {n: (u, v) for n, t, u, v in resolved if t == SAMPLES[0].time.timestamp()}
    assert by_name["water_level_m"] == ("m", 2.31)
    assert by_name["rain_mm_h"] == ("mm/h", 12.5)
    assert by_name["battery_pct"] == ("%EL", 81.0)


def test_senml_converts_to_registered_units_where_the_registry_unit_has_none() -> None:
    from simulators.formats import encode_senml

    water = Identity("w-1", "water", 10.6, 103.5, "x")
    sample = Sample(
        START, 1, {"dissolved_oxygen_mgl": 7.2, "conductivity_uscm": 450.0, "temperature_c": 29.1}
    )
    pack = json.loads(encode_senml("p", water, [sample])[1])
    got = {r["n"]: (r["u"], r["v"]) for r in pack}
    assert got["dissolved_oxygen_mgl"] == ("kg/m3", 0.0072)
    assert got["conductivity_uscm"] == ("S/m", 0.045)
    assert got["temperature_c"] == ("Cel", 29.1)
    assert set(SENML_UNITS) == {m for k in KINDS for m in METRICS[k]} | {"battery_pct", "rssi_dbm"}


def test_ttn_uplink_follows_the_things_stack_v3_data_format() -> None:
    from simulators.formats import encode_ttn

    s = SAMPLES[0]
    topic, payload = encode_ttn("sihanoukville-floods", WHO, s)
    assert topic == f"v3/sihanoukville-floods@ttn/devices/{WHO.device_id}/up"
    up: dict[str, Any] = json.loads(payload)
    ids = up["end_device_ids"]
    assert ids["device_id"] == WHO.device_id
    assert re.match(r"^[a-z0-9](?:[-]?[a-z0-9]){2,}$", ids["device_id"])  # TTS device id rule
    assert ids["application_ids"] == {"application_id": "sihanoukville-floods"}
    assert re.match(r"^[0-9A-F]{16}$", ids["dev_eui"])
    msg = up["uplink_message"]
    assert msg["f_cnt"] == s.seq and msg["f_port"] == 1
    assert msg["decoded_payload"] == {k: v for k, v in s.metrics.items() if k != "rssi_dbm"}
    raw = base64.b64decode(msg["frm_payload"])
    assert raw == frm_payload("flood", msg["decoded_payload"])
    assert struct.unpack(">i", raw[1:5])[0] == 2310  # water_level_m * 1000
    assert datetime.fromisoformat(up["received_at"]) >= s.time
    assert datetime.fromisoformat(msg["received_at"]) >= s.time
    rx = msg["rx_metadata"][0]
    assert rx["rssi"] == -97 and isinstance(rx["snr"], float)
    assert "gateway_id" in rx["gateway_ids"]
    assert msg["settings"]["data_rate"]["lora"]["bandwidth"] == 125000
    assert msg["settings"]["frequency"].isdigit()


def test_chirpstack_event_follows_the_v4_uplink_event() -> None:
    from simulators.formats import chirpstack_app_id, encode_chirpstack

    s = SAMPLES[0]
    topic, payload = encode_chirpstack("sihanoukville-floods", WHO, s)
    app_id = chirpstack_app_id("sihanoukville-floods")
    assert topic == f"application/{app_id}/device/{WHO.dev_eui}/event/up"
    ev: dict[str, Any] = json.loads(payload)
    assert re.match(r"^[0-9a-f]{16}$", ev["deviceInfo"]["devEui"])
    assert ev["deviceInfo"]["applicationId"] == app_id
    assert ev["deviceInfo"]["deviceName"] == WHO.device_id
    assert datetime.fromisoformat(ev["time"]) == s.time
    assert ev["fCnt"] == s.seq and ev["fPort"] == 1
    assert ev["object"] == {k: v for k, v in s.metrics.items() if k != "rssi_dbm"}
    assert base64.b64decode(ev["data"]) == frm_payload("flood", ev["object"])
    assert ev["rxInfo"][0]["rssi"] == -97 and "snr" in ev["rxInfo"][0]
    assert ev["txInfo"]["modulation"]["lora"]["spreadingFactor"] in range(7, 13)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_carries_every_device_of_a_scenario(fmt: Format) -> None:
    run = ScenarioRun(
        load_scenario("monsoon-storm"), devices=16, seed=4, now=NOW, formats=fmt, faults=QUIET
    )
    msgs = list(run.messages())
    assert {m.device_id for m in msgs} == {d.who.pipeline_id(fmt) for d in run.devices}
    for m in msgs:
        json.loads(m.payload)
        assert m.format == fmt
        if fmt == "ttn":
            assert m.topic.startswith("v3/citywatch@ttn/devices/")
        elif fmt == "chirpstack":
            assert m.topic.startswith("application/") and m.topic.endswith(
                f"/device/{m.device_id}/event/up"
            )
        else:
            assert m.topic.startswith("citywatch/") and m.topic.endswith(f"/{m.device_id}/up")


def test_senml_fill_level_is_a_ratio_because_senml_percent_is_not_a_percentage() -> None:
    from simulators.formats import encode_senml

    litter = Identity("boom-1", "litter", 10.6, 103.5, "x")
    sample = Sample(START, 1, {"litter_items": 120.0, "fill_level_pct": 45.0, "litter_kg": 3.0})
    got = {r["n"]: (r["u"], r["v"]) for r in json.loads(encode_senml("p", litter, [sample])[1])}
    assert got["fill_level_pct"] == ("/", 0.45)
    assert got["litter_items"] == ("count", 120.0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_gateway_decoder_gives_every_scenario_message_its_expected_fate_and_rows(
    fmt: Format,
) -> None:
    """The encoders here and the adapters in schemas/ agree: accepted or rejected as the
    message says, with the reason it names, the rows it counts and the values it carries."""
    from schemas.adapters import decode

    run = ScenarioRun(
        load_scenario("monsoon-storm"), devices=24, seed=3, now=NOW, formats=fmt, fault_scale=5
    )
    for m in run.messages():
        assert m.sent_at is not None
        result = decode(m.topic, m.payload, run.clock.wall_at(m.sent_at))
        if not m.valid:
            assert isinstance(result, Rejection) and result.reason == m.expected_reason, m
            continue
        assert isinstance(result, list), (m, result)
        assert {r.device_id for r in result} == {m.device_id}
        assert {r.kind for r in result} == {m.kind}
        if m.fault != "duplicate":
            assert sum(len(r.metrics) for r in result) == m.rows
        if fmt == "native":
            continue
        # Values survive the unit conversions (to a part in a million).
        native = json.loads(decode_native_payload(m))
        for reading, expected in zip(result, native, strict=True):
            for name, value in expected.items():
                assert reading.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def decode_native_payload(m: Message) -> str:
    """The metrics a non-native message carries, read back from its own payload."""
    body = json.loads(m.payload)
    if m.format == "ttn":
        return json.dumps([body["uplink_message"]["decoded_payload"]])
    if m.format == "chirpstack":
        return json.dumps([body["object"]])
    instants: dict[float, dict[str, float]] = {}
    for rec in body:
        unit, factor = SENML_UNITS[rec["n"]]
        assert rec["u"] == unit
        instants.setdefault(rec.get("t", 0), {})[rec["n"]] = rec["v"] / factor
    return json.dumps([instants[t] for t in sorted(instants)])
