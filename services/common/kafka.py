"""The one place Kafka clients are built: idempotent producers, manual-commit consumers, topics,
and who may do what (SASL logins and ACLs).

Every producer is idempotent with `acks=all` (DESIGN.md, delivery guarantees); every
consumer commits by hand, after its side effects are durable. Every client logs in as one
principal (`client_options`): the local broker takes SASL/SCRAM-SHA-512 logins only, and
its StandardAuthorizer lets each principal do what `kafka_acls` grants and nothing more
(issue 10): only the gateway writes readings, only the alerts service writes alerts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

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
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.protocol.admin import CreateAclsRequest

from services.common.backoff import Backoff
from services.common.errors import ConfigError, KafkaUnavailable
from services.common.settings import KAFKA_ADMIN, KafkaAccount, Settings

log = logging.getLogger(__name__)

__all__ = [
    "MAX_RECORD_BYTES",
    "PRODUCER_CLOSE_S",
    "RECORD_REFUSED",
    "SASL_MECHANISM",
    "Acl",
    "KafkaError",
    "TopicNames",
    "client_options",
    "close_producer",
    "consumer",
    "ensure_acls",
    "ensure_topics",
    "grant",
    "kafka_acls",
    "kafka_answers",
    "open_producer",
    "producer",
    "replication",
    "topic_specs",
]

# The one SASL mechanism the local broker enables on its client listener
# (deploy/kafka/server.properties); `citywatch stack up` creates the principals' SCRAM
# credentials for it when it formats the broker's storage.
SASL_MECHANISM = "SCRAM-SHA-512"


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


def client_options(settings: Settings, account: KafkaAccount) -> dict[str, Any]:
    """The bootstrap servers, login and transport of one principal, for any aiokafka client.

    With a login (the state folder's `kafka-accounts.json`, or CITYWATCH_KAFKA_USERNAME and
    _PASSWORD) the client authenticates with SASL/SCRAM-SHA-512, over plain TCP (the local
    stack, compose) or over TLS with CITYWATCH_KAFKA_SECURITY_PROTOCOL=SASL_SSL (a Strimzi
    listener), checking the brokers' certificates against CITYWATCH_KAFKA_CA_FILE or the
    system's CAs. Without a login it connects in plain text, as to a broker that takes
    anonymous clients; a protocol or CA file given without a login is a mistake, refused.
    """
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
    login = settings.kafka_login(account)
    protocol = settings.kafka_security_protocol
    if login is None:
        if protocol is not None or settings.kafka_ca_file is not None:
            raise ConfigError(
                f"CITYWATCH_KAFKA_SECURITY_PROTOCOL/_CA_FILE are set but {account} has no "
                f"Kafka login: set CITYWATCH_KAFKA_USERNAME and _PASSWORD"
            )
        return options
    protocol = protocol or "SASL_PLAINTEXT"
    if protocol == "SASL_PLAINTEXT" and settings.kafka_ca_file is not None:
        raise ConfigError(
            "CITYWATCH_KAFKA_CA_FILE is set but the connection is not TLS: "
            "set CITYWATCH_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or drop the CA file)"
        )
    options |= {
        "security_protocol": protocol,
        "sasl_mechanism": SASL_MECHANISM,
        "sasl_plain_username": login[0],
        "sasl_plain_password": login[1],
    }
    if protocol == "SASL_SSL":
        # aiokafka wants the context itself; its helper verifies the certificate and the
        # host name (check_hostname is always on).
        try:
            options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ca_file)
        except OSError as exc:  # ssl.SSLError is an OSError: an unreadable or non-PEM file
            raise ConfigError(f"CITYWATCH_KAFKA_CA_FILE {settings.kafka_ca_file}: {exc}") from exc
    return options


@asynccontextmanager
async def producer(
    settings: Settings,
    *,
    account: KafkaAccount,
    client_id: str,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer; on exit it flushes what is in flight, for a bounded time."""
    prod = await open_producer(settings, account=account, client_id=client_id, stop=stop)
    try:
        yield prod
    finally:
        await close_producer(prod)


