"""The pure helpers behind `citywatch bench alerts`: percentiles, matching, probe stream."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from itertools import islice, repeat

import pytest

from services.bench.alerts import Probes, event_key, latencies
from services.bench.common import percentile
from simulators import Message

AT = datetime(2026, 11, 25, 8, 0, 0, 123000, tzinfo=UTC)


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(samples, 0.0) == 1.0
    assert percentile(samples, 1.0) == 4.0
    assert percentile(samples, 0.5) == pytest.approx(2.5)
    assert percentile([float(i) for i in range(101)], 0.99) == pytest.approx(99.0)


def test_percentile_of_no_samples_is_nan_not_zero() -> None:
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile([1.0], 99)


def test_firing_event_matches_its_reading_whatever_the_time_spelling() -> None:
    firing = {"transition": "firing", "device_id": "p-1", "at": "2026-11-25T08:00:00.123000Z"}
    assert event_key(firing) == ("p-1", AT)
    offset = {**firing, "at": "2026-11-25T15:00:00.123+07:00"}  # same instant, Phnom Penh
    assert event_key(offset) == ("p-1", AT)
    assert event_key({**firing, "transition": "resolved"}) is None


def test_latencies_count_only_readings_that_arrived() -> None:
    published = {("p-1", AT): 10.0, ("p-2", AT): 11.0}
    arrived = {("p-1", AT): 10.25, ("other", AT): 1.0}
    assert latencies(published, arrived) == [0.25]


def test_probes_alternate_cross_and_clear_and_record_only_crossings() -> None:
    background = Message("bg/up", b"{}", True, "bg")
    probes = Probes(devices=["p-0"], prefix="bench", interval_s=0.0)  # a probe before each
    out = list(islice(probes.messages(repeat(background)), 8))
    values = [
        json.loads(m.payload)["metrics"]["fill_level_pct"] for m in out if m.device_id == "p-0"
    ]
    assert values == [95.0, 10.0, 95.0, 10.0]
    assert len(probes.published) == 2  # the two crossings, keyed by (device, reading time)
    assert {device for device, _ in probes.published} == {"p-0"}
    assert probes.closing() == []  # it ended on a clear: nothing left open


def test_probes_persisting_two_readings_time_the_crossing_that_opens_the_alert() -> None:
    background = Message("bg/up", b"{}", True, "bg")
    probes = Probes(devices=["p-0"], prefix="bench", interval_s=0.0, persist=2)
    out = list(islice(probes.messages(repeat(background)), 12))
    probe_msgs = [m for m in out if m.device_id == "p-0"]
    values = [json.loads(m.payload)["metrics"]["fill_level_pct"] for m in probe_msgs]
    assert values == [95.0, 95.0, 10.0, 10.0, 95.0, 95.0]
    # Timed: the second reading of each run of two crossings (the rule's min_readings).
    times = [datetime.fromisoformat(json.loads(m.payload)["time"]) for m in probe_msgs]
    assert sorted(at for _, at in probes.published) == [times[1], times[5]]
    assert [m.device_id for m in probes.closing()] == ["p-0"]  # it ended crossed
