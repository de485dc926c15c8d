"""The processor: Kafka readings -> batches -> one database transaction -> offset commit.

The commit order is the guarantee. Offsets are committed only after the transaction that
holds the batch has committed, so a crash anywhere before that re-delivers the batch, and
the natural key `(device_id, metric, time)` makes the second write a no-op.

Each row is stored with its IOOS QARTOD flag (services/quality/qartod.py). Per batch:
windows missing from memory are warmed from the database, the batch is judged without
touching the windows, the rows (and the spike verdicts for rows of earlier batches) are
written in the batch's transaction, and only then does the evaluator keep the new windows.
Per-device overrides are read from `devices.qc_overrides` before the first batch and then
every `processor.qc_overrides_refresh_s`. The drift check (services/quality/drift.py) runs
on the same schedule every `processor.drift_refresh_s`: one query for the recent bucket
means of every device with an area, whichever processor owns it, so the check sees whole
areas although the batches are split by device; the series it finds drifting are stored
suspect from the next batch on.

Two small additions sit in their own sections below: the rollups (on plain PostgreSQL the
batch's insert also merges its new rows into the minute and hour buckets, see
services/common/db.py and maintenance.py; on TimescaleDB continuous aggregates do it) and the
monitoring facts (Kafka consumer lag per partition, after each batch and every few
seconds; the newest reading time per area).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack, suppress
from enum import Enum

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from pydantic import ValidationError

from schemas import Reading, Rejection, now_utc
from services.common import db, kafka, maintenance
from services.common.batches import Batch, BatchLoop, Upstreams, probe_upstreams
from services.common.errors import DatabaseUnavailable, StateError
from services.common.http import HttpServer
from services.common.lifecycle import BackgroundTasks, ServiceBase
from services.common.settings import Settings
from services.processor import metrics as m
from services.quality import Flag, QualityEvaluator, load_quality_config
from services.quality.drift_refresh import DriftRefresh

log = logging.getLogger(__name__)


class CommitPolicy(Enum):
    """When Kafka offsets are committed. There is one policy, and it is this one."""

    AFTER_DB_COMMIT = "commit offset+1 of each partition after the batch's transaction commits"


class ProcessorService(ServiceBase):
    """`async with ProcessorService(settings) as svc: await svc.run()`."""

    commit_policy = CommitPolicy.AFTER_DB_COMMIT

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pool: asyncpg.Pool | None = None
        self.health = Upstreams()
        self.quality = QualityEvaluator(load_quality_config(settings.quality_file))
        self._overrides_read_at: float | None = None  # loop time of the last overrides read
        self._drift = DriftRefresh(self.quality, settings.processor.drift_refresh_s)
        self._assignment: frozenset[TopicPartition] = frozenset()
        self._rollups_here: bool | None = None  # plain path: this process keeps the rollups
        self._lag_labels: set[TopicPartition] = set()  # partitions with a lag gauge

    async def _open(self, stack: AsyncExitStack) -> None:
        s = self.settings
        client_id = f"citywatch-processor-{s.processor.group_id}"
        await stack.enter_async_context(
            HttpServer(
                service="processor",
                host=s.http_host,
                port=s.processor.http_port,
                ready_checks=self.ready_checks,
            )
        )
        self._pool = await stack.enter_async_context(db.create_pool(s.database_dsn))
        # For the rare record that is not a reading: it goes to the rejected topic.
        self._producer = await stack.enter_async_context(
            kafka.producer(
                s, account="citywatch-processor", client_id=client_id, stop=self.stop_event
            )
        )
        self._consumer = await stack.enter_async_context(
            kafka.consumer(
                s,
                account="citywatch-processor",
                group_id=s.processor.group_id,
                topics=[s.topics.readings],
                client_id=client_id,
                max_poll_records=s.processor.batch_size,
                stop=self.stop_event,
            )
        )

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
        async with BackgroundTasks() as background:
            background.start(probe_upstreams(self.health, self._pool, self._consumer))
            background.start(self._upkeep())
            background.start(self._watch())
            await loop.run(self._store, after_commit=self._after_commit)

    async def _store(self, batch: Batch) -> None:
        """Write one batch in one transaction. BatchLoop commits the offsets afterwards."""
        assert self._pool is not None
        readings = await self._decode(batch)
        if not readings:
            return
        self._forget_windows_on_rebalance()
        try:
            async with self._pool.acquire() as con:
                try:
                    await self._refresh_overrides(con)
                    await self._refresh_drift(con)
                    await self._warm_windows(con, readings)
                    judged = self.quality.evaluate(readings)
                    rollups = await self._keeps_rollups(con)
                    async with con.transaction():
                        stored = await db.store_readings(
                            con,
                            readings,
                            flags=judged.flags,
                            reflags=judged.reflags,
                            rollups=rollups,
                        )
                        if stored.failed:
                            touched = maintenance.failed_minutes(stored.failed)
                            m.ROLLUP_BUCKETS.inc(await maintenance.refresh_rollups(con, touched))
                except db.CONNECTION_ERRORS as exc:
                    db.discard_if_broken(con, exc)
                    raise
        except db.CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable("postgresql", repr(exc)) from exc
        # Committed: now the windows may move on (a failed batch is judged afresh).
        evicted = self.quality.evicted
        self.quality.commit(judged)
        m.QUALITY_EVICTED.inc(self.quality.evicted - evicted)
        m.QUALITY_SERIES.set(self.quality.series_count)
        m.QUALITY_LATE.inc(judged.late)
        for (metric, flag), n in stored.flags.items():
            m.QUALITY_FLAGS.labels(metric=metric, flag=Flag(flag).label).inc(n)
        for (metric, flag), n in stored.reflagged.items():
            m.QUALITY_REFLAGGED.labels(metric=metric, flag=Flag(flag).label).inc(n)
        done = now_utc()
        m.BATCHES.inc()
        m.BATCH_SIZE.observe(len(readings))
        m.READINGS.inc(stored.readings)
        m.ROWS_STORED.inc(stored.rows_inserted)
        m.ROWS_DUPLICATE.inc(stored.rows_offered - stored.rows_inserted)
        for r in readings:
            m.LATENCY.observe(max(0.0, (done - r.received_at).total_seconds()))
            m.DEVICE_LATENCY.observe(max(0.0, (done - r.time).total_seconds()))
        log.debug(
            "batch stored",
            extra={"readings": stored.readings, "rows_inserted": stored.rows_inserted},
        )

    # -- rollups (plain path) -------------------------------------------------------------

    async def _keeps_rollups(self, con: db.Conn) -> bool:
        """Whether this process keeps the rollups (the plain path), asked once.

        In the batch's transaction, not after it: the insert merges its new rows into the
        minute and hour buckets (`db.store_readings(..., rollups=True)`) and a reflag to
        fail recomputes its buckets, so readings and their rollups commit together, no
        crash leaves a committed batch without its buckets, and the offsets (committed
        after this) are never ahead of the rollups. A redelivered batch inserts nothing
        and so merges nothing.
        """
        if self._rollups_here is None:
            self._rollups_here = await maintenance.rollups_by_processor(con)
            log.info("rollups", extra={"kept_by_processor": self._rollups_here})
        return self._rollups_here

    # -- monitoring facts: consumer lag, area freshness ------------------------------------

    async def _after_commit(self, _: Batch) -> None:
        """After each committed batch: lag against the highwater the fetch brought."""
        await self._record_lag()

    async def _watch(self) -> None:
        """Forever, every 5 s: lag against freshly asked end offsets (the highwater goes
        stale while the loop is backing off from a database outage, which is exactly when
        lag grows), and the newest reading time per area."""
        assert self._consumer is not None and self._pool is not None
        while True:
            assigned = list(self._consumer.assignment())
            try:
                async with asyncio.timeout(5):
                    ends = await self._consumer.end_offsets(assigned) if assigned else {}
                await self._record_lag(ends)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.debug("consumer lag not measured", extra={"error": repr(exc)})
            try:
                async with asyncio.timeout(5), self._pool.acquire() as con:
                    areas = await maintenance.area_last_readings(con)
                for area, at in areas.items():
                    m.AREA_LAST_READING.labels(area=area).set(at.timestamp())
            except (*db.CONNECTION_ERRORS, TimeoutError, asyncpg.PostgresError) as exc:  # type: ignore[misc]
                log.warning("area freshness not measured", extra={"error": repr(exc)})
            await asyncio.sleep(5.0)  # the watch's period

    async def _record_lag(self, ends: Mapping[TopicPartition, int] | None = None) -> None:
        """Set `highwater - position` per assigned partition; drop partitions we lost."""
        assert self._consumer is not None
        assigned = set(self._consumer.assignment())
        for tp in self._lag_labels - assigned:
            with suppress(KeyError):
                m.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        self._lag_labels &= assigned
        for tp in sorted(assigned):
            try:
                end = ends.get(tp) if ends is not None else self._consumer.highwater(tp)
                if end is None:
                    continue  # nothing fetched from it yet
                async with asyncio.timeout(2):
                    position = await self._consumer.position(tp)
            except (IllegalStateError, AssertionError, KafkaError, TimeoutError):
                continue  # revoked meanwhile, or no position yet: measured next time
            m.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                max(0, end - position)
            )
            self._lag_labels.add(tp)

    # -- quality windows -------------------------------------------------------------------

    def _forget_windows_on_rebalance(self) -> None:
        """After a rebalance, another processor may have stored newer rows of our devices
        than our windows hold: drop them all; they are warmed from the database again."""
        assert self._consumer is not None
        now = frozenset(self._consumer.assignment())
        if now != self._assignment:
            if self._assignment:
                log.info(
                    "partition assignment changed; quality windows dropped",
                    extra={"series": self.quality.series_count, "partitions": len(now)},
                )
            self.quality.forget()
            self._assignment = now

    async def _refresh_overrides(self, con: db.Conn) -> None:
        """Read every device's QARTOD overrides before the first batch, then periodically."""
        loop_now = asyncio.get_running_loop().time()
        every = self.settings.processor.qc_overrides_refresh_s
        if self._overrides_read_at is not None and loop_now - self._overrides_read_at < every:
            return
        rows = await db.qc_overrides(con)
        errors = self.quality.set_overrides(rows)
        for error in errors:
            log.warning("device QARTOD overrides ignored", extra={"error": error})
        self._overrides_read_at = loop_now
        log.debug("qc overrides read", extra={"devices": len(rows), "invalid": len(errors)})

    async def _refresh_drift(self, con: db.Conn) -> None:
        found = await self._drift.run(con)
        if found is not None:
            m.QUALITY_DRIFTING.set(len(found))

    async def _warm_windows(self, con: db.Conn, readings: list[Reading]) -> None:
        """Load the newest stored values of series the evaluator has no window for."""
        missing = self.quality.missing(readings)
        if not missing:
            return
        per_series = self.quality.config.limits.window_points
        found = await db.recent_values(con, missing, per_series)
        for key, rows in found.items():
            self.quality.warm(key, rows)
        m.QUALITY_WARMED.inc(len(found))

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

    async def _upkeep(self) -> None:
        """Storage upkeep in the background: tomorrow's daily partitions ahead of the data
        (now and every hour), and retention (at start and every `retention.maintain_every_h`
        hours; services/common/maintenance.py) so that a platform left running keeps its
        database to the configured size without anyone scheduling `citywatch db maintain`."""
        assert self._pool is not None
        every_h = self.settings.retention.maintain_every_h
        loop = asyncio.get_running_loop()
        next_maintenance = loop.time() if every_h > 0 else float("inf")
        while True:
            try:
                async with self._pool.acquire() as con:
                    created = await db.ensure_partitions(con)
                    if created:
                        log.info("daily partitions created", extra={"partitions": created})
                    if loop.time() >= next_maintenance:
                        await self._maintain(con)
                        next_maintenance = loop.time() + every_h * 3600
                await asyncio.sleep(min(3600.0, max(1.0, next_maintenance - loop.time())))
            except db.CONNECTION_ERRORS as exc:
                log.warning("storage upkeep deferred", extra={"error": repr(exc)})
                await asyncio.sleep(30)

    async def _maintain(self, con: db.Conn) -> None:
        try:
            report = await maintenance.maintain_if_free(con, self.settings.retention)
        except (asyncpg.PostgresError, StateError) as exc:
            # Not migrated yet, or a statement refused: readings still flow; say so loudly
            # and try again at the next turn rather than end the upkeep task.
            log.error("retention failed", extra={"error": repr(exc)})
            m.MAINTENANCE_RUNS.labels(outcome="failed").inc()
            return
        if report is None:
            log.info("retention skipped: another process is applying it")
            m.MAINTENANCE_RUNS.labels(outcome="skipped").inc()
            return
        m.MAINTENANCE_RUNS.labels(outcome="done").inc()
        m.MAINTENANCE_DROPPED.inc(len(report.dropped))