class KeyPartitioner:
    """Kafka's default partitioner (murmur2 of the key, as the Java client and aiokafka's
    `DefaultPartitioner` compute it), remembered per key and partition count.

    A key is a device id, so a producer sees the same few thousand keys again and again,
    and aiokafka's murmur2 is pure Python: recomputing it was 5 % of the gateway's CPU at
    saturation (issue 11). Records without a key go where aiokafka's partitioner sends them.
    """

    _LIMIT = 100_000  # keys remembered; past it the memory starts again (ids are bounded)

    def __init__(self) -> None:
        self._seen: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        n = len(all_partitions)
        index = self._seen.get((key, n))
        if index is None:
            if len(self._seen) >= self._LIMIT:
                self._seen.clear()
            index = self._seen[(key, n)] = (murmur2(key) & 0x7FFFFFFF) % n
        return all_partitions[index]


async def open_producer(
    settings: Settings,
    *,
    account: KafkaAccount,
    client_id: str,
    stop: asyncio.Event | None = None,
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
        **client_options(settings, account),
        client_id=client_id,
        partitioner=KeyPartitioner(),
        enable_idempotence=True,
        acks="all",
        linger_ms=settings.kafka_linger_ms,
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
    abandoned = False
    try:
        async with asyncio.timeout(timeout_s):
            await prod.flush()
    except TimeoutError:
        log.warning("kafka producer closing with records still unsent; failing them")
        # aiokafka has no public "abandon what is queued"; this is what its own fatal
        # errors do (MessageAccumulator.fail_all).
        prod._message_accumulator.fail_all(KafkaConnectionError("producer closed undelivered"))
        abandoned = True
    try:
        async with asyncio.timeout(timeout_s):
            await prod.stop()
    except TimeoutError:
        log.warning("kafka producer did not stop in time; abandoning it")
    except KeyError:
        # A request that was in flight when its batch was failed above fails in turn, and
        # aiokafka's sender re-queues the batch it no longer holds (reenqueue: KeyError).
        # The producer is stopped by then; what it held was failed to its senders.
        if not abandoned:
            raise
        log.warning("kafka producer stopped after failing its unsent records")


@asynccontextmanager
async def consumer(
    settings: Settings,
    *,
    account: KafkaAccount,
    group_id: str,
    topics: Iterable[str],
    client_id: str,
    listener: ConsumerRebalanceListener | None = None,
    max_poll_records: int = 2000,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[AIOKafkaConsumer]:
    """A group consumer with auto-commit off: the caller commits after its work is durable."""
    cons = AIOKafkaConsumer(
        **client_options(settings, account),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        fetch_min_bytes=settings.kafka_fetch_min_bytes,
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


async def ensure_topics(settings: Settings, specs: dict[str, int]) -> list[str]:
    """Create missing topics with their partition counts (auto-creation is off on our broker),
    as the admin principal."""
    admin = AIOKafkaAdminClient(**client_options(settings, KAFKA_ADMIN), request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        brokers = len((await admin.describe_cluster())["brokers"])
        factor, min_insync = replication(brokers, settings.topics.replication_factor)
        missing = [
            NewTopic(
                name,
                num_partitions=parts,
                replication_factor=factor,
                topic_configs={"min.insync.replicas": str(min_insync)},
            )
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


def replication(brokers: int, wanted: int | None = None) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a topic on a cluster of `brokers`.

    Unset, the factor is the number of brokers up to 3: one broker (the local stack, the
    test suite) keeps one copy, and a cluster keeps three, the usual choice (two would stop
    a partition's writes, or risk them, whenever one broker is down for maintenance).
    min.insync.replicas is 2 from three copies on: with the producers' acks=all a record is
    acknowledged only once two brokers hold it, so losing any one broker loses nothing
    acknowledged, and writes go on while one is down. With one or two copies it is 1 (2 of
    2 would stop every write while either broker is down).
    """
    factor = wanted if wanted is not None else min(3, max(1, brokers))
    return factor, 2 if factor >= 3 else 1


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


async def kafka_answers(settings: Settings, timeout_s: float = 5.0) -> bool:
    """True when the broker answers the admin principal's metadata request."""
    admin = AIOKafkaAdminClient(
        **client_options(settings, KAFKA_ADMIN), request_timeout_ms=int(timeout_s * 1000)
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


# -- who may do what (ACLs) ----------------------------------------------------------------
# Kafka's wire codes (org.apache.kafka.common.resource.ResourceType, PatternType,
# acl.AclOperation, acl.AclPermissionType).


class Resource(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Pattern(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    READ = 3  # implies DESCRIBE
    WRITE = 4  # implies DESCRIBE
    IDEMPOTENT_WRITE = 12


_ALLOW = 3
_CLUSTER = "kafka-cluster"


@dataclass(frozen=True)
class Acl:
    """One ALLOW rule: `principal` may do `operation` on the resource `name`."""

    principal: KafkaAccount
    resource: Resource
    name: str
    operation: Operation
    pattern: Pattern = Pattern.LITERAL


@dataclass(frozen=True)
class TopicNames:
    """The topics and consumer groups one set of services uses: the stack's own (`of`), or
    a test's, bench run's or evaluation's (uuid-suffixed)."""

    readings: str
    rejected: str
    alerts: str
    processor_group: str
    alerts_group: str
    delivery_group: str

    @classmethod
    def of(cls, settings: Settings) -> TopicNames:
        t = settings.topics
        return cls(
            t.readings,
            t.rejected,
            t.alerts,
            settings.processor.group_id,
            settings.alerts.group_id,
            settings.delivery.group_id,
        )


def kafka_acls(names: TopicNames, *, prefixed: bool = False) -> list[Acl]:
    """Each principal's rights, from what each service writes and reads:

    - ingest (the gateway) writes readings and rejections;
    - processor reads readings (its group) and writes the rejections it finds;
    - alerts reads readings (its group), writes alerts, and its delivery part reads alerts
      (the delivery group);
    - api reads readings and alerts without a group (the live stream).

    The admin principal is a super user (server.properties), for the stack's tooling, the
    tools (bench, evaluate) and the tests. `prefixed` grants on every name that starts with
    the given ones: a test's topics (`test.<id>.readings`, `test.<id>.readings-late`).
    """
    pattern = Pattern.PREFIXED if prefixed else Pattern.LITERAL
    n = names
    writes: dict[KafkaAccount, tuple[str, ...]] = {
        "citywatch-ingest": (n.readings, n.rejected),
        "citywatch-processor": (n.rejected,),
        "citywatch-alerts": (n.alerts,),
    }
    reads: dict[KafkaAccount, tuple[tuple[str, str | None], ...]] = {
        "citywatch-processor": ((n.readings, n.processor_group),),
        "citywatch-alerts": ((n.readings, n.alerts_group), (n.alerts, n.delivery_group)),
        "citywatch-api": ((n.readings, None), (n.alerts, None)),
    }
    acls: list[Acl] = []
    for who, topics in writes.items():
        # An idempotent producer's InitProducerId (the version aiokafka sends) needs this.
        acls.append(Acl(who, Resource.CLUSTER, _CLUSTER, Operation.IDEMPOTENT_WRITE))
        acls += [Acl(who, Resource.TOPIC, t, Operation.WRITE, pattern) for t in topics]
    for who, pairs in reads.items():
        for topic, group in pairs:
            acls.append(Acl(who, Resource.TOPIC, topic, Operation.READ, pattern))
            if group is not None:
                acls.append(Acl(who, Resource.GROUP, group, Operation.READ, pattern))
    return acls


async def ensure_acls(settings: Settings, acls: Iterable[Acl]) -> None:
    """Create `acls` as the admin principal (creating one that exists changes nothing)."""
    admin = AIOKafkaAdminClient(**client_options(settings, KAFKA_ADMIN), request_timeout_ms=15_000)
    await admin.start()
    try:
        for acl in acls:
            # aiokafka has no public create_acls; its request type carries one binding.
            request = CreateAclsRequest(
                acl.resource,
                acl.name,
                acl.pattern,
                f"User:{acl.principal}",
                "*",
                acl.operation,
                _ALLOW,
            )
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code:
                    raise for_code(code)(f"creating {acl}: {message}")
    finally:
        await admin.close()


async def grant(settings: Settings, names: TopicNames, *, prefixed: bool = False) -> None:
    """Give each principal its rights on `names`; nothing to do on a broker without logins
    (no principals, no authorizer)."""
    if settings.kafka_login(KAFKA_ADMIN) is None:
        return
    await ensure_acls(settings, kafka_acls(names, prefixed=prefixed))
