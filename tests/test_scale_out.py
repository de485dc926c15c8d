"""The platform scaled out, under load, with one member SIGKILLed at a time (issue 12, point 2).

A group of two gateways (one shared MQTT subscription), two processors (one consumer
group) and two alerts instances (a leader and a hot standby) runs on a 3-broker KRaft
cluster (replication factor 3, min.insync.replicas 2) while a simulated fleet publishes
QoS 1 at a steady rate. Each test SIGKILLs one member: the broker that leads the partition
of a busy device (the flood gauge below), a gateway, a processor, the alerts leader.

Checked at the source, for each:
- every reading the broker acknowledged (PUBACK) is stored, and once: the rows of the
  fleet's messages (each has its own reading time) are exactly the rows they carry;
- a flood gauge crosses its level just before the kill and stays above it: exactly one
  alert, with one `firing` event in the database and one event (by event_id) on the
  alerts topic, once the alerts group has evaluated every reading (offsets at the end);
- how long the group took to recover, printed (never asserted: timings belong to
  benchmarks): from the kill until it was caught up for good (from then on every reading
  acknowledged 2 s earlier was stored; 0 if it never fell behind), and for the alerts
  leader until the standby led.

The killed gateway is started again at once under the same client id, as a supervisor
(the Helm chart's StatefulSet) would: its persistent session holds what Mosquitto had
handed it and not yet had acknowledged and, until it is back, its share of what devices
publish (Mosquitto queues for a disconnected member of a shared subscription whose
session lives on), which no other member may take. The killed broker is started again
after its test, so each test begins with three. Killed processors and alerts leaders are
not restarted: the survivor carries on.

The cluster is this module's own (its own state folder, ports 100 above the test stack's
Kafka port: 29192-29197 for `citywatch test`), so the shared single-broker stack is never
touched; Mosquitto and PostgreSQL are the test stack's, with per-test names.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN, Settings, load_settings
from services.stack.cluster import KafkaCluster, PostgresStandby
from services.stack.process import pid_alive, wait_for
from simulators import Fleet, Message, Publisher
from tests.conftest import simulator_publisher
from tests.harness import (
    Namespace,
    ServiceProcess,
    Services,
    free_port,
    share_stack_logins,
    wait_until,
)
from tests.test_alert_rules_stack import events_on_topic
from tests.test_broker_crash import Publishing, lost_messages, reading_time

pytestmark = [pytest.mark.stack, pytest.mark.slow]

BROKERS = 3
PARTITIONS = 4  # the readings topic's partitions: two per processor
RATE = 200  # messages per second (about 1,100 rows per second) on the shared 2-core box
COUNT = RATE * 24  # 24 s of load: the kill comes about 8 s in
RECOVERY_TIMEOUT_S = 120
# Behind: a message the broker acknowledged this long ago is not stored yet (the pipeline's
# own latency at this rate is well under a second: batches of at most 250 ms).
LAG_S = 2.0
LEVEL = 2.5  # the gauge's alert level (m); it clears at 2.2

RULES = f"""\
rules:
  - id: {{rule}}
    type: threshold
    kind: flood
    metric: water_level_m
    threshold: {LEVEL}
    clear: 2.2
    severity: warning
    title_en: "Flood warning: {{{{value}}}} at {{{{device}}}}"
    title_km: "{{{{value}}}}"
