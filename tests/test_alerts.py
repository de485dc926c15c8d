"""The alerts service on the real stack: one alert per episode, across restarts and replays."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from lxml import etree

from schemas.device import DeviceProfile
from services.alerts import store
from services.alerts.model import ICT
from services.registry.store import upsert_devices
from simulators import Publisher
from tests.harness import Namespace, Services, wait_until
from tests.test_alert_rules_stack import events_on_topic

pytestmark = pytest.mark.stack

CAP = {"c": "urn:oasis:names:tc:emergency:cap:1.2"}


async def _publish_level(
    publisher: Publisher, ns: Namespace, device: str, at: datetime, metres: float
) -> None:
    """Publish one native water-level reading of `device` and wait for the broker's ack."""
    body = {"time": at.isoformat(), "metrics": {"water_level_m": metres}}
    info = publisher.publish_raw(f"{ns.prefix}/flood/{device}/up", json.dumps(body).encode())
    await asyncio.to_thread(info.wait_for_publish, 10)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: bytes = r.read()
        return body


RULE = "flood-level-warning"  # above 2.5 m, clears below 2.2 m
RULES = f"""\
rules:
  - id: {RULE}
    type: threshold
    kind: flood
    metric: water_level_m
    threshold: 2.5
    clear: 2.2
    severity: warning
    title_en: "Flood warning: river level {{value}} {{unit}} at gauge {{device}}"
    title_km: "ការព្រមានទឹកជំនន់៖ កម្ពស់ទឹកទន្លេ {{value}} {{unit}} នៅស្ថានីយ៍ {{device}}"
"""


