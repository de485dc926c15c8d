"""Unit tests for the simulated fleet: reproducible, and decodable exactly as it claims."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from schemas import METRICS, Reading, Rejection
from schemas.adapters import decode_native
from schemas.registry import KINDS, metric_spec
from simulators.fleet import Fleet, Message

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
