"""The consume loop both Kafka-to-database services share.

    collect a batch  ->  handle it (one database transaction)  ->  commit offset + 1

If handling raises `DatabaseUnavailable`, the consumer seeks back to the batch's first
offsets, backs off with jitter, and fetches the same records again: overload and outages
become consumer lag, never lost or doubled rows. The loop never dies on an upstream error
and never spins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Counter

from services.common.backoff import Backoff
from services.common.db import CONNECTION_ERRORS
from services.common.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

COMMIT_FAILURES = Counter(
    "citywatch_commit_failures_total",
    "Offset commits refused or failed (the batch is re-read; its rewrite changes nothing)",
)
# While no record has arrived, `collect` returns empty this often (the loop then checks
# its stop event); the batch wait starts only at the first record.
_IDLE_POLL_S = 1.0

HANDLE_FAILURES = Counter(
    "citywatch_batch_failures_total", "Batches whose database transaction failed (retried)"
)


@dataclass
class Upstreams:
    """What /readyz reports for a Kafka-to-database service."""

    kafka: bool = False
    database: bool = False

    def checks(self) -> dict[str, bool]:
        return {"kafka": self.kafka, "database": self.database}


async def probe_upstreams(
    health: Upstreams, pool: asyncpg.Pool, consumer: AIOKafkaConsumer
) -> None:
    """Forever: ask the database and Kafka every 2 s, so /readyz tells the truth while idle."""
    while True:
        try:
            async with asyncio.timeout(5):
                async with pool.acquire() as con:
                    await con.fetchval("SELECT 1")
            health.database = True
        except (*CONNECTION_ERRORS, TimeoutError) as exc:  # type: ignore[misc]
            if health.database:
                log.warning("database unreachable", extra={"error": repr(exc)})
            health.database = False
        try:
            async with asyncio.timeout(5):
                await consumer.topics()
            health.kafka = True
        except (KafkaError, TimeoutError, OSError) as exc:
            if health.kafka:
                log.warning("kafka unreachable", extra={"error": repr(exc)})
            health.kafka = False
        await asyncio.sleep(2.0)  # the probe's period


@dataclass(frozen=True)
class Batch:
    records: list[ConsumerRecord]

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit: the last record's offset + 1."""
        out: dict[TopicPartition, int] = {}
        for r in self.records:
            tp = TopicPartition(r.topic, r.partition)
            out[tp] = max(out.get(tp, 0), r.offset + 1)
        return out

    def first_offsets(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for r in self.records:
            tp = TopicPartition(r.topic, r.partition)
            out[tp] = min(out.get(tp, r.offset), r.offset)
        return out


class BatchLoop:
    """Runs `handle` on each batch, then commits; see the module docstring for the order."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        batch_size: int,
        max_wait_ms: int,
        stop: asyncio.Event,
        health: Upstreams,
    ) -> None:
        self._consumer = consumer
        self._batch_size = batch_size
        self._max_wait_s = max_wait_ms / 1000
        self._stop = stop
        self._health = health

    async def run(
        self,
        handle: Callable[[Batch], Awaitable[None]],
        *,
        after_commit: Callable[[Batch], Awaitable[None]] | None = None,
    ) -> None:
        backoff = Backoff(initial_s=0.5, maximum_s=15)
        while not self._stop.is_set():
            batch = await self.collect()
            if not batch.records:
                continue
            try:
                await handle(batch)
            except DatabaseUnavailable as exc:
                HANDLE_FAILURES.inc()
                self._health.database = False
                log.warning(
                    "database unavailable; rewinding batch and backing off",
                    extra={"error": exc.detail, "records": len(batch.records)},
                )
                self.rewind(batch)
                await backoff.wait(self._stop)
                continue
            # handle() returned: its transaction has committed. Now the offsets may move.
            self._health.database = True
            backoff.reset()
            await self.commit(batch)
            if after_commit is not None:
                await after_commit(batch)

    async def collect(self) -> Batch:
        """Up to `batch_size` records, or what arrived within the batch wait of the first.

        The wait starts at the first record, not when collecting starts: an idle loop
        waits for records without a deadline (waking every `_IDLE_POLL_S` to see a stop),
        and a record is never held longer than `max_wait_ms` for company. Under load the
        records that arrived while the previous batch was being stored are already
        fetched, so batches grow with the load by themselves; at low load the wait bounds
        the latency a batch adds.
        """
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        records: list[ConsumerRecord] = []
        while len(records) < self._batch_size and not self._stop.is_set():
            if deadline is None:
                remaining = _IDLE_POLL_S
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
            got = await self._consumer.getmany(
                timeout_ms=max(1, int(remaining * 1000)),
                max_records=self._batch_size - len(records),
            )
            for msgs in got.values():
                records.extend(msgs)
            if deadline is None:
                if not records:
                    break  # idle: back to the caller, which looks at the stop event
                deadline = loop.time() + self._max_wait_s
        return Batch(records)

    async def commit(self, batch: Batch) -> None:
        try:
            await self._consumer.commit(batch.next_offsets())
            self._health.kafka = True
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another consumer during the batch. The new owner
            # rereads from the last commit, and rewriting the batch changes nothing.
            COMMIT_FAILURES.inc()
            log.warning("offset commit refused after rebalance", extra={"error": repr(exc)})
        except KafkaError as exc:
            COMMIT_FAILURES.inc()
            self._health.kafka = False
            log.warning("offset commit failed; batch will be re-read", extra={"error": repr(exc)})
            self.rewind(batch)

    def rewind(self, batch: Batch) -> None:
        """Seek back to the batch's first offsets so the same records are fetched again."""
        assigned = self._consumer.assignment()
        for tp, offset in batch.first_offsets().items():
            if tp in assigned:
                self._consumer.seek(tp, offset)