async def test_flood_level_raises_one_alert_per_episode_across_restart_and_replay(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    # The processor too: the API's latest value is the device's newest stored reading.
    _ingest, _processor, alerts = await services.start(
        "ingest", "processor", "alerts", CITYWATCH_ALERTS__RULES_FILE=str(rules)
    )

    device = f"{ns.device_prefix}gauge-1"
    # Readings 61 minutes apart: farther than QARTOD max_gap_s, so the jumps this test makes
    # are judged on their own (the rate-of-change test would flag them suspect).
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=12)
    step = 0

    async def level(metres: float) -> None:
        """Publish one water level and wait until the alerts service has evaluated it."""
        nonlocal step
        at = t0 + timedelta(minutes=61 * step)
        step += 1
        await _publish_level(publisher, ns, device, at, metres)

        async def evaluated() -> bool:
            cursor = await dbcon.fetchval(
                "SELECT last_time FROM alert_cursors WHERE rule_id = $1 AND device_id = $2",
                RULE,
                device,
            )
            return bool(cursor == at)

        await wait_until(evaluated, timeout=30, what=f"level {metres} m at {at} evaluated")

    async def episodes() -> list[asyncpg.Record]:
        return await dbcon.fetch(
            "SELECT alert_id, state, value, last_value, trigger_value, trigger_at, title_en"
            " FROM alerts WHERE device_id = $1",
            device,
        )

    await level(1.0)
    assert await episodes() == []
    # Crosses 2.5. The rule persists (confirm: persist, min_readings 2, issue 14): one
    # reading over the level opens nothing, the second confirms it.
    await level(2.6)
    crossed_at = t0 + timedelta(minutes=61)
    assert await episodes() == []
    await level(2.8)  # the second reading over the level: one alert fires
    [fired] = await episodes()
    assert fired["state"] == "firing" and fired["value"] == 2.8
    # Its trigger is the reading that crossed the level, not the confirming one: the title
    # states 2.6 m and the time of that reading.
    assert (fired["trigger_value"], fired["trigger_at"]) == (2.6, crossed_at)
    assert "2.6 m" in fired["title_en"] and "2.8" not in fired["title_en"]
    await level(2.9)  # still above: no second alert
    assert len(await episodes()) == 1

    alerts.stop()  # a restart in the middle of the episode: state comes back from the database
    alerts.start()
    await alerts.wait_ready()
    await level(3.0)
    await level(2.4)  # between clear (2.2) and threshold: hysteresis keeps it open
    [still] = await episodes()
    assert still["alert_id"] == fired["alert_id"] and still["state"] == "firing"
    # The API gives both: the reading that crossed the level and the latest one.
    api: dict[str, Any] = {}

    async def latest() -> bool:
        status, body = await asyncio.to_thread(alerts.http, f"/alerts/{fired['alert_id']}")
        assert status == 200, body
        api.update(body["alert"])
        return bool(api["latest_value"] == 2.4)

    await wait_until(latest, timeout=30, what="the processor stored the 2.4 m reading")
    assert (api["trigger_value"], api["value"]) == (2.6, 2.8)
    assert datetime.fromisoformat(api["trigger_at"]) == crossed_at
    # The CAP message states the value that raised it, and that reading's time.
    cap = await asyncio.to_thread(
        _get, f"http://127.0.0.1:{alerts.port}/cap/{fired['alert_id']}.xml"
    )
    info = etree.fromstring(cap).find("c:info", CAP)
    assert info is not None
    params = {
        p.findtext("c:valueName", namespaces=CAP): p.findtext("c:value", namespaces=CAP)
        for p in info.findall("c:parameter", CAP)
    }
    assert params["CityWatch:value"] == "2.6"
    crossed_local = crossed_at.astimezone(ICT)
    assert f"{crossed_local:%H:%M}" in (info.findtext("c:description", namespaces=CAP) or "")
    await level(2.0)  # below clear: resolved, same identity
    [resolved] = await episodes()
    assert resolved["alert_id"] == fired["alert_id"] and resolved["state"] == "resolved"
    assert resolved["last_value"] == 2.0

    events = await dbcon.fetch(
        "SELECT state FROM alert_events WHERE alert_id = $1 ORDER BY event_id", fired["alert_id"]
    )
    assert [e["state"] for e in events] == ["firing", "resolved"]
    # The outbox table is shared with other tests' services: keep this alert's events.
    published = await events_on_topic(ns, lambda e: e["alert_id"] == str(fired["alert_id"]))
    assert [p["transition"] for p in published] == ["firing", "resolved"]
    # The message: today's fields plus area, previous_severity, status, rule_type, trigger.
    assert {
        "event_id", "alert_id", "transition", "value", "at", "rule_id", "device_id", "kind",
        "metric", "severity", "threshold", "title_en", "title_km",
        "area", "previous_severity", "status", "rule_type", "trigger_value", "trigger_at",
    } <= set(published[0])  # fmt: skip
    assert (published[0]["status"], published[0]["rule_type"]) == ("Actual", "threshold")
    assert (published[0]["trigger_value"], published[0]["value"]) == (2.6, 2.8)
    assert datetime.fromisoformat(published[0]["trigger_at"]) == crossed_at
    assert {p["alert_id"] for p in published} == {str(fired["alert_id"])}

    status, body = await asyncio.to_thread(alerts.http, "/alerts?state=resolved&limit=500")
    assert status == 200
    assert str(fired["alert_id"]) in {a["alert_id"] for a in body["alerts"]}

    # Replay everything: rewind the alerts group to the start and restart the service.
    alerts.stop()
    group = f"alerts-{ns.suffix}"
    await ns.rewind(group, ns.readings_topic)
    alerts.start()
    await alerts.wait_ready()
    end = await ns.end_offsets(ns.readings_topic)

    async def replayed() -> bool:
        return await ns.committed(group, ns.readings_topic) == end

    await wait_until(replayed, timeout=30, what="alerts group re-read the whole stream")
    assert [dict(r) for r in await episodes()] == [dict(resolved)]
    assert (
        await dbcon.fetchval(
            "SELECT count(*) FROM alert_events WHERE alert_id = $1", fired["alert_id"]
        )
        == 2
    )
    mine = await events_on_topic(ns, lambda e: e["alert_id"] == str(fired["alert_id"]))
    assert [e["transition"] for e in mine] == ["firing", "resolved"]


async def test_an_alerts_deployment_publishes_only_the_transitions_of_its_own_alerts(
    ns: Namespace, dbcon: asyncpg.Connection
) -> None:
    """Two alerts deployments on one database (a bench beside a demo): each outbox pump
    takes the unpublished transitions of the alerts its own group opened, never the
    other's, which would put them on the wrong topic and mark them published for good."""
    mine, theirs = f"alerts-{ns.suffix}", f"bench-{ns.suffix}"
    ids = {}
    for origin in (mine, theirs):
        alert_id = uuid.uuid4()
        ids[origin] = alert_id
        await dbcon.execute(
            """INSERT INTO alerts (alert_id, rule_id, device_id, kind, metric, severity, state,
                                   value, last_value, threshold, started_at, title_en, title_km,
                                   origin)
               VALUES ($1, 'flood-level', $2, 'flood', 'water_level_m', 'warning', 'firing',
                       2.7, 2.7, 2.5, now(), 'Flood warning', 'ការព្រមានទឹកជំនន់', $3)""",
            alert_id,
            f"{ns.device_prefix}{origin}",
            origin,
        )
        await dbcon.execute(
            "INSERT INTO alert_events (alert_id, state, value, at) "
            "VALUES ($1, 'firing', 2.7, now())",
            alert_id,
        )
    try:
        for owner, other in ((mine, theirs), (theirs, mine)):
            taken = {r["alert_id"] for r in await store.unpublished(dbcon, owner, limit=100_000)}
            assert ids[owner] in taken and ids[other] not in taken
    finally:
        await dbcon.execute(
            "UPDATE alert_events SET published_at = now() WHERE alert_id = ANY($1::uuid[])",
            list(ids.values()),
        )


