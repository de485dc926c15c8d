"""Every rule type on the real stack: raises once, escalates, resolves, survives a restart of
the alerts service, and a replay changes nothing; the monsoon storm gives flood watch ->
warning -> danger in the expected areas, one alert per episode.

Readings go in over MQTT (ingest -> Kafka -> alerts). "Evaluated" means the alerts group's
committed offsets reached the readings topic's end: the service commits only after the
batch's transaction, so the database then holds everything the readings caused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from services.alerts.api import msg_type_for
from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN
from simulators import Message, Publisher
from simulators.faults import FaultRates
from simulators.run import ScenarioRun
from simulators.scenarios import load_scenario
from tests.harness import (
    Namespace,
    ServiceProcess,
    Services,
    city_file_with,
    publish_in_device_order,
    wait_until,
)

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[1]
SEVERITY_ORDER = ["advisory", "watch", "warning", "danger"]
Point = tuple[str, str, float, dict[str, float]]  # device, kind, minutes from t0, metrics


async def events_on_topic(
    ns: Namespace, keep: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Every record on the test's alerts topic up to its current end that `keep` accepts.

    The outbox is one table in a database other tests share: a service may also publish
    events other tests left unpublished, so each test picks its own."""
    consumer = AIOKafkaConsumer(
        **client_options(ns.settings, KAFKA_ADMIN), enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(ns.alerts_topic, p)
            for p in consumer.partitions_for_topic(ns.alerts_topic) or set()
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    out += [json.loads(m.value) for m in msgs]
        return sorted((e for e in out if keep(e)), key=lambda e: int(e["event_id"]))
    finally:
        await consumer.stop()


@dataclass
class Rig:
    """One test's services, rules file, clock and readings."""

    ns: Namespace
    services: Services
    publisher: Publisher
    db: asyncpg.Connection
    rules_path: Path
    t0: datetime
    alerts: ServiceProcess | None = None
    sent: int = 0  # readings published so far: each becomes one record on the readings topic

    async def start(self) -> None:
        city = city_file_with(self.rules_path.parent, f"area-{self.ns.suffix}")
        _ingest, self.alerts = await self.services.start(
            "ingest",
            "alerts",
            CITYWATCH_ALERTS__RULES_FILE=str(self.rules_path),
            CITYWATCH_CITY_FILE=str(city),
        )

    async def restart_alerts(self) -> None:
        assert self.alerts is not None
        assert self.alerts.stop() == 0
        self.alerts.start()
        await self.alerts.wait_ready()

    async def register(self, areas: dict[str, str]) -> None:
        """Put devices in the registry with their areas (as `citywatch devices add` does)."""
        await self.db.executemany(
            "INSERT INTO devices (device_id, kind, area) VALUES ($1, $2, $3) "
            "ON CONFLICT (device_id) DO UPDATE SET area = EXCLUDED.area",
            [(d, k, a) for d, (k, a) in ((d, v.split("@")) for d, v in areas.items())],
        )

    async def publish(self, points: list[Point]) -> None:
        """Publish the points, each device's in the order given (the rules judge reading
        time: a reading that reached Kafka after a later one is a replay to them)."""
        msgs = []
        for device, kind, minute, metrics in points:
            at = self.t0 + timedelta(minutes=minute)
            body = {"time": at.isoformat(), "metrics": metrics}
            topic = f"{self.ns.prefix}/{kind}/{device}/up"
            msgs.append(Message(topic, json.dumps(body).encode(), valid=True, device_id=device))
        await publish_in_device_order(self.ns, self.publisher, msgs)
        self.sent += len(points)
        await self.evaluated()

    async def evaluated(self) -> None:
        group = f"alerts-{self.ns.suffix}"

        async def caught_up() -> bool:
            # Every published reading is on the topic (the broker's PUBACK comes before the
            # gateway's produce) and the alerts group has committed past all of them.
            end = await self.ns.end_offsets(self.ns.readings_topic)
            return (
                end >= self.sent and await self.ns.committed(group, self.ns.readings_topic) == end
            )

        await wait_until(caught_up, timeout=60, what="alerts evaluated every reading")

    async def transitions(self, rule_id: str) -> list[tuple[str, str, str]]:
        rows = await self.db.fetch(
            "SELECT e.alert_id, e.state, e.severity FROM alert_events e JOIN alerts a "
            "USING (alert_id) WHERE a.rule_id = $1 ORDER BY e.event_id",
            rule_id,
        )
        return [(str(r["alert_id"]), r["state"], r["severity"]) for r in rows]


def records(msgs: list[Message]) -> int:
    """How many reading records the gateway produces for `msgs` (a list payload is several)."""
    count = 0
    for m in msgs:
        if m.valid:
            body = json.loads(m.payload)
            count += len(body) if isinstance(body, list) else 1
    return count


@pytest.fixture
async def rig(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
    tmp_path: Path,
) -> Rig:
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=30)
    return Rig(ns, services, publisher, dbcon, tmp_path / "rules.yaml", t0)