"""


@pytest.fixture(scope="module")
def cluster(migrated: Settings) -> Iterator[KafkaCluster]:
    """This module's 3-broker cluster, formatted with the test stack's Kafka logins (so
    every service's principal logs in as on the stack)."""
    state = migrated.state_dir / f"cluster-{uuid.uuid4().hex[:8]}"
    share_stack_logins(migrated, state)
    first = migrated.kafka_host_port[1] + 100
    settings = load_settings(state_dir=state, kafka_bootstrap=f"127.0.0.1:{first}")
    kafka = KafkaCluster(settings, BROKERS)
    kafka.up()
    yield kafka
    kafka.down()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def standby(cluster: KafkaCluster) -> Iterator[PostgresStandby]:
    """A streaming standby of the test stack's PostgreSQL, in the cluster's state folder
    (`citywatch stack up --pg-standby` there), on a free port."""
    url = f"postgresql://citywatch@127.0.0.1:{free_port()}/citywatch"
    part = PostgresStandby(
        load_settings(state_dir=cluster.settings.state_dir, database_read_url=url)
    )
    part.up()
    yield part
    part.down()


async def test_the_cluster_keeps_three_copies_and_status_lists_every_member(
    cluster: KafkaCluster, standby: PostgresStandby, ns: Namespace
) -> None:
    """Replication factor 3 and min.insync.replicas 2 on the topics CityWatch creates, and
    `citywatch stack status` shows each broker and the standby of that state folder."""
    admin = AIOKafkaAdminClient(**client_options(ns.settings, KAFKA_ADMIN))
    await admin.start()
    try:
        [topic] = await admin.describe_topics([ns.readings_topic])
        [configs] = await admin.describe_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, ns.readings_topic, {"min.insync.replicas": None}
                )
            ]
        )
    finally:
        await admin.close()
    assert [len(p["replicas"]) for p in topic["partitions"]] == [BROKERS] * PARTITIONS
    [entry] = configs.to_object()["resources"][0]["config_entries"]
    assert entry["config_value"] == "2"

    status = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "services.cli",
            "stack",
            "status",
            "--only",
            "kafka,postgres-standby",
        ],
        env={
            **os.environ,
            "CITYWATCH_STATE_DIR": str(cluster.settings.state_dir),
            "CITYWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{cluster.port}",
            "CITYWATCH_DATABASE_READ_URL": standby.settings.database_url.get_secret_value(),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    lines = [line.split()[:3] for line in status.stdout.splitlines()]
    assert lines == [
        ["postgres-standby", "up", standby.endpoint],
        *[
            ["kafka-" + str(i), "up", f"127.0.0.1:{cluster.port + 2 * (i - 1)}"]
            for i in range(1, 4)
        ],
    ], status.stdout


async def test_the_read_api_reads_from_the_standby_what_the_primary_wrote(
    standby: PostgresStandby, services: Services, ns: Namespace, dbcon: asyncpg.Connection
) -> None:
    """With CITYWATCH_DATABASE_READ_URL the API's queries go to the standby: a device
    registered on the primary is served once replayed, over connections to the standby."""
    url = standby.settings.database_url.get_secret_value()
    [api] = await services.start(
        "api",
        CITYWATCH_DATABASE_READ_URL=url,
        CITYWATCH_KAFKA_BOOTSTRAP=ns.settings.kafka_bootstrap,  # the stream reads the cluster
    )
    device = f"{ns.device_prefix}standby"
    await dbcon.execute("INSERT INTO devices (device_id, kind) VALUES ($1, 'flood')", device)

    async def served() -> bool:
        status, _ = await asyncio.to_thread(api.http, f"/devices/{device}")
        return status == 200

    await wait_until(served, timeout=30, what="the device served by the API")
    reader = await asyncpg.connect(standby.settings.database_dsn)
    try:
        assert await reader.fetchval("SELECT pg_is_in_recovery()")  # a standby, read-only
        api_sessions = await reader.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE usename = 'citywatch' AND pid <> pg_backend_pid()"
        )
    finally:
        await reader.close()
    assert api_sessions >= 1  # the API's pool is connected to the standby


@pytest.fixture
async def ns(cluster: KafkaCluster) -> Namespace:
    """Per-test names on the cluster (the readings topic with 3 copies of each partition)."""
    # Every broker back (the broker test kills one); a no-op when all three answer.
    await asyncio.to_thread(cluster.up)
    names = Namespace(cluster.settings)
    await names.create_topics(readings_partitions=PARTITIONS)
    return names


