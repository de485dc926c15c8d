"""The one place Kafka clients are built: idempotent producers, manual-commit consumers, topics.

Every producer is idempotent with `acks=all` (DESIGN.md, delivery guarantees); every
consumer commits by hand, after its side effects are durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)

from services.common.backoff import Backoff
from services.common.errors import KafkaUnavailable
from services.common.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "MAX_RECORD_BYTES",
    "PRODUCER_CLOSE_S",
    "RECORD_REFUSED",
    "KafkaError",
    "close_producer",
    "consumer",
    "ensure_topics",
    "kafka_answers",
    "open_producer",
    "producer",
    "topic_specs",
]


# The largest record a producer sends: 1 MiB, within the broker's `message.max.bytes`
# (1048588, written into deploy/kafka/server.properties). A larger record is refused by the
# producer itself, before it reaches the broker.
MAX_RECORD_BYTES = 1024 * 1024

# How long closing a producer may take (flush, then stop), each: a stop during a Kafka outage
# must still end within a service's drain budget.
PRODUCER_CLOSE_S = 5.0

# Errors Kafka gives a record for what it is, not for the state Kafka is in: sending the same
# bytes again can never succeed (aiokafka marks them not retriable). The gateway dead-letters
# such a message instead of retrying it (services/ingest/gateway.py).
RECORD_REFUSED: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTimestampError,
)


@asynccontextmanager
async def producer(
    settings: Settings, *, client_id: str, stop: asyncio.Event | None = None
) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer; on exit it flushes what is in flight, for a bounded time."""
    prod = await open_producer(settings, client_id=client_id, stop=stop)
    try:
        yield prod
    finally:
        await close_producer(prod)


async def open_producer(
    settings: Settings, *, client_id: str, stop: asyncio.Event | None = None
) -> AIOKafkaProducer:
    """Start an idempotent producer, waiting for Kafka (see `_start`); close it with
    `close_producer`.

    Idempotence keeps one request in flight per partition and retries it in place, with
    sequence numbers, so records of one key land in the order they were sent. aiokafka
    gives a batch its sequence number once and never rewinds it: a batch that fails after
    that (it expired while its partition had no leader) leaves a gap, and every later batch
    of that partition is refused (OutOfOrderSequenceNumber) for the life of the producer.
    A caller that resends after such a failure needs a new producer (services/ingest).
    """
    prod = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=MAX_RECORD_BYTES,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        retry_backoff_ms=200,
    )
    await _start(prod.start, "producer", stop, close=prod.stop)
    return prod


async def close_producer(prod: AIOKafkaProducer, timeout_s: float = PRODUCER_CLOSE_S) -> None:
    """Flush and stop `prod`, within `timeout_s` even while Kafka is down.

    An idempotent producer retries a batch without end, so a plain `stop()` during an outage
    never returns. Past the bound, what is still unsent is failed (its senders see a
    KafkaError: the gateway leaves those messages unacked, with the broker) and the
    producer is stopped, again within the bound.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await prod.flush()
    except TimeoutError:
        log.warning("kafka producer closing with records still unsent; failing them")
        # aiokafka has no public "abandon what is queued"; this is what its own fatal
        # errors do (MessageAccumulator.fail_all).
        prod._message_accumulator.fail_all(KafkaConnectionError("producer closed undelivered"))
    try:
        async with asyncio.timeout(timeout_s):
            await prod.stop()
    except TimeoutError:
        log.warning("kafka producer did not stop in time; abandoning it")


@asynccontextmanager
async def consumer(
    settings: Settings,
    *,
    group_id: str,
    topics: Iterable[str],
    client_id: str,
    listener: ConsumerRebalanceListener | None = None,
    max_poll_records: int = 2000,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A group consumer with auto-commit off: the caller commits after its work is durable."""
    cons = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        max_poll_interval_ms=300_000,
    )
    cons.subscribe(list(topics), listener=listener)
    await _start(cons.start, "consumer", stop, close=cons.stop)
    try:
        yield cons
    finally:
        await cons.stop()


async def _start(
    start: Callable[[], Awaitable[None]],
    what: str,
    stop: asyncio.Event | None,
    *,
    close: Callable[[], Awaitable[None]],
) -> None:
    """Start a client, retrying with backoff while Kafka is unreachable, so a service that
    boots during a Kafka outage waits (not ready) instead of crash-looping. A client that
    never started (stopped, cancelled) is closed: aiokafka holds sockets and tasks from
    its first attempt."""
    backoff = Backoff(initial_s=0.5, maximum_s=10)
    try:
        while True:
            try:
                await start()
                return
            except KafkaError as exc:
                if stop is None or stop.is_set():
                    raise KafkaUnavailable("kafka", f"{what} could not connect: {exc}") from exc
                log.warning(
                    "kafka unreachable; retrying", extra={"client": what, "error": repr(exc)}
                )
                if await backoff.wait(stop):
                    raise KafkaUnavailable("kafka", f"{what} stopped before connecting") from exc
    except BaseException:
        await close()
        raise


def topic_specs(settings: Settings) -> dict[str, int]:
    """The topics CityWatch owns and their partition counts."""
    t = settings.topics
    return {
        t.readings: t.readings_partitions,
        t.rejected: t.rejected_partitions,
        t.alerts: t.alerts_partitions,
    }


async def ensure_topics(bootstrap: str, specs: dict[str, int]) -> list[str]:
    """Create missing topics with their partition counts (auto-creation is off on our broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=parts, replication_factor=1)
            for name, parts in specs.items()
            if name not in existing
        ]
        if missing:
            # Another process may create them between our list and our create.
            with suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        await _wait_for_leaders(admin, [t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Topics answer produce requests only once each partition has a leader."""
    if not names:
        return
    async with asyncio.timeout(30):
        while True:
            described = await admin.describe_topics(names)
            if all(
                t["error_code"] == 0
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.1)  # polling the broker's metadata, not standing in for it


async def kafka_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a broker at `bootstrap` answers a metadata request."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.list_topics()
        return True
    except (KafkaError, TimeoutError, OSError):
        return False
    finally:
        await admin.close()