def series(
    device: str, kind: str, metric: str, values: list[float], start: float, step: float
) -> list[Point]:
    return [(device, kind, start + i * step, {metric: v}) for i, v in enumerate(values)]


def same_partition(prefix: str, partitions: int = 4) -> tuple[str, str]:
    """Two device ids whose readings share a Kafka partition (murmur2, as the producer)."""
    by_partition: dict[int, str] = {}
    for i in range(100):
        device = f"{prefix}dev-{i}"
        p = (murmur2(device.encode()) & 0x7FFFFFFF) % partitions
        if p in by_partition:
            return by_partition[p], device
        by_partition[p] = device
    raise AssertionError("unreachable: 100 ids over 4 partitions")


TITLES = '    title_en: "{severity} {value} {unit} {device} {area}"\n    title_km: "{value}"\n'


@dataclass
class Case:
    """One rule type: its rule, the readings that raise (and escalate) it, the readings that
    resolve it, and the transitions expected."""

    rule: str
    raise_points: list[Point]
    resolve_points: list[Point]
    expected: list[tuple[str, str]] | None  # (transition, severity); None: see check
    areas: dict[str, str]
    check: Callable[[list[tuple[str, str, str]]], None] | None = None


def cases(ns: Namespace) -> dict[str, Case]:
    p, area = ns.device_prefix, f"area-{ns.suffix}"
    quiet, busy = same_partition(p)
    aqi_hours = [5, 5, 40, 40, 150, 150, 300, 300, 300]
    aqi_up = [
        (f"{p}air", "air", float(h * 60 + m), {"pm25_ugm3": float(v), "pm10_ugm3": 10.0})
        for h, v in enumerate(aqi_hours)
        for m in (0, 20, 40)
    ]
    aqi_down = [
        (f"{p}air", "air", float((9 + h) * 60 + m), {"pm25_ugm3": 5.0, "pm10_ugm3": 10.0})
        for h in range(14)
        for m in (0, 20, 40)
    ]

    def aqi_check(ts: list[tuple[str, str, str]]) -> None:
        # PM2.5 climbing through the EPA categories: one alert that opens and escalates
        # stage by stage (USG advisory, unhealthy watch, very unhealthy warning, hazardous
        # danger; NowCast may pass a stage within one hour), up to danger.
        rising = [(s, v) for _a, s, v in ts if s in ("firing", "escalated")]
        assert rising[0][0] == "firing"
        assert all(s == "escalated" for s, _v in rising[1:])
        order = ["advisory", "watch", "warning", "danger"]
        stages = [order.index(v) for _s, v in rising]
        assert stages == sorted(set(stages)) and rising[-1][1] == "danger", rising
        assert ts[-1][1] == "resolved"
        assert all(s == "deescalated" for _a, s, _v in ts[len(rising) : -1])

    g = f"{p}gauge"
    return {
        "threshold": Case(
            "type: threshold\n    kind: flood\n    metric: water_level_m\n    threshold: 2.5\n"
            "    clear: 2.2\n    for: 10m\n    hold: 10m\n    severity: warning\n",
            series(g, "flood", "water_level_m", [1.0, 2.6, 2.7, 2.8, 3.0], 0, 5),
            series(g, "flood", "water_level_m", [2.4, 2.0, 1.9, 1.8], 25, 5),
            [("firing", "warning"), ("resolved", "warning")],
            {},
        ),
        "levels": Case(
            "type: levels\n    kind: flood\n    metric: water_level_m\n"
            f"    area_levels: {{{area}: {{watch: 1.2, warning: 1.5, danger: 1.8}}}}\n"
            "    clear_margin: 0.1\n    hold: 10m\n",
            # each stage is entered by two readings (persistence, issue 14)
            series(g, "flood", "water_level_m", [1.0, 1.25, 1.3, 1.55, 1.6, 1.85, 1.9], 0, 10),
            series(g, "flood", "water_level_m", [1.6, 1.6, 1.3, 1.3, 1.0, 1.0], 70, 10),
            [
                ("firing", "watch"),
                ("escalated", "warning"),
                ("escalated", "danger"),
                ("deescalated", "warning"),
                ("deescalated", "watch"),
                ("resolved", "watch"),
            ],
            {g: f"flood@{area}"},
        ),
        "rate": Case(
            "type: rate_of_change\n    kind: flood\n    metric: water_level_m\n"
            "    rate_per_hour: 0.3\n    clear_per_hour: 0.1\n    window: 30m\n"
            "    severity: watch\n",
            series(
                g,
                "flood",
                "water_level_m",
                [1.0] * 7 + [round(1.05 + 0.05 * i, 2) for i in range(8)],
                0,
                5,
            ),
            series(g, "flood", "water_level_m", [1.4] * 8, 75, 5),
            [("firing", "watch"), ("resolved", "watch")],
            {},
        ),
        "aqi": Case("type: aqi\n    averaging: nowcast\n", aqi_up, aqi_down, None, {}, aqi_check),
        "combined": Case(
            "type: combined\n    conditions:\n"
            "      - {kind: flood, metric: rain_mm_h, above: 30}\n"
            "      - {kind: flood, metric: water_level_m, rising_per_hour: 0.2}\n"
            "    window: 1h\n    severity: warning\n",
            [
                *series(g, "flood", "water_level_m", [1.0, 1.0, 1.0], 0, 10),
                # two readings of each: the area's second reading with both conditions met
                # confirms, whichever device's partition the alerts service reads first;
                # the rise is measured over 30 minutes (rules.Condition)
                (f"{p}rain", "flood", 25, {"rain_mm_h": 45.0}),
                (f"{p}rain", "flood", 27, {"rain_mm_h": 45.0}),
                (g, "flood", 30, {"water_level_m": 1.1}),
                (g, "flood", 35, {"water_level_m": 1.15}),
            ],
            [
                *series(f"{p}rain", "flood", "rain_mm_h", [0.0] * 7, 40, 10),
                *series(g, "flood", "water_level_m", [1.15] * 7, 41, 10),
            ],
            [("firing", "warning"), ("resolved", "warning")],
            {g: f"flood@{area}", f"{p}rain": f"flood@{area}"},
        ),
        "offline": Case(
            "type: offline\n    after: 30m\n    severity: advisory\n",
            [
                (quiet, "flood", 0, {"water_level_m": 1.0}),
                *series(busy, "flood", "water_level_m", [1.0] * 5, 0, 10),
            ],
            [(quiet, "flood", 50, {"water_level_m": 1.0})],
            [("firing", "advisory"), ("resolved", "advisory")],
            {},
        ),
        "stuck": Case(
            "type: stuck\n    kind: flood\n    metric: water_level_m\n    after: 1h\n"
            "    tolerance: 0.001\n    severity: advisory\n",
            series(g, "flood", "water_level_m", [1.0, 1.01] + [1.5] * 8, 0, 10),
            series(g, "flood", "water_level_m", [1.6], 100, 10),
            [("firing", "advisory"), ("resolved", "advisory")],
            {},
        ),
    }