@dataclass
class Group:
    """The scaled-out services of one test, the fleet's messages and the flood gauge."""

    ns: Namespace
    db: asyncpg.Connection
    gateways: list[ServiceProcess]
    processors: list[ServiceProcess]
    alerts: list[ServiceProcess]
    rule_id: str
    gauge: str
    msgs: list[Message]
    gauge_sent: list[float] = field(default_factory=list)

    async def leader(self, candidates: list[ServiceProcess], timeout: float) -> ServiceProcess:
        """The one alerts instance that leads (`citywatch_alerts_leader` 1, ready) while
        the other live ones stand by (0, /readyz 503 on `leader`)."""
        found: list[ServiceProcess] = []

        async def settled() -> bool:
            roles = [
                await asyncio.to_thread(p.metric, "citywatch_alerts_leader") for p in candidates
            ]
            statuses = [(await asyncio.to_thread(p.http, "/readyz"))[0] for p in candidates]
            found[:] = [
                p
                for p, r, s in zip(candidates, roles, statuses, strict=True)
                if r == 1 and s == 200
            ]
            standing = [s for r, s in zip(roles, statuses, strict=True) if r == 0 and s == 503]
            return len(found) == 1 and len(standing) == len(candidates) - 1

        await wait_until(settled, timeout=timeout, what="one alerts leader, the others standby")
        return found[0]

    def gauge_partition(self) -> int:
        """The readings partition of the gauge (the gateway keys records by device id)."""
        return (murmur2(self.gauge.encode()) & 0x7FFFFFFF) % PARTITIONS

    async def partition_leader(self, after: int | None = None, timeout: float = 10) -> int:
        """The broker (node id) that leads the gauge's partition: now, with all three copies
        in sync, or (`after` a killed leader) once another broker leads it."""
        found: list[int] = []

        async def led() -> bool:
            admin = AIOKafkaAdminClient(**client_options(self.ns.settings, KAFKA_ADMIN))
            try:
                await admin.start()
                [topic] = await admin.describe_topics([self.ns.readings_topic])
            except KafkaError:
                return False  # asked the killed broker: ask again (another, next time)
            finally:
                await admin.close()
            [part] = [p for p in topic["partitions"] if p["partition"] == self.gauge_partition()]
            found[:] = [int(part["leader"])]
            if after is None:
                return len(part["isr"]) == BROKERS
            return found[0] not in (after, -1)

        await wait_until(led, timeout=timeout, what="the gauge's partition leader", every=0.2)
        return found[0]

    async def watch(self, publisher: Publisher, killed: asyncio.Future[float]) -> float:
        """Seconds from the kill until the group was caught up for good: from then on, every
        fleet message the broker acknowledged LAG_S earlier was stored. Sampled every 0.1 s
        until every message is acknowledged and stored (PUBACKs of one connection come in
        publishing order, so what is due is a prefix of the messages; each has its own
        reading time, which gives that prefix's rows). 0: never behind after the kill."""
        rows_upto = list(accumulate(m.rows for m in self.msgs))
        history: list[tuple[float, int]] = []  # (monotonic time, acknowledged so far)
        last_behind = 0.0
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S + COUNT / RATE
        while True:
            now = time.monotonic()
            history.append((now, publisher.acked))
            due = max((acked for at, acked in history if at <= now - LAG_S), default=0)
            behind = False
            if due:
                stored = await self.db.fetchval(
                    "SELECT count(*) FROM readings WHERE device_id LIKE $1 AND time <= $2",
                    f"{self.ns.device_prefix}%",
                    reading_time(self.msgs[due - 1]),
                )
                behind = int(stored) < rows_upto[due - 1]
            if behind:
                last_behind = now
            elif due == len(self.msgs):
                break
            assert now < deadline, f"the group still behind {RECOVERY_TIMEOUT_S}s after the load"
            await asyncio.sleep(0.1)  # the sampling interval, not a wait on a result
        return max(0.0, last_behind - await killed)

    async def evaluated(self) -> None:
        """Every reading on the topic is stored and evaluated: the processors' and the
        alerts leader's groups committed up to the end of the readings topic."""
        env = self.ns.env()

        async def done() -> bool:
            end = await self.ns.end_offsets(self.ns.readings_topic)
            groups = (env["CITYWATCH_PROCESSOR__GROUP_ID"], env["CITYWATCH_ALERTS__GROUP_ID"])
            for group in groups:
                if await self.ns.committed(group, self.ns.readings_topic) < end:
                    return False
            return True

        await wait_until(done, timeout=RECOVERY_TIMEOUT_S, what="both groups at the end", every=1)

    async def one_alert(self) -> None:
        """Exactly one alert for the gauge's crossing, firing once, published once."""
        rows = await self.db.fetch(
            "SELECT a.alert_id, e.event_id, e.state FROM alerts a JOIN alert_events e"
            " USING (alert_id) WHERE a.rule_id = $1 AND a.device_id = $2 ORDER BY e.event_id",
            self.rule_id,
            self.gauge,
        )
        assert [r["state"] for r in rows] == ["firing"], rows  # raised, and only once
        published: list[dict[str, Any]] = []

        async def on_topic() -> bool:
            events = await events_on_topic(self.ns, lambda e: e["rule_id"] == self.rule_id)
            published[:] = list({e["event_id"]: e for e in events}.values())
            return bool(published)

        # The outbox is at least once (a leader killed between publishing and marking may
        # leave an event to be published again); consumers key on event_id.
        await wait_until(on_topic, timeout=30, what="the alert on the alerts topic")
        assert [(str(e["alert_id"]), e["transition"]) for e in published] == [
            (str(rows[0]["alert_id"]), "firing")
        ], published


