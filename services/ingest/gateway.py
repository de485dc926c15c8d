"""The ingest gateway: MQTT in, Kafka out, and the MQTT ack only after Kafka's.

For each message, in the order received:
  1. decode it (pure adapter) into readings or a rejection;
  2. hand its records to the idempotent producer (pipelined: no wait per message);
  3. once Kafka has acknowledged *all* of its records, acknowledge it to MQTT.
Acks go out in arrival order (MQTT 5 §4.6), from the head of a bounded in-flight window.
A failed delivery is retried with backoff and the message stays unacked meanwhile, so a
crash at any point leaves it with the broker, which redelivers it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from contextlib import AsyncExitStack
from enum import Enum

from aiokafka import AIOKafkaProducer

from schemas import Reading, Rejection
from schemas.adapters import decode
from services.common import db, kafka
from services.common.backoff import Backoff
from services.common.http import HttpServer
from services.common.lifecycle import BackgroundTasks, ServiceBase
from services.common.settings import Settings
from services.ingest import metrics as m
from services.ingest.mqtt_source import Inbound, MqttSource
from services.ingest.registry_cache import RegistryCache

log = logging.getLogger(__name__)

Record = tuple[str, bytes, bytes]  # (topic, key, value)


class AckPolicy(Enum):
    """When an MQTT message is acknowledged. There is one policy, and it is this one."""

    AFTER_KAFKA_ACK = "ack to MQTT only after every Kafka record of the message is acknowledged"


def to_records(outcome: list[Reading] | Rejection, settings: Settings) -> list[Record]:
    """The Kafka records for one decoded message: readings keyed by device, or one rejection."""
    if isinstance(outcome, Rejection):
        return [(settings.topics.rejected, outcome.topic.encode(), outcome.to_kafka())]
    return [(settings.topics.readings, r.device_id.encode(), r.to_kafka()) for r in outcome]


class IngestService(ServiceBase):
    """`async with IngestService(settings) as svc: await svc.run()`."""

    ack_policy = AckPolicy.AFTER_KAFKA_ACK

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._mqtt: MqttSource | None = None
        self._registry: RegistryCache | None = None
        self._pending: collections.deque[tuple[Inbound, asyncio.Task[None]]] = collections.deque()
        self._window = asyncio.Semaphore(settings.ingest.receive_maximum)
        self._head_done = asyncio.Event()
        self._empty = asyncio.Event()
        self.kafka_ok = False

    # -- lifecycle ------------------------------------------------------------------------
    async def _open(self, stack: AsyncExitStack) -> None:
        # Closed in reverse: MQTT disconnects first (unacked messages stay with the broker),
        # then the producer flushes and stops, then the HTTP server goes.
        s = self.settings
        await stack.enter_async_context(
            HttpServer(
                service="ingest",
                host=s.http_host,
                port=s.ingest.http_port,
                ready_checks=self.ready_checks,
            )
        )
        self._producer = await stack.enter_async_context(
            kafka.producer(s, client_id=s.ingest.client_id, stop=self.stop_event)
        )
        self.kafka_ok = True
        # The registry cache needs the database only to (re)load; see registry_cache.py.
        pool = await stack.enter_async_context(db.create_pool(s.database_dsn, max_size=1))
        self._registry = await stack.enter_async_context(
            RegistryCache(pool, refresh_s=s.ingest.registry_refresh_s)
        )
        username, password = s.mqtt_login("citywatch-ingest")
        self._mqtt = MqttSource(
            host=s.mqtt_host,
            port=s.mqtt_port,
            client_id=s.ingest.client_id,
            filters=s.ingest.filters,
            receive_maximum=s.ingest.receive_maximum,
            session_expiry_s=s.ingest.session_expiry_s,
            username=username,
            password=password,
        )
        self._mqtt.start()
        stack.callback(self._mqtt.close)

    def ready_checks(self) -> dict[str, bool]:
        mqtt_ok = self._mqtt is not None and self._mqtt.connected.is_set()
        registry_ok = self._registry is not None and self._registry.warm.is_set()
        checks = {"mqtt": mqtt_ok, "kafka": self.kafka_ok, "registry": registry_ok}
        m.READY.set(1 if all(checks.values()) else 0)
        return checks

    # -- the work -------------------------------------------------------------------------
    async def run(self) -> None:
        assert self._mqtt is not None and self._producer is not None
        log.info("ingest running", extra={"ack_policy": self.ack_policy.name})
        async with BackgroundTasks() as tasks:
            tasks.start(self._ack_in_order(), name="acker")
            tasks.start(self._probe_kafka(), name="kafka-probe")
            try:
                await self._take_messages()
            finally:
                # Stage one of shutdown: stop taking messages, let what is in flight finish
                # (the acker acks it); only then are the acker and the probe cancelled.
                await self._drain()

    async def _take_messages(self) -> None:
        assert self._mqtt is not None
        assert self._registry is not None
        stop = asyncio.create_task(self.stop_event.wait())
        try:
            # No decision without the registry: messages wait with the broker until it loads.
            warm = asyncio.create_task(self._registry.warm.wait())
            await asyncio.wait({warm, stop}, return_when=asyncio.FIRST_COMPLETED)
            warm.cancel()
            while not self.stop_event.is_set():
                await self._window.acquire()
                ready = self._mqtt.get_nowait()
                if ready is not None:
                    await self._dispatch(ready)
                    continue
                get = asyncio.create_task(self._mqtt.get())
                await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    self._window.release()
                    break
                await self._dispatch(get.result())
        finally:
            stop.cancel()

    async def _dispatch(self, msg: Inbound) -> None:
        m.RECEIVED.inc()
        outcome = self._decode(msg)
        if isinstance(outcome, Rejection):
            if len(outcome.raw) > self.settings.ingest.max_payload_bytes:
                # Keep the head of an oversized payload: enough to diagnose, small enough for Kafka.
                outcome = outcome.model_copy(
                    update={"raw": outcome.raw[: self.settings.ingest.max_payload_bytes]}
                )
            m.REJECTED.labels(outcome.reason).inc()
            log.info(
                "payload rejected",
                extra={"topic": msg.topic, "reason": outcome.reason, "detail": outcome.detail},
            )
        else:
            m.ACCEPTED.inc()
            m.READINGS.inc(len(outcome))
        records = to_records(outcome, self.settings)
        # Sending in arrival order keeps one device's readings in order within its partition.
        futures = await self._send(records)
        task = asyncio.create_task(self._confirm(records, futures))
        self._pending.append((msg, task))
        self._empty.clear()
        task.add_done_callback(lambda _t: self._head_done.set())
        m.IN_FLIGHT.set(len(self._pending))

    def _decode(self, msg: Inbound) -> list[Reading] | Rejection:
        assert self._registry is not None
        try:
            return decode(
                msg.topic,
                msg.payload,
                msg.received_at,
                lookup=self._registry.get,
                unknown=self.settings.ingest.unknown_devices,
                max_bytes=self.settings.ingest.max_payload_bytes,
            )
        except Exception as exc:
            log.exception("decoder failed; payload rejected", extra={"topic": msg.topic})
            return Rejection(
                reason="decoder_error",
                detail=f"{type(exc).__name__}: {exc}"[:500],
                topic=msg.topic,
                raw=msg.payload,
                received_at=msg.received_at,
            )

    async def _send(self, records: list[Record]) -> list[asyncio.Future[object]] | None:
        """Queue records in the producer; None if queuing itself failed (Kafka unreachable)."""
        assert self._producer is not None
        try:
            return [await self._producer.send(t, value=v, key=k) for t, k, v in records]
        except kafka.KafkaError as exc:
            self._kafka_failed(exc)
            return None

    async def _confirm(
        self, records: list[Record], futures: list[asyncio.Future[object]] | None
    ) -> None:
        """Wait until Kafka has every record of one message; retry with backoff until it does."""
        backoff = Backoff(initial_s=0.5, maximum_s=10)
        while True:
            if futures is not None:
                try:
                    await asyncio.gather(*futures)
                    self.kafka_ok = True
                    return
                except kafka.KafkaError as exc:
                    self._kafka_failed(exc)
            # Kafka is down: wait, then send again. The message stays unacked meanwhile.
            await asyncio.sleep(backoff.next_delay())
            futures = await self._send(records)

    def _kafka_failed(self, exc: BaseException) -> None:
        if self.kafka_ok:
            log.warning("kafka delivery failing; holding MQTT acks", extra={"error": repr(exc)})
        self.kafka_ok = False
        m.KAFKA_ERRORS.inc()

    async def _ack_in_order(self) -> None:
        """Acknowledge to MQTT from the head of the window, as each head's Kafka ack arrives."""
        assert self._mqtt is not None
        while True:
            while self._pending and self._pending[0][1].done():
                msg, task = self._pending.popleft()
                task.result()  # re-raises only a bug: KafkaErrors are retried inside
                if self._mqtt.ack(msg):
                    m.ACKED.inc()
                else:
                    m.ACK_SKIPPED.inc()
                self._window.release()
            m.IN_FLIGHT.set(len(self._pending))
            if not self._pending:
                self._empty.set()
            self._head_done.clear()
            if self._pending and self._pending[0][1].done():
                continue
            await self._head_done.wait()

    async def _drain(self) -> None:
        """Give in-flight messages `graceful_timeout_s` to reach Kafka and be acked."""
        if not self._pending:
            return
        log.info("draining", extra={"in_flight": len(self._pending)})
        try:
            async with asyncio.timeout(self.settings.ingest.graceful_timeout_s):
                await self._empty.wait()
        except TimeoutError:
            log.warning(
                "drain timed out; unacked messages stay with the broker",
                extra={"in_flight": len(self._pending)},
            )
        for _msg, task in self._pending:
            task.cancel()

    async def _probe_kafka(self) -> None:
        """While idle, ask Kafka for metadata so /readyz tells the truth without traffic."""
        assert self._producer is not None
        while True:
            await asyncio.sleep(2.0)
            try:
                async with asyncio.timeout(5):
                    await self._producer.client.fetch_all_metadata()
                if not self.kafka_ok and not self._pending:
                    log.info("kafka reachable again")
                    self.kafka_ok = True
            except (kafka.KafkaError, TimeoutError, OSError) as exc:
                self._kafka_failed(exc)