@pytest.mark.parametrize(
    "rule_type", ["threshold", "levels", "rate", "aqi", "combined", "offline", "stuck"]
)
async def test_each_rule_type_raises_once_escalates_resolves_and_survives_a_restart(
    rig: Rig, rule_type: str
) -> None:
    case = cases(rig.ns)[rule_type]
    rule_id = f"{rule_type}-{rig.ns.suffix}"
    rig.rules_path.write_text(f"rules:\n  - id: {rule_id}\n    {case.rule}{TITLES}", "utf-8")
    await rig.register({d: v for d, v in case.areas.items()})
    await rig.start()

    await rig.publish(case.raise_points)
    raised = await rig.transitions(rule_id)
    assert raised and raised[0][1] == "firing"
    assert len({a for a, _s, _v in raised}) == 1  # one alert

    await rig.restart_alerts()  # state comes back from the database
    await rig.publish(case.resolve_points)
    done = await rig.transitions(rule_id)
    assert len({a for a, _s, _v in done}) == 1, done
    if case.expected is not None:
        assert [(s, v) for _a, s, v in done] == case.expected
    if case.check is not None:
        case.check(done)
    assert (
        await rig.db.fetchval("SELECT state FROM alerts WHERE rule_id = $1", rule_id) == "resolved"
    )

    # A replay of every reading changes nothing, and each transition is on Kafka once.
    await rig.publish(case.raise_points + case.resolve_points)
    assert await rig.transitions(rule_id) == done
    published = await events_on_topic(rig.ns, lambda e: e["rule_id"] == rule_id)
    assert [(e["transition"], e["severity"]) for e in published] == [(s, v) for _a, s, v in done]
    first = published[0]
    assert first["status"] == "Actual"
    assert first["rule_type"] == case.rule.split()[1]
    if case.areas:
        assert first["area"] == f"area-{rig.ns.suffix}"
    for e in published:
        if e["transition"] in ("escalated", "deescalated"):
            assert (
                e["previous_severity"] in SEVERITY_ORDER and e["previous_severity"] != e["severity"]
            )


