"""A reading's partition is Kafka's default for its key, so every producer agrees on it.

Per-device order rests on one device's records sharing a partition, whichever producer
(a gateway replica, a renewed producer, a Java client) wrote them. The vectors are Kafka's
own (`UtilsTest.testMurmur2` in apache/kafka): the Java client's murmur2 of each key.
"""

from __future__ import annotations

import pytest

from services.common.kafka import KeyPartitioner

KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 12])
def test_a_keyed_record_goes_to_the_java_clients_partition_every_time(partitions: int) -> None:
    partitioner = KeyPartitioner()
    every = list(range(partitions))
    for _ in range(2):  # computed, then remembered
        for key, java in KAFKA_MURMUR2.items():
            # Java: Utils.toPositive(Utils.murmur2(key)) % numPartitions
            want = (java & 0x7FFFFFFF) % partitions
            assert partitioner(key, every, every) == want, key


def test_a_remembered_key_follows_a_change_in_the_partition_count() -> None:
    partitioner = KeyPartitioner()
    key = b"a-little-bit-longer-string"
    assert partitioner(key, [0, 1, 2], [0, 1, 2]) == (-1486304829 & 0x7FFFFFFF) % 3
    assert partitioner(key, list(range(7)), [0]) == (-1486304829 & 0x7FFFFFFF) % 7