@pytest.fixture
async def group(
    ns: Namespace,
    services: Services,
    cluster: KafkaCluster,
    dbcon: asyncpg.Connection,
    tmp_path: Path,
) -> Group:
    rule_id = f"scale-{ns.suffix}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(rule=rule_id), "utf-8")
    env = {
        **ns.env(
            CITYWATCH_KAFKA_BOOTSTRAP=cluster.settings.kafka_bootstrap,
            CITYWATCH_ALERTS__RULES_FILE=str(rules),
        ),
        "CITYWATCH_LOG_FORMAT": "text",
    }

    def start(name: str, **extra: str) -> ServiceProcess:
        proc = ServiceProcess(name, log_dir=services.log_dir, tag=ns.suffix, env={**env, **extra})
        services.started.append(proc)  # stopped (and checked to exit 0) after the test
        return proc.start()

    # Two gateways in one shared subscription (ns.env's `$share/...` filters), each with its
    # own persistent session: a client id per gateway, as the chart's StatefulSet gives.
    gateways = [
        start("ingest", CITYWATCH_INGEST__CLIENT_ID=f"citywatch-ingest-{ns.suffix}-{i}")
        for i in range(2)
    ]
    processors = [start("processor") for _ in range(2)]
    alerts = [start("alerts") for _ in range(2)]
    await asyncio.gather(*(p.wait_ready(90) for p in gateways + processors))
    fleet = Fleet(per_kind=3, seed=12, prefix=ns.prefix, id_prefix=ns.device_prefix)
    # Reading time runs with the wall clock (one message every 1/RATE s), two hours back:
    # the gauge's readings, stamped from the wall clock, stay in step with its partition.
    start_at = datetime.now(UTC) - timedelta(hours=2)
    stream = fleet.messages(start_at, step_ms=1000 / RATE)
    g = Group(
        ns,
        dbcon,
        gateways,
        processors,
        alerts,
        rule_id,
        gauge=f"gauge-{ns.suffix}",  # outside the fleet's prefix: its rows are not counted
        msgs=[next(stream) for _ in range(COUNT)],
    )
    await g.leader(alerts, timeout=90)
    return g


class Gauge:
    """The flood gauge: one reading a second, rising 1 cm a reading (36 m/h, a flash flood
    the quality checks pass) from 2.45 m, so it crosses the level on its 6th reading. The
    threshold rule opens on the second reading above the level (persistence)."""

    def __init__(self, group: Group, publisher: Publisher) -> None:
        self.group = group
        self.publisher = publisher
        self.above = asyncio.Event()  # the first reading above the level is acknowledged
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        g = self.group
        topic = f"{g.ns.prefix}/flood/{g.gauge}/up"
        for i in range(120):
            level = round(2.45 + 0.01 * i, 3)
            at = datetime.now(UTC) - timedelta(hours=2)
            body = {"time": at.isoformat(), "metrics": {"water_level_m": level}}
            info = self.publisher.publish_raw(topic, json.dumps(body).encode())
            await asyncio.to_thread(info.wait_for_publish, 30)
            g.gauge_sent.append(level)
            if level > LEVEL:
                self.above.set()
            await asyncio.sleep(1)  # the gauge's reporting interval, not a wait on a result

    async def __aenter__(self) -> Gauge:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
def fleet_publisher(migrated: Settings) -> Iterator[Publisher]:
    with simulator_publisher(migrated) as pub:
        yield pub


# Kills one member of the group; returns when (monotonic time) and what else it saw
# recover (the standby leading, the restarted gateway ready), for the report.
Kill = Callable[[Group], Awaitable[tuple[float, str]]]