async def test_a_bad_rules_file_keeps_the_last_good_rules_in_the_running_service(rig: Rig) -> None:
    rule_id = f"keep-{rig.ns.suffix}"
    good = (
        f"rules:\n  - id: {rule_id}\n    type: threshold\n    kind: flood\n"
        "    metric: water_level_m\n    threshold: 2.5\n    clear: 2.2\n"
        f"    severity: warning\n{TITLES}"
    )
    rig.rules_path.write_text(good, "utf-8")
    await rig.start()
    assert rig.alerts is not None
    rig.rules_path.write_text(good.replace("threshold: 2.5", "threshold: [oops"), "utf-8")

    def refused() -> bool:
        return "keeping the last good rules" in rig.alerts.log_path.read_text()  # type: ignore[union-attr]

    await wait_until(lambda: asyncio.to_thread(refused), timeout=20, what="bad rules refused")
    g = f"{rig.ns.device_prefix}gauge"
    # two readings over: one alone opens nothing (persistence, issue 14)
    await rig.publish(series(g, "flood", "water_level_m", [1.0, 2.6, 2.7], 0, 61))
    assert [(s, v) for _a, s, v in await rig.transitions(rule_id)] == [("firing", "warning")]


# -- the monsoon storm ---------------------------------------------------------------------


async def test_monsoon_storm_raises_flood_watch_warning_danger_in_order_one_alert_per_episode(
    rig: Rig,
) -> None:
    shipped = yaml.safe_load((REPO / "deploy/alerts/rules.yaml").read_text(encoding="utf-8"))
    [levels] = [r for r in shipped["rules"] if r["id"] == "flood-level"]
    rule_id = f"flood-level-{rig.ns.suffix}"
    rig.rules_path.write_text(
        yaml.safe_dump({"rules": [{**levels, "id": rule_id}]}, allow_unicode=True), "utf-8"
    )
    run = ScenarioRun(
        load_scenario("monsoon-storm"),
        devices=40,
        seed=3,
        prefix=rig.ns.prefix,
        id_prefix=rig.ns.device_prefix,
        faults=FaultRates(),  # the storm alone: faults have their own tests
    )
    table = run.device_table()
    await rig.register({d["device_id"]: f"{d['kind']}@{d['area']}" for d in table})
    await rig.start()
    msgs = list(run.messages())
    await publish_in_device_order(rig.ns, rig.publisher, msgs)
    rig.sent += records(msgs)
    await rig.evaluated()

    rows = await rig.db.fetch(
        "SELECT e.alert_id, a.device_id, a.area, e.state, e.severity FROM alert_events e "
        "JOIN alerts a USING (alert_id) WHERE a.rule_id = $1 ORDER BY e.event_id",
        rule_id,
    )
    # flood-level is one alert per area (per: area, issue 14): its events have no device,
    # and an area's gauges together raise one alert per episode (before: one per gauge)
    assert {r["device_id"] for r in rows} <= {None}
    by_area: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        by_area.setdefault(r["area"], []).append(r)
    expected = {f["area"]: f for f in run.expectations()["flood"]}
    checked = 0
    for area, exp in expected.items():
        if exp["gauges"]:
            events = by_area.get(area, [])
            highest = exp["highest_level"]
            if highest is None:
                assert events == [], area  # nothing outside the storm
                continue
            # Each episode is one alert: it opens once, escalates up in order, then comes down.
            episodes: dict[Any, list[asyncpg.Record]] = {}
            for e in events:
                episodes.setdefault(e["alert_id"], []).append(e)
            first = next(iter(episodes.values()))
            ups = [e["severity"] for e in first if e["state"] in ("firing", "escalated")]
            assert first[0]["state"] == "firing"
            levels = ["watch", "warning", "danger"]
            # a stage may be skipped when the gauges confirm two at once
            assert ups == sorted(set(ups), key=levels.index) and ups[-1] == highest, (area, ups)
            for episode in episodes.values():
                assert [e["state"] for e in episode].count("firing") == 1
            checked += 1
    assert checked >= 4
    assert {a for a, f in expected.items() if f["highest_level"] == "danger" and f["gauges"]}

    # A replay of the same hour (the storm's peak hour) raises nothing new.
    peak_start = run.start + timedelta(hours=2)
    hour = [
        m
        for m in msgs
        if m.sent_at is not None and peak_start <= m.sent_at < peak_start + timedelta(hours=1)
    ]
    assert hour
    before = await rig.db.fetchval(
        "SELECT count(*) FROM alert_events e JOIN alerts a USING (alert_id) WHERE a.rule_id = $1",
        rule_id,
    )
    infos = [rig.publisher.publish_raw(m.topic, m.payload) for m in hour]
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, 10)
    rig.sent += records(hour)
    await rig.evaluated()
    after = await rig.db.fetchval(
        "SELECT count(*) FROM alert_events e JOIN alerts a USING (alert_id) WHERE a.rule_id = $1",
        rule_id,
    )
    assert after == before


