"""The alerts service: readings -> threshold rules -> alert lifecycle -> alerts table + Kafka.

Per batch, in this order:
  1. evaluate the readings against the rules (pure, `engine.evaluate`);
  2. store transitions, events and cursors in one transaction;
  3. commit the Kafka offsets;
  4. publish unpublished events from the `alert_events` outbox to `citywatch.alerts.v1`,
     then mark them published.
A crash between 2 and 4 leaves events unpublished, and the next start publishes them: an
event is published at least once and, with no crash in that window, exactly once. Consumers
deduplicate on `event_id`.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack, suppress
from types import TracebackType
from typing import Self

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from pydantic import ValidationError

from schemas import Reading
from services.alerts import metrics as m
from services.alerts import store
from services.alerts.engine import Key, RuleState, evaluate
from services.alerts.rules import RuleSet, load_rules
from services.common import db, kafka
from services.common.batches import Batch, BatchLoop, Upstreams, probe_upstreams
from services.common.errors import DatabaseUnavailable
from services.common.http import HttpServer
from services.common.settings import Settings

log = logging.getLogger(__name__)


class _ReloadOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """After a rebalance the evaluation state is rebuilt from the database, because another
    instance may have advanced it for the partitions we now own."""

    def __init__(self, service: AlertsService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None  # each batch commits right after its transaction: nothing to flush

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._service.state_stale = True


class AlertsService:
    """`async with AlertsService(settings) as svc: await svc.run()`."""

    def __init__(self, settings: Settings, rules: RuleSet | None = None) -> None:
        self.settings = settings
        self.rules = rules or load_rules(settings.alerts.rules_file)
        self.stop_event = asyncio.Event()
        self.state: dict[Key, RuleState] = {}
        self.state_stale = True
        self._outbox_dirty = True
        self.health = Upstreams()
        self._stack = AsyncExitStack()
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        s = self.settings
        client_id = f"citywatch-alerts-{s.alerts.group_id}"
        try:
            await self._stack.enter_async_context(
                HttpServer(
                    service="alerts",
                    host=s.http_host,
                    port=s.alerts.http_port,
                    ready_checks=self.ready_checks,
                    routes=[web.get("/alerts", self._get_alerts)],
                )
            )
            self._pool = await self._stack.enter_async_context(db.create_pool(s.database_dsn))
            self._producer = await self._stack.enter_async_context(
                kafka.producer(s, client_id=client_id, stop=self.stop_event)
            )
            self._consumer = await self._stack.enter_async_context(
                kafka.consumer(
                    s,
                    group_id=s.alerts.group_id,
                    topics=[s.topics.readings],
                    client_id=client_id,
                    listener=_ReloadOnAssign(self),
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
        log.info("alerts running", extra={"rules": [r.id for r in self.rules.rules]})
        loop = BatchLoop(
            self._consumer,
            batch_size=2000,
            max_wait_ms=self.settings.alerts.batch_max_wait_ms,
            stop=self.stop_event,
            health=self.health,
        )
        assert self._pool is not None
        probe = asyncio.create_task(probe_upstreams(self.health, self._pool, self._consumer))
        try:
            await self._publish_outbox()  # events a crash left unpublished
            await loop.run(self._handle, after_commit=self._after_commit)
            await self._publish_outbox()
        finally:
            probe.cancel()
            with suppress(asyncio.CancelledError):
                await probe

    async def _handle(self, batch: Batch) -> None:
        assert self._pool is not None
        readings: list[Reading] = []
        for rec in batch.records:
            try:
                readings.append(Reading.from_kafka(rec.value))
            except ValidationError:
                continue  # the processor forwards undecodable records to the rejected topic
        try:
            async with self._pool.acquire() as con:
                if self.state_stale:
                    self.state = await store.load_state(con)
                    self.state_stale = False
                ev = evaluate(self.rules, self.state, readings)
                async with con.transaction():
                    await store.apply(con, ev)
        except db.CONNECTION_ERRORS as exc:
            self.state_stale = True  # memory may be ahead of the database now
            raise DatabaseUnavailable("postgresql", repr(exc)) from exc
        m.READINGS.inc(len(readings))
        for t in ev.transitions:
            m.TRANSITIONS.labels(t.kind, t.rule.severity).inc()
            log.info(
                "alert transition",
                extra={
                    "transition": t.kind,
                    "alert_id": str(t.alert_id),
                    "rule": t.rule.id,
                    "device_id": t.device_id,
                    "value": t.value,
                    "at": t.at.isoformat(),
                },
            )
        m.ACTIVE.set(sum(1 for st in self.state.values() if st.open is not None))
        self._outbox_dirty = self._outbox_dirty or bool(ev.transitions)

    async def _after_commit(self, _batch: Batch) -> None:
        if self._outbox_dirty:
            await self._publish_outbox()

    async def _publish_outbox(self) -> None:
        """Send every unpublished event, then mark it published. Failures leave the rows for
        the next batch or the next start: deferred, never lost."""
        assert self._pool is not None and self._producer is not None
        self._outbox_dirty = False
        try:
            async with self._pool.acquire() as con:
                while rows := await store.unpublished(con):
                    futures = [
                        await self._producer.send(
                            self.settings.topics.alerts,
                            key=str(r["alert_id"]).encode(),
                            value=store.event_message(r),
                        )
                        for r in rows
                    ]
                    await asyncio.gather(*futures)
                    await store.mark_published(con, [r["event_id"] for r in rows])
                    m.PUBLISHED.inc(len(rows))
        except (*db.CONNECTION_ERRORS, kafka.KafkaError) as exc:
            self._outbox_dirty = True
            log.warning("alert publish deferred", extra={"error": repr(exc)})

    async def _get_alerts(self, request: web.Request) -> web.Response:
        assert self._pool is not None
        state = request.query.get("state")
        if state not in (None, "firing", "acknowledged", "resolved"):
            raise web.HTTPBadRequest(text="state must be firing, acknowledged or resolved")
        try:
            limit = min(500, max(1, int(request.query.get("limit", "100"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
        try:
            async with self._pool.acquire() as con:
                alerts = await store.list_alerts(con, state=state, limit=limit)
        except db.CONNECTION_ERRORS:
            raise web.HTTPServiceUnavailable(text="database unavailable") from None
        return web.json_response({"alerts": alerts})
