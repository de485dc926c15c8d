"""The processor: Kafka readings -> batches -> one database transaction -> offset commit.

The commit order is the guarantee. Offsets are committed only after the transaction that
holds the batch has committed, so a crash anywhere before that re-delivers the batch, and
the natural key `(device_id, metric, time)` makes the second write a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack, suppress
from enum import Enum
from types import TracebackType
from typing import Self

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from schemas import Reading, Rejection, now_utc
from services.common import db, kafka
from services.common.batches import Batch, BatchLoop, Upstreams, probe_upstreams
from services.common.errors import DatabaseUnavailable
from services.common.http import HttpServer
from services.common.settings import Settings
from services.processor import metrics as m

log = logging.getLogger(__name__)


class CommitPolicy(Enum):
    """When Kafka offsets are committed. There is one policy, and it is this one."""

    AFTER_DB_COMMIT = "commit offset+1 of each partition after the batch's transaction commits"


class ProcessorService:
    """`async with ProcessorService(settings) as svc: await svc.run()`."""

    commit_policy = CommitPolicy.AFTER_DB_COMMIT

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self._stack = AsyncExitStack()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pool: asyncpg.Pool | None = None
        self.health = Upstreams()

    async def __aenter__(self) -> Self:
        s = self.settings
        client_id = f"citywatch-processor-{s.processor.group_id}"
        try:
            await self._stack.enter_async_context(
                HttpServer(
                    service="processor",
                    host=s.http_host,
                    port=s.processor.http_port,
                    ready_checks=self.ready_checks,
                )
            )
            self._pool = await self._stack.enter_async_context(db.create_pool(s.database_dsn))
            # For the rare record that is not a reading: it goes to the rejected topic.
            self._producer = await self._stack.enter_async_context(
                kafka.producer(s, client_id=client_id, stop=self.stop_event)
            )
            self._consumer = await self._stack.enter_async_context(
                kafka.consumer(
                    s,
                    group_id=s.processor.group_id,
                    topics=[s.topics.readings],
                    client_id=client_id,
                    max_poll_records=s.processor.batch_size,
                    stop=self.stop_event,
                )
            )
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def ready_checks(self) -> dict[str, bool]:
        checks = self.health.checks()
        m.READY.set(1 if all(checks.values()) else 0)
        return checks

    async def run(self) -> None:
        assert self._consumer is not None
        log.info("processor running", extra={"commit_policy": self.commit_policy.name})
        assert self._pool is not None
        loop = BatchLoop(
            self._consumer,
            batch_size=self.settings.processor.batch_size,
            max_wait_ms=self.settings.processor.batch_max_wait_ms,
            stop=self.stop_event,
            health=self.health,
        )
        background = [
            asyncio.create_task(probe_upstreams(self.health, self._pool, self._consumer)),
            asyncio.create_task(self._partitions_upkeep()),
        ]
        try:
            await loop.run(self._store)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with suppress(asyncio.CancelledError):
                    await task

    async def _store(self, batch: Batch) -> None:
        """Write one batch in one transaction. BatchLoop commits the offsets afterwards."""
        assert self._pool is not None
        readings = await self._decode(batch)
        if not readings:
            return
        try:
            async with self._pool.acquire() as con, con.transaction():
                stored = await db.store_readings(con, readings)
        except db.CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable("postgresql", repr(exc)) from exc
        done = now_utc()
        m.BATCHES.inc()
        m.BATCH_SIZE.observe(len(readings))
        m.READINGS.inc(stored.readings)
        m.ROWS_STORED.inc(stored.rows_inserted)
        m.ROWS_DUPLICATE.inc(stored.rows_offered - stored.rows_inserted)
        for r in readings:
            m.LATENCY.observe(max(0.0, (done - r.received_at).total_seconds()))
        log.debug(
            "batch stored",
            extra={"readings": stored.readings, "rows_inserted": stored.rows_inserted},
        )

    async def _decode(self, batch: Batch) -> list[Reading]:
        readings: list[Reading] = []
        for rec in batch.records:
            try:
                readings.append(Reading.from_kafka(rec.value))
            except (ValidationError, TypeError) as exc:
                await self._forward_undecodable(rec, str(exc))
        return readings

    async def _forward_undecodable(self, rec: ConsumerRecord, detail: str) -> None:
        """A record on the readings topic that is not a reading: never silently dropped."""
        assert self._producer is not None
        m.UNDECODABLE.inc()
        rejection = Rejection(
            reason="undecodable_record",
            detail=f"{rec.topic}[{rec.partition}]@{rec.offset}: {detail[:500]}",
            topic=f"kafka:{rec.topic}",
            raw=rec.value or b"",
            received_at=now_utc(),
        )
        log.error(
            "undecodable record forwarded", extra={"partition": rec.partition, "offset": rec.offset}
        )
        await self._producer.send_and_wait(self.settings.topics.rejected, rejection.to_kafka())

    async def _partitions_upkeep(self) -> None:
        """Create tomorrow's daily partitions ahead of the data, now and every hour."""
        assert self._pool is not None
        while True:
            try:
                async with self._pool.acquire() as con:
                    created = await db.ensure_partitions(con)
                if created:
                    log.info("daily partitions created", extra={"partitions": created})
                await asyncio.sleep(3600)
            except db.CONNECTION_ERRORS as exc:
                log.warning("partition upkeep deferred", extra={"error": repr(exc)})
                await asyncio.sleep(30)
