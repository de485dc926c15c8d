"""Several alerts instances in one group: one leads (evaluates), the others stand by.

Pinned here, on the real stack: the lock key is stable per group; one lock session leads
and a terminated one steps down and hands over; with two alerts processes in one group
exactly one joins the consumer group and is ready, a combined rule whose conditions come
from devices on different partitions raises one alert, and after the leader is SIGKILLed
(or its lock session is terminated) the other takes over and a later episode fires once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from services.alerts.leadership import Leadership, lock_ids, lock_key
from services.common.errors import DatabaseUnavailable
from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN
from simulators import Publisher
from tests.harness import Namespace, ServiceProcess, Services, city_file_with, wait_until
from tests.test_alert_rules_stack import events_on_topic

PARTITIONS = 4  # Namespace.create_topics' default for the readings topic
TAKEOVER_S = 60  # a SIGKILLed member stays in the Kafka group for its session (10 s)


# -- the lock on its own ---------------------------------------------------------------------


def test_lock_key_is_a_stable_signed_64_bit_hash_of_the_group_id() -> None:
    # Pinned: every instance, on any Python and host, must compute the same key.
    assert lock_key("alerts") == lock_key("alerts") == 7755740267207662181
    assert lock_key("alerts") != lock_key("alerts-2")
    assert all(-(2**63) <= lock_key(g) < 2**63 for g in ("", "alerts", "x" * 300))
    classid, objid = lock_ids(lock_key("alerts"))
    assert ((classid << 32) | objid) == lock_key("alerts") & (2**64 - 1)


@pytest.mark.stack
async def test_one_session_leads_and_a_terminated_lock_session_steps_down_and_hands_over(
    ns: Namespace, dbcon: asyncpg.Connection
) -> None:
    dsn, group = ns.settings.database_dsn, f"alerts-{ns.suffix}"
    stop = asyncio.Event()
    async with Leadership(dsn, group) as first, Leadership(dsn, group) as second:
        assert await first.acquire(stop)
        waiting = asyncio.create_task(second.acquire(stop))

        async def refused_once() -> bool:
            return second.database_ok  # it reached the lock; it would have returned on success

        await wait_until(refused_once, timeout=10, what="the second session asked for the lock")
        assert not waiting.done()
        classid, objid = lock_ids(first.key)
        holders = await dbcon.fetch(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
            classid,
            objid,
        )
        assert [r["pid"] for r in holders] == [first.backend_pid]
        async with first.connection() as con:  # the leader's fenced session works
            assert await con.fetchval("SELECT 1") == 1

        # An operator (or a keepalive timeout) ends the leader's session.
        await dbcon.execute("SELECT pg_terminate_backend($1)", first.backend_pid)
        await asyncio.wait_for(first.lost.wait(), 10)
        assert await asyncio.wait_for(waiting, 10)  # the standby took over
        with pytest.raises(DatabaseUnavailable):  # nothing more goes through the old term
            async with first.connection():
                pass
        await first.release()


# -- two alerts processes --------------------------------------------------------------------

TITLES = '    title_en: "{severity} {value} {device} {area}"\n    title_km: "{value}"\n'


def on_other_partitions(prefix: str) -> tuple[str, str]:
    """A gauge and a rain gauge whose readings land on different partitions (murmur2)."""

    def partition(device: str) -> int:
        return (murmur2(device.encode()) & 0x7FFFFFFF) % PARTITIONS

    gauge = f"{prefix}gauge"
    for i in range(100):
        rain = f"{prefix}rain-{i}"
        if partition(rain) != partition(gauge):
            return gauge, rain
    raise AssertionError("unreachable: 100 ids on one partition")


@dataclass
class Pair:
    """Two alerts processes of one group, their rule and devices."""

    ns: Namespace
    publisher: Publisher
    db: asyncpg.Connection
    procs: list[ServiceProcess]
    rule_id: str
    gauge: str
    rain: str
    t0: datetime
    sent: int = 0

    @property
    def group(self) -> str:
        return f"alerts-{self.ns.suffix}"

    async def role(self, proc: ServiceProcess) -> str:
        """leader, standby, or down, as the process itself reports it."""
        status, body = await asyncio.to_thread(proc.http, "/readyz")
        gauge = await asyncio.to_thread(proc.metric, "citywatch_alerts_leader")
        if status == 200 and gauge == 1.0 and body["checks"]["leader"] is True:
            return "leader"
        # A standby has asked for the lock (so the database answered) and been refused; a
        # process still starting also says `leader: false`, but not `database: true`.
        checks = body["checks"] if status == 503 else {}
        if gauge == 0.0 and checks.get("leader") is False and checks.get("database") is True:
            return "standby"
        return "down" if status == 0 else f"unsettled ({status}, {gauge})"

    async def leader(self, alive: list[ServiceProcess], timeout: float) -> ServiceProcess:
        """Wait until exactly one of `alive` leads and the others stand by; return it."""
        found: list[ServiceProcess] = []

        async def settled() -> bool:
            roles = [await self.role(p) for p in alive]
            found[:] = [p for p, r in zip(alive, roles, strict=True) if r == "leader"]
            return sorted(roles) == ["leader"] + ["standby"] * (len(alive) - 1)

        await wait_until(settled, timeout=timeout, what="one leader, the others standby")
        return found[0]

    async def group_members(self) -> int:
        admin = AIOKafkaAdminClient(**client_options(self.ns.settings, KAFKA_ADMIN))
        await admin.start()
        try:
            [resp] = await admin.describe_consumer_groups([self.group])
            [described] = resp.to_object()["groups"]
            return len(described["members"])
        finally:
            await admin.close()

    async def publish(self, points: list[tuple[str, float, dict[str, float]]]) -> None:
        infos = []
        for device, minute, metrics in points:
            at = self.t0 + timedelta(minutes=minute)
            body = {"time": at.isoformat(), "metrics": metrics}
            infos.append(
                self.publisher.publish_raw(
                    f"{self.ns.prefix}/flood/{device}/up", json.dumps(body).encode()
                )
            )
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 10)
        self.sent += len(points)

        async def evaluated() -> bool:
            # Every reading is on the topic and the group committed past all of them: the
            # service commits only after the batch's transaction.
            end = await self.ns.end_offsets(self.ns.readings_topic)
            return (
                end >= self.sent
                and await self.ns.committed(self.group, self.ns.readings_topic) == end
            )

        await wait_until(evaluated, timeout=TAKEOVER_S, what="the leader evaluated every reading")

    def episode(self, start: float) -> list[tuple[str, float, dict[str, float]]]:
        """Heavy rain on one partition while the river rises on another: the rule fires."""
        g, r = self.gauge, self.rain
        return [
            (g, start, {"water_level_m": 1.0}),
            (g, start + 10, {"water_level_m": 1.0}),
            (g, start + 20, {"water_level_m": 1.0}),
            # Two readings of each condition: persistence (rules.py `confirm`) opens on the
            # area's second reading with both met, whichever partition is read first. The
            # rise is measured over 30 minutes (rules.Condition).
            (r, start + 25, {"rain_mm_h": 45.0}),
            (r, start + 27, {"rain_mm_h": 45.0}),
            (g, start + 30, {"water_level_m": 1.1}),
            (g, start + 35, {"water_level_m": 1.15}),
        ]

    def calm(self, start: float) -> list[tuple[str, float, dict[str, float]]]:
        """No rain and a level river for an hour: the alert resolves."""
        return [(self.rain, start + 40 + 10 * i, {"rain_mm_h": 0.0}) for i in range(7)] + [
            (self.gauge, start + 41 + 10 * i, {"water_level_m": 1.15}) for i in range(7)
        ]

    async def transitions(self) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            "SELECT e.alert_id, e.state FROM alert_events e JOIN alerts a USING (alert_id)"
            " WHERE a.rule_id = $1 ORDER BY e.event_id",
            self.rule_id,
        )
        return [(str(r["alert_id"]), r["state"]) for r in rows]

    async def published(self, expected: list[str]) -> list[dict[str, Any]]:
        """The rule's distinct events on the alerts topic (by event_id, first copy), once
        the outbox has caught up. The outbox is at least once: a leader SIGKILLed between
        publishing an event and marking it published leaves it for the next leader to
        publish again; consumers key on event_id (delivery does)."""
        got: list[dict[str, Any]] = []

        async def caught_up() -> bool:
            seen: set[Any] = set()
            got.clear()
            for e in await events_on_topic(self.ns, lambda e: e["rule_id"] == self.rule_id):
                if e["event_id"] not in seen:
                    seen.add(e["event_id"])
                    got.append(e)
            return len(got) >= len(expected)

        await wait_until(caught_up, timeout=30, what=f"{expected} on the alerts topic")
        return got


@pytest.fixture
async def pair(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
    tmp_path: Path,
) -> Pair:
    rule_id = f"storm-{ns.suffix}"
    area = f"area-{ns.suffix}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"rules:\n  - id: {rule_id}\n    type: combined\n    conditions:\n"
        "      - {kind: flood, metric: rain_mm_h, above: 30}\n"
        "      - {kind: flood, metric: water_level_m, rising_per_hour: 0.2}\n"
        f"    window: 1h\n    severity: warning\n{TITLES}",
        "utf-8",
    )
    gauge, rain = on_other_partitions(ns.device_prefix)
    await dbcon.executemany(
        "INSERT INTO devices (device_id, kind, area) VALUES ($1, 'flood', $2)"
        " ON CONFLICT (device_id) DO UPDATE SET area = EXCLUDED.area",
        [(gauge, area), (rain, area)],
    )
    await services.start("ingest")
    # Both alerts processes at once, with the same group id: neither is "first" by design.
    # Rules name areas by the city's ids: the test's area joins the shipped city.
    city = city_file_with(tmp_path, area)
    env = {
        **ns.env(CITYWATCH_ALERTS__RULES_FILE=str(rules), CITYWATCH_CITY_FILE=str(city)),
        "CITYWATCH_LOG_FORMAT": "text",
    }
    procs = [
        ServiceProcess("alerts", log_dir=services.log_dir, tag=ns.suffix, env=env).start()
        for _ in range(2)
    ]
    services.started += procs  # stopped (and checked to exit 0) after the test
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=30)
    return Pair(ns, publisher, dbcon, procs, rule_id, gauge, rain, t0)


@pytest.mark.stack
async def test_two_instances_one_leads_a_combined_rule_fires_once_and_a_standby_takes_over_a_killed_leader(  # noqa: E501
    pair: Pair,
) -> None:
    leader = await pair.leader(pair.procs, timeout=60)
    [standby] = [p for p in pair.procs if p is not leader]

    # The rain and the river level arrive on different partitions; one instance sees both.
    await pair.publish(pair.episode(0))
    assert await pair.group_members() == 1  # the leader joined; the standby did not
    first = await pair.transitions()
    assert [s for _a, s in first] == ["firing"]
    await pair.publish(pair.calm(0))
    closed = await pair.transitions()
    assert [s for _a, s in closed] == ["firing", "resolved"]
    assert len({a for a, _s in closed}) == 1
    assert await pair.leader(pair.procs, timeout=5) is leader  # the roles did not move

    leader.kill()  # SIGKILL: PostgreSQL frees the lock when the socket closes
    assert await pair.leader([standby], timeout=TAKEOVER_S) is standby

    # A later episode: one new alert, no second row for the first one.
    await pair.publish(pair.episode(180))
    await pair.publish(pair.calm(180))
    after = await pair.transitions()
    assert [s for _a, s in after] == ["firing", "resolved", "firing", "resolved"]
    assert after[:2] == closed and len({a for a, _s in after}) == 2
    assert (
        await pair.db.fetchval("SELECT count(*) FROM alerts WHERE rule_id = $1", pair.rule_id) == 2
    )
    expected = ["firing", "resolved", "firing", "resolved"]
    assert [e["transition"] for e in await pair.published(expected)] == expected


@pytest.mark.stack
async def test_a_leader_whose_lock_session_ends_steps_down_and_one_instance_leads_again(
    pair: Pair,
) -> None:
    leader = await pair.leader(pair.procs, timeout=60)
    await pair.publish(pair.episode(0))
    assert [s for _a, s in await pair.transitions()] == ["firing"]

    # End the leader's lock session from the database side (as a keepalive timeout or an
    # operator would): it must step down, and exactly one instance leads afterwards.
    key = lock_key(pair.group)
    classid, objid = lock_ids(key)
    pid = await pair.db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
        classid,
        objid,
    )
    assert pid is not None
    await pair.db.execute("SELECT pg_terminate_backend($1)", pid)

    async def stepped_down() -> bool:
        lost = await asyncio.to_thread(leader.metric, "citywatch_alerts_leadership_lost_total")
        return lost == 1.0

    await wait_until(stepped_down, timeout=15, what="the old leader counted its lost term")
    await pair.leader(pair.procs, timeout=TAKEOVER_S)

    # The episode goes on under whichever instance leads now: it resolves, once.
    await pair.publish(pair.calm(0))
    assert await pair.group_members() == 1
    await pair.publish(pair.episode(180))
    after = await pair.transitions()
    assert [s for _a, s in after] == ["firing", "resolved", "firing"]
    assert len({a for a, _s in after}) == 2
    expected = ["firing", "resolved", "firing"]
    assert [e["transition"] for e in await pair.published(expected)] == expected