async def test_a_simulated_devices_alert_is_an_exercise_and_a_real_devices_stays_actual(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """Issue 14: a demo can never page real staff. The registry's `simulated` flag makes a
    device's alerts CAP `Exercise` whatever the rule says, in the `alerts` table and in the
    CAP message; a device not registered as simulated raises `Actual` under the same rule."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    sim, real = f"{ns.device_prefix}sim-gauge", f"{ns.device_prefix}real-gauge"
    await upsert_devices(
        dbcon,
        [
            DeviceProfile(device_id=sim, kind="flood", simulated=True),
            DeviceProfile(device_id=real, kind="flood"),
        ],
    )
    _ingest, alerts = await services.start(
        "ingest", "alerts", CITYWATCH_ALERTS__RULES_FILE=str(rules)
    )
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    # Two readings each (the rule persists), in time order: a reading far behind its
    # partition's newest is stale and opens nothing. Ten minutes apart, inside the rules'
    # `clock_skew`: when both gauges share a partition, a reading an hour ahead of the
    # other's is held as clock-skewed until a second device confirms the jump, and opens
    # nothing (engine.py), which made this test depend on the partitioner.
    for i, metres in enumerate((2.7, 2.9)):
        at = t0 + timedelta(minutes=10 * i)
        for device in (sim, real):
            await _publish_level(publisher, ns, device, at, metres)

    async def both_fired() -> bool:
        n = await dbcon.fetchval(
            "SELECT count(*) FROM alerts WHERE device_id = ANY($1::text[])", [sim, real]
        )
        return bool(n == 2)

    await wait_until(both_fired, timeout=30, what="both gauges' alerts fired")
    rows = await dbcon.fetch(
        "SELECT device_id, alert_id, status FROM alerts WHERE device_id = ANY($1::text[])",
        [sim, real],
    )
    status = {r["device_id"]: r["status"] for r in rows}
    assert status == {sim: "Exercise", real: "Actual"}
    for r in rows:
        cap = await asyncio.to_thread(
            _get, f"http://127.0.0.1:{alerts.port}/cap/{r['alert_id']}.xml"
        )
        assert etree.fromstring(cap).findtext("c:status", namespaces=CAP) == status[r["device_id"]]


async def test_devices_of_a_live_partition_that_falls_silent_are_reported_offline_by_the_clock(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """Issue 14: for live data the wall clock advances the offline check. Every device of
    the test's readings topic falls silent after one reading, so no partition head moves;
    the alerts service's periodic check still reports each of them, `after` past its last
    reading in the wall clock's terms (head = max(reading head, wall clock - live_lag))."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "live_lag: 2s\nrules:\n  - id: silent\n    type: offline\n    after: 5s\n"
        "    severity: advisory\n    title_en: 'Device {device} offline'\n"
        "    title_km: 'ឧបករណ៍ {device} ផ្តាច់'\n",
        encoding="utf-8",
    )
    await services.start("ingest", "alerts", CITYWATCH_ALERTS__RULES_FILE=str(rules))
    devices = [f"{ns.device_prefix}gauge-{i}" for i in range(3)]
    sent = datetime.now(UTC).replace(microsecond=0)
    for device in devices:
        await _publish_level(publisher, ns, device, sent, 1.0)

    async def all_offline() -> bool:
        n = await dbcon.fetchval(
            "SELECT count(*) FROM alerts WHERE rule_id = 'silent' AND device_id = ANY($1)",
            devices,
        )
        return bool(n == len(devices))

    await wait_until(all_offline, timeout=60, what="every silent device reported offline")
    rows = await dbcon.fetch(
        "SELECT device_id, state, started_at, value FROM alerts "
        "WHERE rule_id = 'silent' AND device_id = ANY($1)",
        devices,
    )
    for r in rows:
        assert r["state"] == "firing"
        assert r["started_at"] - sent >= timedelta(seconds=5), r
        assert r["value"] >= 5 / 60  # minutes silent
