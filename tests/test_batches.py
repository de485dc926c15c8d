"""Unit tests for the batch offset arithmetic and the retry backoff (no Kafka needed)."""

from __future__ import annotations

import random

from aiokafka import ConsumerRecord, TopicPartition

from services.common.backoff import Backoff
from services.common.batches import Batch

TOPIC = "citywatch.readings.v1"


def record(partition: int, offset: int, topic: str = TOPIC) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
        headers=(),
    )


def tp(partition: int, topic: str = TOPIC) -> TopicPartition:
    return TopicPartition(topic, partition)


# -- Batch --------------------------------------------------------------------------------


def test_next_offsets_are_last_offset_plus_one_per_partition() -> None:
    batch = Batch([record(0, 10), record(1, 3), record(0, 11), record(0, 12), record(1, 4)])
    assert batch.next_offsets() == {tp(0): 13, tp(1): 5}


def test_first_offsets_are_the_minimum_per_partition() -> None:
    batch = Batch([record(0, 10), record(1, 3), record(0, 11), record(1, 4)])
    assert batch.first_offsets() == {tp(0): 10, tp(1): 3}


def test_offsets_do_not_depend_on_record_order() -> None:
    records = [record(p, o) for p in range(3) for o in range(100, 110)]
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert Batch(shuffled).next_offsets() == {tp(p): 110 for p in range(3)}
    assert Batch(shuffled).first_offsets() == {tp(p): 100 for p in range(3)}


def test_offset_zero_is_first_and_commits_one() -> None:
    batch = Batch([record(0, 0)])
    assert batch.first_offsets() == {tp(0): 0}
    assert batch.next_offsets() == {tp(0): 1}


def test_same_partition_number_of_different_topics_is_kept_apart() -> None:
    batch = Batch([record(0, 5), record(0, 50, topic="citywatch.rejected.v1")])
    assert batch.next_offsets() == {tp(0): 6, tp(0, "citywatch.rejected.v1"): 51}
    assert batch.first_offsets() == {tp(0): 5, tp(0, "citywatch.rejected.v1"): 50}


def test_empty_batch_has_no_offsets() -> None:
    assert Batch([]).next_offsets() == {}
    assert Batch([]).first_offsets() == {}


# -- Backoff ------------------------------------------------------------------------------


def test_backoff_delays_grow_with_full_jitter_within_each_step() -> None:
    backoff = Backoff(initial_s=0.5, maximum_s=100, _rng=random.Random(3))
    for attempt in range(6):
        cap = 0.5 * 2**attempt
        delay = backoff.next_delay()
        assert cap / 2 <= delay <= cap


def test_backoff_upper_bound_doubles_until_the_cap() -> None:
    backoff = Backoff(initial_s=0.2, maximum_s=10, _rng=_MaxRandom())
    assert [backoff.next_delay() for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]


def test_backoff_never_exceeds_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, maximum_s=15, _rng=random.Random(5))
    delays = [backoff.next_delay() for _ in range(60)]
    assert all(0 < d <= 15 for d in delays)
    assert all(d >= 7.5 for d in delays[10:])


def test_backoff_reset_restarts_from_the_initial_delay() -> None:
    backoff = Backoff(initial_s=0.5, maximum_s=15, _rng=_MaxRandom())
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == 0.5
    assert backoff.next_delay() == 1.0


def test_backoff_survives_a_long_outage_without_overflow() -> None:
    # Bug: cap = min(maximum_s, initial_s * 2**attempt) converts 2**attempt to float;
    # from attempt 1024 on (about 3 h of retries at <= 15 s) it raises OverflowError,
    # which ends BatchLoop.run / the ingest gateway's _confirm retry loop.
    backoff = Backoff(initial_s=0.5, maximum_s=15, _rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(1100)]
    assert max(delays) <= 15


class _MaxRandom(random.Random):
    """Always picks the top of the jitter range, so delays are exactly the caps."""

    def uniform(self, a: float, b: float) -> float:
        return b
