"""The delivery service: `citywatch.alerts.v1` -> MQTT retained state, webhooks, e-mail.

Each channel hears the alerts of its audience only (config.py): the MQTT retained topics,
read by street displays and sirens, are public by default and never carry an `operators`
alert (device health); webhook and e-mail subscribers declare theirs.

    consume a batch -> one transaction: record new events (deduplicated on event_id),
    alert state, one pending row per channel target -> commit Kafka offsets -> wake workers

Each channel target has its own worker: one for MQTT, one per webhook or e-mail
subscriber. A worker leases its due rows from `alert_deliveries`, attempts them, logs each
attempt in `alert_delivery_attempts` and reschedules failures with exponential backoff and
jitter. So a subscriber that is down delays only itself; a crash at any point leaves rows
pending (or leased until the lease runs out) for the next worker; and the offsets move
only once every channel's work for the batch is durable in the database.

A reminder loop queues reminders and escalations from `alert_delivery_alerts` (see
`config.py` for who gets them).

Runs on its own (`async with DeliveryService(settings) as svc: await svc.run()`, with its
own HTTP server for /metrics and /readyz) or inside the alerts process (`http=False`; the
host merges `ready_checks`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter, Gauge

from services.alerts.areas import cap_origin
from services.alerts.delivery import store
from services.alerts.delivery.channels import EmailChannel, MqttChannel, Outcome, WebhookChannel
from services.alerts.delivery.config import SubscribersFile, load_subscribers
from services.alerts.delivery.notice import AlertEvent, EventError, retained_state
from services.common import db, kafka
from services.common.batches import Batch, BatchLoop, Upstreams, probe_upstreams
from services.common.errors import DatabaseUnavailable
from services.common.http import HttpServer
from services.common.lifecycle import BackgroundTasks, ServiceBase
from services.common.settings import Settings

log = logging.getLogger(__name__)

EVENTS = Counter(
    "citywatch_delivery_events_total", "Alert events consumed", ["outcome"]
)  # outcome: recorded, duplicate, invalid
ATTEMPTS = Counter(
    "citywatch_delivery_attempts_total", "Delivery attempts", ["channel", "outcome"]
)  # outcome: delivered, retry, expired
READY = Gauge("citywatch_delivery_ready", "1 when Kafka, PostgreSQL and MQTT are reachable")

WorkerKey = tuple[str, str | None]  # (channel, subscriber name); MQTT: ("mqtt", None)


class DeliveryService(ServiceBase):
    """`async with DeliveryService(settings) as svc: await svc.run()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        subscribers: SubscribersFile | None = None,
        http: bool = True,
    ) -> None:
        self.settings = settings
        self.subscribers = subscribers or load_subscribers(settings.delivery.subscribers_file)
        self.cap_origin = cap_origin(settings)  # the same CAP sender and areas as the API
        self.stop_event = asyncio.Event()
        self.health = Upstreams()
        self._http = http
        self._pool: asyncpg.Pool | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._mqtt: MqttChannel | None = None
        self._webhook: WebhookChannel | None = None
        self._email: EmailChannel | None = None
        self._wake: dict[WorkerKey, asyncio.Event] = {}

    async def _open(self, stack: AsyncExitStack) -> None:
        s = self.settings
        d = s.delivery
        client_id = f"citywatch-delivery-{d.group_id}"
        if self._http:
            await stack.enter_async_context(
                HttpServer(
                    service="alerts-delivery",
                    host=s.http_host,
                    port=d.http_port,
                    ready_checks=self.ready_checks,
                )
            )
        # One connection per worker and one for the consumer, so no worker waits on
        # another's connection.
        workers = 2 + len(self.subscribers.subscribers)
        self._pool = await stack.enter_async_context(
            db.create_pool(s.database_dsn, max_size=workers + 2)
        )
        username, password = s.mqtt_login("citywatch-alerts")
        self._mqtt = MqttChannel(
            host=s.mqtt_services_host,
            port=s.mqtt_services_port,
            username=username,
            password=password,
            client_prefix=client_id,
        )
        self._mqtt.start()
        stack.callback(self._mqtt.close)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        self._webhook = WebhookChannel(session, d.attempt_timeout_s)
        self._email = EmailChannel(
            host=d.smtp_host,
            port=d.smtp_port,
            sender=d.mail_from,
            username=d.smtp_username,
            password=d.smtp_password.get_secret_value() if d.smtp_password else None,
            starttls=d.smtp_tls,
            timeout_s=d.attempt_timeout_s,
        )
        self._consumer = await stack.enter_async_context(
            kafka.consumer(
                s,
                account="citywatch-alerts",
                group_id=d.group_id,
                topics=[s.topics.alerts],
                client_id=client_id,
                max_poll_records=500,
                stop=self.stop_event,
            )
        )

    def ready_checks(self) -> dict[str, bool]:
        checks = {
            **self.health.checks(),
            "mqtt": self._mqtt is not None and self._mqtt.connected.is_set(),
        }
        READY.set(1 if all(checks.values()) else 0)
        return checks

    # -- run ----------------------------------------------------------------------------------

    def _worker_keys(self) -> list[WorkerKey]:
        return [("mqtt", None), *((s.channel, s.name) for s in self.subscribers.subscribers)]

    async def run(self) -> None:
        assert self._consumer is not None and self._pool is not None
        self._wake = {key: asyncio.Event() for key in self._worker_keys()}
        log.info(
            "delivery running",
            extra={
                "subscribers": [s.name for s in self.subscribers.subscribers],
                "topic": self.settings.topics.alerts,
                "group": self.settings.delivery.group_id,
            },
        )
        loop = BatchLoop(
            self._consumer,
            batch_size=500,
            max_wait_ms=self.settings.alerts.batch_max_wait_ms,
            stop=self.stop_event,
            health=self.health,
        )
        # On the way out the probe is cancelled at once; the workers (and the reminder loop)
        # finish the attempt in hand and exit, or are cancelled after the graceful timeout.
        async with BackgroundTasks(grace_s=self.settings.delivery.graceful_timeout_s) as workers:
            for ch, target in self._worker_keys():
                workers.start(self._worker(ch, target), name=f"delivery-{ch}-{target}")
            workers.start(self._reminders(), name="delivery-reminders")
            async with BackgroundTasks() as probe:
                probe.start(probe_upstreams(self.health, self._pool, self._consumer))
                try:
                    await loop.run(self._handle, after_commit=self._after_commit)
                finally:
                    self.stop_event.set()
                    for ev in self._wake.values():
                        ev.set()

    _pending_wake: frozenset[store.Target] = frozenset()

    async def _handle(self, batch: Batch) -> None:
        assert self._pool is not None
        events: list[AlertEvent] = []
        for rec in batch.records:
            try:
                events.append(AlertEvent.parse(rec.value))
            except EventError as exc:
                EVENTS.labels("invalid").inc()
                log.error(
                    "skipping a record that is not an alert event",
                    extra={"partition": rec.partition, "offset": rec.offset, "error": str(exc)},
                )
        try:
            async with self._pool.acquire() as con, con.transaction():
                recorded = await store.record_events(
                    con,
                    events,
                    self.subscribers,
                    self.settings.delivery.mqtt_topic,
                    self.cap_origin,
                    mqtt_audience=self.settings.delivery.mqtt_audience,
                )
        except db.CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable("postgresql", repr(exc)) from exc
        EVENTS.labels("recorded").inc(recorded.events)
        EVENTS.labels("duplicate").inc(recorded.duplicates)
        EVENTS.labels("invalid").inc(recorded.invalid)
        if recorded.duplicates:
            log.info("duplicate alert events skipped", extra={"count": recorded.duplicates})
        self._pending_wake = recorded.targets

    async def _after_commit(self, _batch: Batch) -> None:
        self._wake_targets(self._pending_wake)

    def _wake_targets(self, targets: frozenset[store.Target] | set[store.Target]) -> None:
        for channel, target in targets:
            key: WorkerKey = ("mqtt", None) if channel == "mqtt" else (channel, target)
            if key in self._wake:
                self._wake[key].set()

    # -- workers ------------------------------------------------------------------------------

    def _retry_delay(self, attempts: int) -> timedelta:
        d = self.settings.delivery
        cap = min(d.retry_max_s, d.retry_initial_s * 2 ** min(attempts - 1, 32))
        return timedelta(seconds=random.uniform(cap / 2, cap))  # full jitter, bounded below

    async def _idle(self, key: WorkerKey, channel: str, target: str | None) -> None:
        """Wait for a wake-up, the next due retry, or the poll period (other processes'
        rows and reminders), whichever comes first."""
        assert self._pool is not None
        wait = self.settings.delivery.poll_s
        try:
            async with self._pool.acquire() as con:
                due = await store.next_due(con, channel, target)
            if due is not None:
                wait = max(0.0, min(wait, (due - datetime.now(UTC)).total_seconds()))
        except db.CONNECTION_ERRORS:
            pass  # the probe reports it; poll again after the period
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake[key].wait(), wait)
        self._wake[key].clear()

    async def _worker(self, channel: str, target: str | None) -> None:
        assert self._pool is not None
        key: WorkerKey = (channel, target)
        d = self.settings.delivery
        lease = timedelta(seconds=d.attempt_timeout_s * 3 + 5)
        while not self.stop_event.is_set():
            try:
                async with self._pool.acquire() as con:
                    rows = await store.claim(con, channel, target, d.claim_batch, lease)
                if rows:
                    await self._attempt_rows(channel, rows)
                    continue
            except db.CONNECTION_ERRORS as exc:
                log.warning(
                    "delivery worker: database unavailable",
                    extra={"channel": channel, "target": target, "error": repr(exc)},
                )
            await self._idle(key, channel, target)

    async def _attempt_rows(self, channel: str, rows: list[store.Claimed]) -> None:
        assert self._pool is not None
        if channel == "mqtt":
            await self._attempt_mqtt(rows)
            return
        for i, row in enumerate(rows):
            if self.stop_event.is_set():
                async with self._pool.acquire() as con:
                    await store.release(con, [r.delivery_id for r in rows[i:]], timedelta(0))
                return
            outcome = await self._attempt_one(channel, row)
            if not outcome.ok:
                # The far side is failing: leave the rest of its rows for the retry time
                # instead of hammering it once per row.
                rest = [r.delivery_id for r in rows[i + 1 :]]
                async with self._pool.acquire() as con:
                    await store.release(con, rest, self._retry_delay(row.attempts + 1))
                return

    async def _attempt_one(self, channel: str, row: store.Claimed) -> Outcome:
        assert self._webhook is not None and self._email is not None
        sub = self.subscribers.subscriber(row.target)
        started = time.perf_counter()
        if sub is None:
            outcome = Outcome(False, error="subscriber no longer in the subscribers file")
        elif channel == "webhook":
            outcome = await self._webhook.send(
                sub, row.body, event_id=row.event_id, delivery_id=row.delivery_id
            )
        else:
            outcome = await self._email.send(sub, json.loads(row.body))
        await self._settle(channel, row, outcome, started)
        return outcome

    async def _settle(
        self, channel: str, row: store.Claimed, outcome: Outcome, started: float
    ) -> None:
        assert self._pool is not None
        attempt = row.attempts + 1
        age = (datetime.now(UTC) - row.created_at).total_seconds()
        retry_in = None
        if not outcome.ok and age < self.settings.delivery.give_up_after_s:
            retry_in = self._retry_delay(attempt)
        result = "delivered" if outcome.ok else "retry" if retry_in else "expired"
        ATTEMPTS.labels(channel, result).inc()
        extra = {
            "channel": channel,
            "target": row.target,
            "delivery_id": row.delivery_id,
            "event_id": row.event_id,
            "attempt": attempt,
            "status_code": outcome.status_code,
        }
        if outcome.ok:
            log.info("alert delivered", extra=extra)
        else:
            log.warning(
                "alert delivery failed",
                extra={
                    **extra,
                    "error": outcome.error,
                    "outcome": result,
                    "retry_in_s": retry_in.total_seconds() if retry_in else None,
                },
            )
        async with self._pool.acquire() as con:
            await store.finish(
                con,
                row.delivery_id,
                attempt=attempt,
                ok=outcome.ok,
                duration_ms=(time.perf_counter() - started) * 1000,
                status_code=outcome.status_code,
                error=outcome.error,
                retry_in=retry_in,
            )

    async def _attempt_mqtt(self, rows: list[store.Claimed]) -> None:
        """One retained publish per topic, of the topic's state as the database has it now,
        however many rows asked for it: the newest state is the only one worth sending."""
        assert self._pool is not None and self._mqtt is not None
        by_topic: dict[str, list[store.Claimed]] = {}
        for row in rows:
            by_topic.setdefault(row.target, []).append(row)
        for topic, group in by_topic.items():
            where = json.loads(group[0].body)
            started = time.perf_counter()
            async with self._pool.acquire() as con:
                alerts = await store.open_alerts_at(
                    con, where["severity"], where["area"], self.settings.delivery.mqtt_audience
                )
            payload = retained_state(where["severity"], where["area"], alerts)
            outcome = await self._mqtt.publish_retained(
                topic, payload, self.settings.delivery.attempt_timeout_s
            )
            for row in group:
                await self._settle("mqtt", row, outcome, started)

    # -- reminders ----------------------------------------------------------------------------

    async def _reminders(self) -> None:
        assert self._pool is not None
        while not self.stop_event.is_set():
            try:
                async with self._pool.acquire() as con, con.transaction():
                    targets = await store.queue_reminders(
                        con, self.subscribers, origin=self.cap_origin
                    )
                if targets:
                    log.info("reminders queued", extra={"targets": sorted(t[1] for t in targets)})
                    self._wake_targets(targets)
            except db.CONNECTION_ERRORS as exc:
                log.warning("reminders: database unavailable", extra={"error": repr(exc)})
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), self.settings.delivery.poll_s)
