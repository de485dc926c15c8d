"""The live stream's source: one group-less Kafka consumer per API process, fanned out.

Why Kafka and not the database: the processor emits no LISTEN/NOTIFY, and polling
`readings` by a time cursor misses what matters. The cursor would be the *reading* time,
and a late or backfilled reading (a device back from an outage sends hours of buffer)
lands behind it and never shows; an arrival-time column does not exist. Kafka's topics
are the platform's event log, already ordered per device: a consumer without a group
(manually assigned every partition, starting at the end) commits nothing, takes part in
no rebalance, and lets every API replica see every event, at the cost of one consumer per
process, not per browser.

Each SSE client gets a bounded queue; a client too slow to drain it loses events (counted
in `citywatch_api_stream_dropped_total`) instead of growing the process's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from schemas import Reading
from services.common import kafka
from services.common.backoff import Backoff
from services.common.lifecycle import BackgroundTasks
from services.common.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Event", "StreamFilter", "StreamHub", "Subscription"]

CLIENTS = Gauge("citywatch_api_stream_clients", "Open live-stream connections")
EVENTS = Counter("citywatch_api_stream_events_total", "Events read from Kafka", ["type"])
DROPPED = Counter(
    "citywatch_api_stream_dropped_total", "Events a slow stream client did not receive"
)


@dataclass(frozen=True)
class Event:
    """One thing that happened: `type` is "reading" or "alert"."""

    type: str
    device_id: str
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class StreamFilter:
    """What one client wants; an empty set means "any"."""

    types: frozenset[str] = frozenset({"reading", "alert"})
    kinds: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    areas: frozenset[str] = frozenset()

    def matches(self, ev: Event, area: str | None) -> bool:
        return (
            ev.type in self.types
            and (not self.kinds or ev.kind in self.kinds)
            and (not self.devices or ev.device_id in self.devices)
            and (not self.areas or area in self.areas)
        )


@dataclass(eq=False)  # identity: each connection is its own subscription
class Subscription:
    filter: StreamFilter
    queue: asyncio.Queue[Event]
    dropped: int = field(default=0)


class StreamHub:
    """`async with StreamHub(settings, area_of) as hub:`; `hub.subscribe(filter)` gives a
    queue of matching events from the moment of subscription on."""

    def __init__(self, settings: Settings, area_of: Callable[[Event], str | None]) -> None:
        self._settings = settings
        self._area_of = area_of
        self._subs: set[Subscription] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks = BackgroundTasks()
        self.connected = False

    async def __aenter__(self) -> Self:
        self._tasks.start(self._run(), name="api-stream")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._tasks.aclose()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def subscribe(self, flt: StreamFilter) -> Subscription:
        sub = Subscription(flt, asyncio.Queue(maxsize=self._settings.api.stream_queue))
        self._subs.add(sub)
        CLIENTS.set(len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        CLIENTS.set(len(self._subs))

    @property
    def clients(self) -> int:
        return len(self._subs)

    async def _start(self) -> AIOKafkaConsumer:
        s = self._settings
        cons = AIOKafkaConsumer(
            **kafka.client_options(s, "citywatch-api"),
            group_id=None,  # group-less: no commits, no rebalances, every replica sees all
            client_id="citywatch-api-stream",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",
        )
        await cons.start()
        try:
            tps = []
            for topic in (s.topics.readings, s.topics.alerts):
                parts = cons.partitions_for_topic(topic)
                if not parts:
                    await cons._client.force_metadata_update()
                    parts = cons.partitions_for_topic(topic) or set()
                tps += [TopicPartition(topic, p) for p in sorted(parts)]
            cons.assign(tps)
            # From "now" on: the page loads the current state over HTTP, then follows.
            await cons.seek_to_end(*tps)
            for tp in tps:  # resolve the end offsets now, so nothing after this is skipped
                await cons.position(tp)
        except BaseException:
            await cons.stop()
            raise
        return cons

    async def _run(self) -> None:
        """Consume forever; on a Kafka failure, report it, back off and start over."""
        backoff = Backoff(initial_s=0.5, maximum_s=10)
        never = asyncio.Event()
        while True:
            try:
                if self._consumer is None:
                    self._consumer = await self._start()
                    self.connected = True
                    backoff = Backoff(initial_s=0.5, maximum_s=10)
                    log.info("stream following kafka", extra={"clients": len(self._subs)})
                got = await self._consumer.getmany(timeout_ms=1000, max_records=2000)
                for tp, records in got.items():
                    for rec in records:
                        ev = self._decode(tp.topic, rec.value)
                        if ev is not None:
                            self._publish(ev)
            except (KafkaError, OSError) as exc:
                log.warning("stream: kafka unreachable", extra={"error": repr(exc)})
                self.connected = False
                if self._consumer is not None:
                    with suppress(KafkaError, OSError):
                        await self._consumer.stop()
                    self._consumer = None
                await backoff.wait(never)

    def _decode(self, topic: str, value: bytes | None) -> Event | None:
        if value is None:
            return None
        if topic == self._settings.topics.readings:
            try:
                r = Reading.from_kafka(value)
            except ValidationError:
                return None  # the processor routes undecodable records to the rejected topic
            EVENTS.labels("reading").inc()
            return Event(
                "reading",
                r.device_id,
                r.kind,
                {
                    "device_id": r.device_id,
                    "kind": r.kind,
                    "time": r.time.isoformat(),
                    "metrics": dict(r.metrics),
                    "lat": r.lat,
                    "lon": r.lon,
                },
            )
        try:
            body = json.loads(value)
        except ValueError:
            return None
        if not isinstance(body, Mapping) or "device_id" not in body:
            return None
        EVENTS.labels("alert").inc()
        return Event("alert", str(body["device_id"]), str(body.get("kind", "")), dict(body))

    def _publish(self, ev: Event) -> None:
        area = self._area_of(ev) if any(s.filter.areas for s in self._subs) else None
        for sub in self._subs:
            if not sub.filter.matches(ev, area):
                continue
            try:
                sub.queue.put_nowait(ev)
            except asyncio.QueueFull:
                sub.dropped += 1
                DROPPED.inc()
