"""The ingest gateway: MQTT in, Kafka out, and the MQTT ack only after Kafka's.

For each message, in the order received:
  1. decode it (pure adapter) into readings or a rejection;
  2. hand its records to the idempotent producer (pipelined: no wait per message);
  3. once Kafka has acknowledged *all* of its records, acknowledge it to MQTT.
Acks go out in arrival order (MQTT 5 §4.6), from the head of a bounded in-flight window.
A failed delivery is retried with backoff and the message stays unacked meanwhile, so a
gateway crash at any point leaves it with the broker, which redelivers it.

Order through retries (issue 10): records reach the producer in arrival order, and the
idempotent producer keeps one request in flight per partition and retries it in place, so
one device's readings (one key, one partition) land in order. When Kafka cannot take a
record yet, the gateway retries it *before* sending any later message; when a delivery
fails after queuing, nothing new is sent until the failed message, once it is the head of
the window, has been sent again -- through a new producer when the failure came from the
current one: aiokafka never rewinds a partition's sequence numbers, so after a failed batch
the old producer's later batches for that partition are refused for good
(OutOfOrderSequenceNumber; see `kafka.open_producer`).

A record Kafka will never take (too large, invalid: `kafka.RECORD_REFUSED`) is not retried:
the message is dead-lettered as a minimal record on the rejected topic (reason
`kafka_refused`) and acknowledged, so one payload cannot stop intake.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum

from aiokafka import AIOKafkaProducer

from schemas import Reading, Rejection
from schemas.adapters import decode, device_of
from schemas.device import DeviceLookup, DeviceProfile
from services.common import db, kafka
from services.common.backoff import Backoff
from services.common.errors import KafkaUnavailable
from services.common.http import HttpServer
from services.common.lifecycle import BackgroundTasks, ServiceBase
from services.common.settings import Settings
from services.ingest import metrics as m
from services.ingest.mqtt_source import Inbound, MqttSource
from services.ingest.refusals import RefusalLog
from services.ingest.registry_cache import RegistryCache

log = logging.getLogger(__name__)

Record = tuple[str, bytes, bytes]  # (topic, key, value)

# What a dead letter keeps of the payload: enough to recognise it, with its size and hash.
DEAD_LETTER_EXCERPT_BYTES = 1024


class AckPolicy(Enum):
    """When an MQTT message is acknowledged. There is one policy, and it is this one."""

    AFTER_KAFKA_ACK = "ack to MQTT only after every Kafka record of the message is acknowledged"


def to_records(outcome: list[Reading] | Rejection, settings: Settings) -> list[Record]:
    """The Kafka records for one decoded message: readings keyed by device, or one rejection."""
    if isinstance(outcome, Rejection):
        value = outcome.to_kafka(max_raw_bytes=settings.ingest.max_payload_bytes)
        return [(settings.topics.rejected, outcome.topic.encode(), value)]
    return [(settings.topics.readings, r.device_id.encode(), r.to_kafka()) for r in outcome]


@dataclass(eq=False)
class _Entry:
    """One message in the in-flight window, from dispatch until its MQTT ack."""

    msg: Inbound
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # it is the head of the window
    task: asyncio.Task[None] | None = None
    producers: set[int] = field(default_factory=set)  # generations its records went to
    dead: bool = False  # its records were replaced by its dead letter


class IngestService(ServiceBase):
    """`async with IngestService(settings) as svc: await svc.run()`."""

    ack_policy = AckPolicy.AFTER_KAFKA_ACK

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._generation = 0  # of `_producer`: one more each time it is replaced
        self._retired: set[asyncio.Task[None]] = set()  # old producers closing
        self._mqtt: MqttSource | None = None
        self._registry: RegistryCache | None = None
        self._refusals: RefusalLog | None = None
        self._pending: collections.deque[_Entry] = collections.deque()
        self._window = asyncio.Semaphore(settings.ingest.receive_maximum)
        # Open while no delivery awaits its resend; new messages wait while it is closed.
        self._gate = asyncio.Event()
        self._gate.set()
        self._held = 0
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
        self._producer = await kafka.open_producer(
            s, account="citywatch-ingest", client_id=s.ingest.client_id, stop=self.stop_event
        )
        stack.push_async_callback(self._close_producers)
        self.kafka_ok = True
        # The registry cache needs the database only to (re)load; see registry_cache.py.
        # Two connections: a lookup of an unknown device need not wait behind a reload.
        pool = await stack.enter_async_context(db.create_pool(s.database_dsn, max_size=2))
        self._registry = await stack.enter_async_context(
            RegistryCache(pool, refresh_s=s.ingest.registry_refresh_s)
        )
        self._refusals = await stack.enter_async_context(
            RefusalLog(pool, flush_s=s.ingest.registry_refresh_s)
        )
        username, password = s.mqtt_login("citywatch-ingest")
        self._mqtt = MqttSource(
            host=s.mqtt_services_host,
            port=s.mqtt_services_port,
            client_id=s.ingest.client_id,
            filters=s.ingest.filters,
            receive_maximum=s.ingest.receive_maximum,
            session_expiry_s=s.ingest.session_expiry_s,
            broker=s.mqtt_broker,
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
                # A full window frees up only as Kafka acks: during an outage it never does,
                # so a stop must not wait for a slot (it would wait for the hard cancel).
                # A free slot is taken at once, without a task (the path under load).
                if self._window.locked():
                    slot = asyncio.create_task(self._window.acquire())
                    await asyncio.wait({slot, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if not slot.done():
                        slot.cancel()
                        break
                else:
                    await self._window.acquire()
                if not self._gate.is_set():
                    gate = asyncio.create_task(self._gate.wait())
                    await asyncio.wait({gate, stop}, return_when=asyncio.FIRST_COMPLETED)
                    gate.cancel()
                    if stop.done():
                        self._window.release()
                        break
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
        outcome = await self._decode_checked(msg)
        if isinstance(outcome, Rejection):
            m.REJECTED.labels(outcome.reason).inc()
            log.info(
                "payload rejected",
                extra={"topic": msg.topic, "reason": outcome.reason, "detail": outcome.detail},
            )
            device_id = device_of(msg.topic)
            assert self._registry is not None and self._refusals is not None
            if device_id is not None and self._registry.get(device_id) is not None:
                self._refusals.note(device_id, outcome.reason, outcome.detail, msg.received_at)
        else:
            m.ACCEPTED.inc()
            m.READINGS.inc(len(outcome))
        entry = _Entry(msg)
        # Arrival order into the producer is one device's order on its partition: the next
        # message goes only once this one's records are all queued (retried in place here).
        queued = await self._queue(entry, to_records(outcome, self.settings), self.stop_event)
        if queued is None:
            return  # stopping while Kafka refuses: the message stays with the broker, unacked
        self._pending.append(entry)
        if len(self._pending) == 1:
            entry.turn.set()
        self._empty.clear()
        entry.task = asyncio.create_task(self._deliver(entry, *queued))
        entry.task.add_done_callback(lambda _t: self._head_done.set())
        m.IN_FLIGHT.set(len(self._pending))

    async def _decode_checked(self, msg: Inbound) -> list[Reading] | Rejection:
        """Decode; a device refused as unknown is first looked up at the source, so one
        registered since the last registry reload is accepted (registry_cache.py)."""
        assert self._registry is not None
        missed: list[str] = []

        def lookup(device_id: str) -> DeviceProfile | None:
            assert self._registry is not None
            profile = self._registry.get(device_id)
            if profile is None:
                missed.append(device_id)
            return profile

        outcome = self._decode(msg, lookup)
        if (
            isinstance(outcome, Rejection)
            and outcome.reason == "unknown_device"
            and missed
            and await self._registry.check_source(missed[0]) is not None
        ):
            outcome = self._decode(msg, self._registry.get)
        return outcome

    def _decode(self, msg: Inbound, lookup: DeviceLookup) -> list[Reading] | Rejection:
        try:
            return decode(
                msg.topic,
                msg.payload,
                msg.received_at,
                lookup=lookup,
                unknown=self.settings.ingest.unknown_devices,
                max_bytes=self.settings.ingest.max_payload_bytes,
                max_age=timedelta(days=self.settings.ingest.max_reading_age_days),
                max_spread=timedelta(hours=self.settings.ingest.max_message_span_h),
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

    async def _deliver(
        self, entry: _Entry, futures: list[asyncio.Future[object]], records: list[Record]
    ) -> None:
        """Get every record of one message acknowledged by Kafka, retrying until it is."""
        backoff = Backoff(initial_s=0.5, maximum_s=10)
        held = False
        retried = False
        while True:
            try:
                if len(futures) == 1:  # one reading per message: no gather to build
                    await futures[0]
                else:
                    await asyncio.gather(*futures)
            except kafka.RECORD_REFUSED as exc:
                # Refused after queuing (the broker's own limit): the same bytes never pass.
                records = await self._refused(entry, exc, backoff) or records
            except kafka.KafkaError as exc:
                self._kafka_failed(exc)
                if not held:
                    held = True
                    self._held += 1
                    self._gate.clear()  # nothing new goes out until this one is through
                # Resend only as the head of the window, when every earlier message is in
                # Kafka. (Later ones already with the producer may land first only if it
                # expired this one's batch: a partition without a leader for longer than
                # CITYWATCH_KAFKA_REQUEST_TIMEOUT_MS.)
                await entry.turn.wait()
                if self._generation in entry.producers:
                    await self._renew_producer()
                if retried:
                    # Its own resend failed too: Kafka is still failing, so pause. The first
                    # resend goes at once: it waited for its turn, and the messages after it
                    # are waiting for it.
                    await asyncio.sleep(backoff.next_delay())
                retried = True
            else:
                break
            queued = await self._queue(entry, records)
            assert queued is not None  # without a stop event, `_queue` retries until it is taken
            futures, records = queued
        self.kafka_ok = True
        if held:
            self._held -= 1
            if not self._held:
                self._gate.set()

    async def _queue(
        self, entry: _Entry, records: list[Record], stop: asyncio.Event | None = None
    ) -> tuple[list[asyncio.Future[object]], list[Record]] | None:
        """Hand `records` to the producer in order, each retried in place until it is taken;
        returns their delivery futures and the records as finally sent (a record Kafka will
        never take replaces what is left of the message by its dead letter), or None when
        `stop` is set while it retries."""
        assert self._producer is not None
        backoff = Backoff(initial_s=0.5, maximum_s=10)
        futures: list[asyncio.Future[object]] = []
        sent: list[Record] = []
        todo = collections.deque(records)
        while todo:
            topic, key, value = todo[0]
            try:
                futures.append(await self._producer.send(topic, value=value, key=key))
                entry.producers.add(self._generation)
            except kafka.RECORD_REFUSED as exc:
                instead = await self._refused(entry, exc, backoff)
                if instead:
                    todo = collections.deque(instead)
                continue
            except kafka.KafkaError as exc:
                self._kafka_failed(exc)
                if stop is None:
                    await asyncio.sleep(backoff.next_delay())
                elif await backoff.wait(stop):
                    return None
                continue
            sent.append(todo.popleft())
        return futures, sent

    async def _refused(
        self, entry: _Entry, exc: BaseException, backoff: Backoff
    ) -> list[Record] | None:
        """A record Kafka will never take: the message's dead letter to send instead; or, when
        the dead letter itself was refused (a broker limit below 2 KiB), None after a pause."""
        if not entry.dead:
            return [self._dead_letter(entry, exc)]
        log.error("kafka refuses even the dead letter", extra={"error": repr(exc)})
        self._kafka_failed(exc)
        await asyncio.sleep(backoff.next_delay())
        return None

    def _dead_letter(self, entry: _Entry, exc: BaseException) -> Record:
        """The minimal record for a message Kafka will not take: reason, an excerpt, size, hash."""
        entry.dead = True
        m.REJECTED.labels("kafka_refused").inc()
        log.warning(
            "kafka refused a record; dead-lettering the message",
            extra={"topic": entry.msg.topic, "error": repr(exc), "bytes": len(entry.msg.payload)},
        )
        rejection = Rejection(
            reason="kafka_refused",
            detail=f"Kafka refused the message's record ({type(exc).__name__}: {exc}); "
            f"the payload's first {DEAD_LETTER_EXCERPT_BYTES} bytes are kept",
            topic=entry.msg.topic,
            raw=entry.msg.payload,
            received_at=entry.msg.received_at,
        )
        value = rejection.to_kafka(max_raw_bytes=DEAD_LETTER_EXCERPT_BYTES)
        return (self.settings.topics.rejected, entry.msg.topic.encode(), value)

    async def _renew_producer(self) -> None:
        """Replace the producer (a new producer id, sequences from zero) and retire the old
        one: it still delivers what it can, within `kafka.PRODUCER_CLOSE_S`."""
        assert self._producer is not None
        s = self.settings
        try:
            fresh = await kafka.open_producer(
                s, account="citywatch-ingest", client_id=s.ingest.client_id, stop=self.stop_event
            )
        except KafkaUnavailable:
            # Stopping while Kafka is down: this message stays with the broker, unacked;
            # the drain cancels this task when its time is up.
            await asyncio.Event().wait()
        old, self._producer = self._producer, fresh
        self._generation += 1
        log.info("kafka producer replaced", extra={"generation": self._generation})
        task = asyncio.create_task(kafka.close_producer(old))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _close_producers(self) -> None:
        """Close the current producer and wait for retired ones, each within its bound."""
        if self._producer is not None:
            await kafka.close_producer(self._producer)
        if self._retired:
            await asyncio.wait(set(self._retired))

    def _kafka_failed(self, exc: BaseException) -> None:
        if self.kafka_ok:
            log.warning("kafka delivery failing; holding MQTT acks", extra={"error": repr(exc)})
        self.kafka_ok = False
        m.KAFKA_ERRORS.inc()

    async def _ack_in_order(self) -> None:
        """Acknowledge to MQTT from the head of the window, as each head's Kafka ack arrives."""
        assert self._mqtt is not None
        while True:
            while self._pending and _done(self._pending[0]):
                entry = self._pending.popleft()
                assert entry.task is not None
                entry.task.result()  # re-raises only a bug: KafkaErrors are retried inside
                if self._mqtt.ack(entry.msg):
                    m.ACKED.inc()
                else:
                    m.ACK_SKIPPED.inc()
                self._window.release()
                if self._pending:
                    self._pending[0].turn.set()
            m.IN_FLIGHT.set(len(self._pending))
            if not self._pending:
                self._empty.set()
            self._head_done.clear()
            if self._pending and _done(self._pending[0]):
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
        for entry in self._pending:
            if entry.task is not None:
                entry.task.cancel()

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


def _done(entry: _Entry) -> bool:
    return entry.task is not None and entry.task.done()