async def test_two_gauges_of_one_area_crossing_warning_then_danger_escalate_one_alert(
    rig: Rig,
) -> None:
    """The shipped flood-level rule (per area, corroborated): two gauges of one area rise
    through warning and danger a minute apart; exactly one alert opens and escalates, and
    its messages are an Alert and then an Update (the lifecycle of one CAP identifier)."""
    shipped = yaml.safe_load((REPO / "deploy/alerts/rules.yaml").read_text(encoding="utf-8"))
    [levels] = [r for r in shipped["rules"] if r["id"] == "flood-level"]
    rule_id = f"flood-level-{rig.ns.suffix}"
    area = f"area-{rig.ns.suffix}"  # the default levels: warning 2.5, danger 3.0
    rig.rules_path.write_text(
        yaml.safe_dump({"rules": [{**levels, "id": rule_id}]}, allow_unicode=True), "utf-8"
    )
    g1, g2 = f"{rig.ns.device_prefix}g1", f"{rig.ns.device_prefix}g2"
    await rig.register({g1: f"flood@{area}", g2: f"flood@{area}"})
    await rig.start()
    points = [
        *series(g1, "flood", "water_level_m", [1.0, 2.6, 2.7, 3.1, 3.2], 0, 5),
        *series(g2, "flood", "water_level_m", [1.0, 2.55, 2.75, 3.05, 3.15], 1, 5),
    ]
    # one at a time, in reading time: the gauges sit on different partitions, and the
    # order the service reads them in decides which gauge's reading confirms a stage
    for point in sorted(points, key=lambda p: p[2]):
        await rig.publish([point])
    alerts = await rig.db.fetch(
        "SELECT alert_id, device_id, area, severity FROM alerts WHERE rule_id = $1", rule_id
    )
    assert [(a["device_id"], a["area"], a["severity"]) for a in alerts] == [(None, area, "danger")]
    rows = await rig.db.fetch(
        "SELECT e.state, e.severity, e.previous_severity, e.trigger_at FROM alert_events e "
        "JOIN alerts a USING (alert_id) WHERE a.rule_id = $1 ORDER BY e.event_id",
        rule_id,
    )
    assert [(r["state"], r["severity"], r["previous_severity"]) for r in rows] == [
        ("firing", "warning", None),
        ("escalated", "danger", "warning"),
    ]
    # each stage opened on the first reading that crossed it, corroborated by the other gauge
    assert [r["trigger_at"] for r in rows] == [
        rig.t0 + timedelta(minutes=5),
        rig.t0 + timedelta(minutes=15),
    ]
    # the API's CAP messages of the one alert: an Alert, then an Update naming it
    assert [msg_type_for("firing", "Actual", seq, r["state"]) for seq, r in enumerate(rows)] == [
        "Alert",
        "Update",
    ]