async def under_load(
    group: Group, fleet_publisher: Publisher, gauge_publisher: Publisher, kill: Kill
) -> tuple[float, str]:
    """Run the load, kill one member as the gauge crosses its level, and check every
    guarantee; returns (seconds until caught up for good, what the kill reported)."""
    killed: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    with Publishing(fleet_publisher, group.msgs, rate=RATE) as fleet:
        await fleet.acked_more(RATE * 3)  # steady load, rows flowing
        async with Gauge(group, gauge_publisher) as gauge:
            await asyncio.wait_for(gauge.above.wait(), 60)
            watcher = asyncio.create_task(group.watch(fleet_publisher, killed))
            try:
                killed_at, seen = await kill(group)
                killed.set_result(killed_at)
                recovered = await watcher
            finally:
                watcher.cancel()
            await fleet.finished()
        lost = await lost_messages(group.ns, group.db, group.msgs)
        assert not lost, f"{len(lost)} acknowledged readings never stored: {lost[:10]}"
        await group.evaluated()
        await group.one_alert()
    return recovered, seen


def report(fault: str, recovered: float, seen: str) -> None:
    load = os.getloadavg()[0]
    print(
        f"\nRECOVERY {fault}: caught up for good (every reading acknowledged {LAG_S:.0f} s "
        f"earlier stored) {recovered:.1f} s after the kill{seen} ({COUNT} messages at "
        f"{RATE}/s, {BROKERS} brokers, 2 gateways, 2 processors, 2 alerts instances; "
        f"load average {load:.1f} on {os.cpu_count()} cores)"
    )


async def test_killing_the_partition_leader_of_a_busy_partition_loses_and_duplicates_nothing(
    group: Group,
    cluster: KafkaCluster,
    fleet_publisher: Publisher,
    publisher: Publisher,
) -> None:
    async def kill(g: Group) -> tuple[float, str]:
        leader = await g.partition_leader()
        node = cluster.nodes[leader - 1]
        pid = node.pid()
        assert pid is not None and node.node_id == leader
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert await asyncio.to_thread(wait_for, lambda: not pid_alive(pid), 10)
        new = await g.partition_leader(after=leader, timeout=RECOVERY_TIMEOUT_S)
        return killed_at, (
            f"; broker {new} led the gauge's partition {time.monotonic() - killed_at:.1f} s "
            f"after broker {leader} was killed"
        )

    recovered, seen = await under_load(group, fleet_publisher, publisher, kill)
    report("the Kafka partition leader", recovered, seen)


async def test_killing_a_gateway_loses_and_duplicates_nothing(
    group: Group, fleet_publisher: Publisher, publisher: Publisher
) -> None:
    async def kill(g: Group) -> tuple[float, str]:
        gateway = g.gateways[0]
        gateway.kill()
        killed_at = time.monotonic()
        # Restarted at once under its client id: its session holds what Mosquitto handed
        # it and it had not acknowledged, and its share of what devices publish until it
        # is back, which no other member of the shared subscription may take.
        gateway.start()
        await gateway.wait_ready(RECOVERY_TIMEOUT_S)
        return killed_at, (
            f"; the restarted gateway was ready {time.monotonic() - killed_at:.1f} s after the kill"
        )

    recovered, seen = await under_load(group, fleet_publisher, publisher, kill)
    report("a gateway (restarted at once under its client id)", recovered, seen)


async def test_killing_a_processor_loses_and_duplicates_nothing(
    group: Group, fleet_publisher: Publisher, publisher: Publisher
) -> None:
    async def kill(g: Group) -> tuple[float, str]:
        g.processors[0].kill()  # not restarted: the other takes its partitions
        return time.monotonic(), ""

    recovered, seen = await under_load(group, fleet_publisher, publisher, kill)
    report("a processor (not restarted)", recovered, seen)


async def test_killing_the_alerts_leader_raises_the_crossing_once_and_loses_nothing(
    group: Group, fleet_publisher: Publisher, publisher: Publisher
) -> None:
    async def kill(g: Group) -> tuple[float, str]:
        leader = await g.leader(g.alerts, timeout=10)
        [standby] = [p for p in g.alerts if p is not leader]
        leader.kill()  # PostgreSQL frees its lock when the socket closes
        killed_at = time.monotonic()
        assert await g.leader([standby], timeout=RECOVERY_TIMEOUT_S) is standby
        return killed_at, f"; the standby led {time.monotonic() - killed_at:.1f} s after the kill"

    recovered, seen = await under_load(group, fleet_publisher, publisher, kill)
    report("the alerts leader (not restarted)", recovered, seen)
