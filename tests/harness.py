"""Test harness: isolated names per test, services as real subprocesses, waits on conditions.

Every test gets its own Kafka topics, consumer groups, MQTT topic prefix, shared
subscription group, device ids and HTTP ports (a uuid suffix), so tests never see each
other's data although they share one Mosquitto, one Kafka and one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.city import DEFAULT_CITY_FILE
from services.common.kafka import TopicNames, client_options, ensure_topics, grant
from services.common.settings import (
    KAFKA_ACCOUNTS_FILE,
    KAFKA_ADMIN,
    POSTGRES_ACCOUNTS_FILE,
    KafkaAccount,
    Settings,
)
from services.supervisor import ServiceProcess, free_port, wait_until
from simulators import Message, Publisher

__all__ = [
    "Namespace",
    "ServiceProcess",
    "Services",
    "free_port",
    "kafka_admin_answers",
    "kafka_produce_as",
    "publish_in_device_order",
    "share_stack_logins",
    "tls_certificates",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[1]


async def kafka_admin_answers(**options: object) -> bool:
    """Whether a Kafka admin client with these options connects and lists the topics: a
    login the broker refuses (or no login) answers False."""
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.list_topics()
    except KafkaError:
        return False
    finally:
        await admin.close()
    return True


async def kafka_produce_as(settings: Settings, account: KafkaAccount, topic: str) -> None:
    """Write one record to `topic` as `account`; a refused write raises (for example
    TopicAuthorizationFailedError). Not idempotent: what decides is the right to write the
    topic, nothing else."""
    producer = AIOKafkaProducer(**client_options(settings, account), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}")
    finally:
        await producer.stop()


def tls_certificates(folder: Path) -> tuple[Path, Path]:
    """Made in `folder` with openssl: (a CA certificate, CN citywatch-test-ca; a PEM
    keystore for a broker on 127.0.0.1: its PKCS#8 key and the certificate that CA signed)."""

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    extensions, keystore = folder / "server.ext", folder / "server.pem"
    new_key = ("-newkey", "rsa:2048", "-nodes")
    ca_subject = ("-subj", "/CN=citywatch-test-ca")
    openssl("req", "-x509", *new_key, "-days", "1", *ca_subject, "-keyout", ca_key, "-out", ca)
    openssl("req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    # Clients check the host name: the certificate names the address they dial.
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    signing = ("-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1")
    openssl("x509", "-req", "-in", csr, *signing, "-extfile", extensions, "-out", cert)
    # Kafka's PEM keystore wants the key as unencrypted PKCS#8, then the certificate.
    pkcs8 = folder / "server.p8"
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", key, "-out", pkcs8)
    keystore.write_text(pkcs8.read_text() + cert.read_text())
    return ca, keystore


def share_stack_logins(stack: Settings, state_dir: Path) -> None:
    """Give another state folder (a test's own Mosquitto or CLI run) the stack's PostgreSQL
    and Kafka passwords: it uses the same servers. The copies keep their 0600 mode."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in (POSTGRES_ACCOUNTS_FILE, KAFKA_ACCOUNTS_FILE):
        if (stack.state_dir / name).exists():
            shutil.copy2(stack.state_dir / name, state_dir / name)


@dataclass
class Namespace:
    """The per-test names."""

    settings: Settings
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def prefix(self) -> str:  # MQTT topic prefix devices publish under
        return f"t{self.suffix}"

    @property
    def device_prefix(self) -> str:
        return f"t{self.suffix}-"

    @property
    def ttn_app(self) -> str:  # The Things Stack application id of this test's devices
        return f"app-{self.suffix}"

    @property
    def chirpstack_app(self) -> str:  # ChirpStack application id (a UUID) of this test
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"citywatch-test-{self.suffix}"))

    @property
    def readings_topic(self) -> str:
        return f"test.{self.suffix}.readings"

    @property
    def rejected_topic(self) -> str:
        return f"test.{self.suffix}.rejected"

    @property
    def alerts_topic(self) -> str:
        return f"test.{self.suffix}.alerts"

    async def create_topics(self, readings_partitions: int = 4) -> None:
        await ensure_topics(
            self.settings,
            {
                self.readings_topic: readings_partitions,
                self.rejected_topic: 1,
                self.alerts_topic: 1,
            },
        )
        # Each service's principal gets on this test's topics and groups the rights it has
        # on the stack's own; prefixed, so a test's extra topics (`...readings-late`) too.
        env = self.env()
        names = TopicNames(
            self.readings_topic,
            self.rejected_topic,
            self.alerts_topic,
            env["CITYWATCH_PROCESSOR__GROUP_ID"],
            env["CITYWATCH_ALERTS__GROUP_ID"],
            env["CITYWATCH_DELIVERY__GROUP_ID"],
        )
        await grant(self.settings, names, prefixed=True)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a service of this test runs with."""
        return {
            "CITYWATCH_TOPICS__READINGS": self.readings_topic,
            "CITYWATCH_TOPICS__REJECTED": self.rejected_topic,
            "CITYWATCH_TOPICS__ALERTS": self.alerts_topic,
            "CITYWATCH_INGEST__FILTERS": json.dumps(
                [
                    f"$share/g{self.suffix}/{self.prefix}/+/+/up",
                    f"$share/g{self.suffix}/v3/{self.ttn_app}@citywatch/devices/+/up",
                    f"$share/g{self.suffix}/application/{self.chirpstack_app}/device/+/event/up",
                ]
            ),
            # Sessions of a test's gateways outlive the test; a short expiry keeps the shared
            # broker from queueing messages for them run after run.
            "CITYWATCH_INGEST__SESSION_EXPIRY_S": "600",
            "CITYWATCH_INGEST__CLIENT_ID": f"citywatch-ingest-{self.suffix}",
            "CITYWATCH_PROCESSOR__GROUP_ID": f"processor-{self.suffix}",
            "CITYWATCH_ALERTS__GROUP_ID": f"alerts-{self.suffix}",
            "CITYWATCH_DELIVERY__GROUP_ID": f"delivery-{self.suffix}",
            # The tests' simulated devices are not registered (tests of the registry say
            # "reject" explicitly).
            "CITYWATCH_INGEST__UNKNOWN_DEVICES": "accept",
            # Every test shares one database, and some write readings weeks old on purpose:
            # retention runs only where a test asks for it (test_maintenance.py).
            "CITYWATCH_RETENTION__MAINTAIN_EVERY_H": "0",
            **extra,
        }

    # -- reading back at the source ---------------------------------------------------------
    async def rows(self, db: asyncpg.Connection) -> int:
        return int(
            await db.fetchval(
                "SELECT count(*) FROM readings WHERE device_id LIKE $1", f"{self.device_prefix}%"
            )
        )

    async def committed(self, group: str, topic: str) -> int:
        """Sum of the group's committed offsets over the topic's partitions."""
        consumer = AIOKafkaConsumer(
            **client_options(self.settings, KAFKA_ADMIN),
            group_id=group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            total = 0
            for p in parts:
                total += await consumer.committed(TopicPartition(topic, p)) or 0
            return total
        finally:
            await consumer.stop()

    async def rewind(self, group: str, topic: str) -> None:
        """Commit offset 0 for `group` on every partition of `topic`: a full replay."""
        consumer = AIOKafkaConsumer(
            **client_options(self.settings, KAFKA_ADMIN),
            group_id=group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
            consumer.assign(tps)
            await consumer.commit(dict.fromkeys(tps, 0))
        finally:
            await consumer.stop()

    async def end_offsets(self, topic: str) -> int:
        consumer = AIOKafkaConsumer(**client_options(self.settings, KAFKA_ADMIN))
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
            ends = await consumer.end_offsets(tps)
            return int(sum(ends.values()))
        finally:
            await consumer.stop()

    async def read_topic(self, topic: str, count: int, timeout: float = 60) -> list[bytes]:
        """Exactly the first `count` records of `topic` (fails on a timeout)."""
        consumer = AIOKafkaConsumer(
            topic,
            **client_options(self.settings, KAFKA_ADMIN),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                while len(out) < count:
                    got = await consumer.getmany(timeout_ms=500)
                    for msgs in got.values():
                        out.extend(m.value for m in msgs)
        except TimeoutError:
            raise AssertionError(
                f"{topic}: {len(out)} of {count} records within {timeout}s"
            ) from None
        finally:
            await consumer.stop()
        return out


class Services:
    """The services one test runs, with the test's names; all stopped after the test."""

    def __init__(self, ns: Namespace, log_dir: Path) -> None:
        self.ns = ns
        self.log_dir = log_dir
        self.started: list[ServiceProcess] = []

    async def start(self, *names: str, **env: str) -> list[ServiceProcess]:
        """Start one process per name (a name twice: two processes) and wait until ready."""
        procs = [
            ServiceProcess(
                name,
                log_dir=self.log_dir,
                tag=self.ns.suffix,
                env={**self.ns.env(**env), "CITYWATCH_LOG_FORMAT": "text"},
            ).start()
            for name in names
        ]
        self.started += procs
        await asyncio.gather(*(p.wait_ready() for p in procs))
        return procs


def device_rounds(msgs: Sequence[Message]) -> list[list[Message]]:
    """`msgs` cut, in their order, into runs holding at most one message per device."""
    rounds: list[list[Message]] = []
    devices: set[str] = set()
    for m in msgs:
        if not rounds or m.device_id in devices:
            rounds.append([])
            devices = set()
        rounds[-1].append(m)
        devices.add(m.device_id)
    return rounds


async def publish_in_device_order(
    ns: Namespace, publisher: Publisher, msgs: Sequence[Message], timeout: float = 60
) -> None:
    """Publish `msgs` so that each device's messages reach Kafka in the order given.

    The default broker, Apache ActiveMQ Artemis (2.44), does not keep one connection's
    QoS 1 messages in order under load: 2,500 numbered messages published back to back on
    one connection, in one thread, arrived with runs of one to hundreds of them after later
    ones in 14 of 19 tries on the 2-core box under load (tests/test_alert_rules_stack.py's
    gauge once had its 1.9 m on Kafka before the 1.85 m read ten minutes earlier). One device's
    readings published in a burst then reach Kafka out of reading-time order, and the
    pipeline treats each overtaken reading as late, as designed: an alert rule skips it as
    a replay and the spike test may not judge it. That is not what a test of in-order data
    sets out to check, so the messages go out in runs of at most one per device (each device
    keeps its order, devices interleave as given), a run only once the one before it is on
    Kafka: its readings on the readings topic, a message the gateway must refuse on the
    rejected topic.
    """
    consumer = AIOKafkaConsumer(**client_options(ns.settings, KAFKA_ADMIN))
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(topic, p)
            for topic in (ns.readings_topic, ns.rejected_topic)
            for p in consumer.partitions_for_topic(topic) or set()
        ]
        expected = int(sum((await consumer.end_offsets(tps)).values()))

        async def landed() -> bool:
            return int(sum((await consumer.end_offsets(tps)).values())) >= expected

        for run in device_rounds(msgs):
            infos = [publisher.publish_raw(m.topic, m.payload) for m in run]
            for info in infos:
                await asyncio.to_thread(info.wait_for_publish, 10)
            assert all(info.is_published() for info in infos), "the broker did not ack a publish"
            expected += sum(m.readings if m.valid else 1 for m in run)
            # Polled often: asking one open consumer for the end offsets is one small request.
            await wait_until(
                landed, timeout=timeout, what=f"{expected} records on Kafka", every=0.02
            )
    finally:
        await consumer.stop()


def city_file_with(folder: Path, *area_ids: str) -> Path:
    """A city file in `folder`: the shipped city plus areas of the test's own (by id).

    Rules and the registry name areas by the city's ids, and the alerts service refuses
    rules about areas its city lacks, so a test that invents an area writes it here and
    starts the service with `CITYWATCH_CITY_FILE` pointing at the file."""
    doc = yaml.safe_load(DEFAULT_CITY_FILE.read_text(encoding="utf-8"))
    doc["areas"] += [{"id": area, "lat": 10.6, "lon": 103.5} for area in area_ids]
    path = folder / "city.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return path
