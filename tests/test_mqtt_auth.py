"""Credentials and topic ACLs, proven against a real broker with authentication on.

This module runs its own broker, once as Mosquitto and once as Apache ActiveMQ Artemis
(started by the stack's own components, with the configuration `citywatch stack up` writes:
no anonymous login, the registry's password and ACL files), on free ports, so it can reload
that broker and count on its pid without touching the shared test broker. Kafka and
PostgreSQL are the test stack's.

Devices are provisioned with the real CLI (`python -m services.cli devices provision`),
which prints the password once and reloads the broker; each test reads what it needs at
the source: CONNACK reason codes, what an ingest-account subscriber receives, records on
the test's rejected topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from schemas import RejectedRecord
from schemas.device import DeviceProfile
from services.common.settings import Settings, load_settings
from services.registry import store
from services.stack import Mosquitto
from services.stack.components import mqtt_broker
from tests.harness import (
    REPO,
    Namespace,
    Services,
    free_port,
    share_stack_logins,
    wait_until,
)

pytestmark = pytest.mark.stack


@dataclass
class Broker:
    """The module's own broker and the settings that reach it."""

    settings: Settings
    part: Mosquitto
    env: dict[str, str]
    prefix: str  # device ids of this module start with it

    @property
    def kind(self) -> str:  # mosquitto or artemis
        return self.settings.mqtt_broker

    @property
    def port(self) -> int:  # the device listener
        return self.settings.mqtt_port

    @property
    def services_port(self) -> int:  # the services listener
        return self.settings.mqtt_services_port

    def log_lines(self) -> list[str]:
        """What the broker logged (connections at `notice`)."""
        return self.part.log_file.read_text().splitlines()

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`citywatch devices ARGS`, which must succeed."""
        return await self.citywatch("devices", *args)

    async def citywatch(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *args,
            cwd=REPO,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())

    async def provision(self, device_id: str) -> str:
        """Provision through the CLI; the password is in what it prints, once."""
        done = await self.cli("provision", device_id)
        found = re.search(r"^\s*password:\s+(\S+)$", done.stdout, re.MULTILINE)
        assert found, done.stdout
        return found.group(1)


@pytest.fixture(scope="module", params=["mosquitto", "artemis"])
def broker(migrated: Settings, request: pytest.FixtureRequest) -> Iterator[Broker]:
    suffix = uuid.uuid4().hex[:8]
    # Under the test state folder, which the `mosquitto` user can traverse when we are root.
    state = migrated.state_dir / f"auth-{suffix}"
    env = {
        **os.environ,
        "CITYWATCH_STATE_DIR": str(state),
        "CITYWATCH_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "CITYWATCH_MQTT_SERVICES_URL": f"mqtt://127.0.0.1:{free_port()}",
        "CITYWATCH_LOG_FORMAT": "text",
        "CITYWATCH_MQTT_BROKER": request.param,
    }
    urls = {
        "mqtt_url": env["CITYWATCH_MQTT_URL"],
        "mqtt_services_url": env["CITYWATCH_MQTT_SERVICES_URL"],
        "mqtt_broker": request.param,
    }
    share_stack_logins(migrated, state)  # the same PostgreSQL and Kafka as the stack's
    first = load_settings(state_dir=state, **urls)
    part = mqtt_broker(first)
    part.up()
    # Read again: `up` generated the service accounts into the new state folder.
    settings = load_settings(state_dir=state, **urls)
    yield Broker(settings, mqtt_broker(settings), env, prefix=f"a{suffix}-")
    part.down()

    async def forget() -> None:
        con = await asyncpg.connect(settings.database_dsn)
        try:
            await con.execute("DELETE FROM devices WHERE device_id LIKE $1", f"a{suffix}-%")
        finally:
            await con.close()

    asyncio.run(forget())
    shutil.rmtree(state, ignore_errors=True)


@dataclass
class Client:
    """A paho MQTT v5 client: how the broker answered CONNECT, and what it delivered."""

    client: mqtt.Client
    connack: ReasonCode | None = None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def refused(self) -> bool:
        assert self.connack is not None
        return bool(self.connack.is_failure)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)  # PUBACK: the broker has handled it (or refused it)

    def subscribe(self, *filters: str) -> None:
        granted = threading.Event()
        self.client.on_subscribe = lambda *_a: granted.set()
        self.client.subscribe([(f, 1) for f in filters])
        assert granted.wait(10), "no SUBACK"

    async def wait_for(self, payload: bytes, timeout: float = 10) -> None:
        def arrived() -> bool:
            with self.cond:
                return self.cond.wait_for(
                    lambda: any(p == payload for _, p in self.received), timeout
                )

        assert await asyncio.to_thread(arrived), f"{payload!r} never arrived"


def connect(
    port: int,
    username: str | None,
    password: str | None,
    client_id: str | None = None,
    *,
    session_expiry_s: int | None = None,
) -> Client:
    """Connect and wait for CONNACK; a refused client is stopped (no reconnect loop). The
    client id is the username unless given, as a device's must be (Mosquitto replaces any
    other on the device listener, Artemis refuses it). With `session_expiry_s`, the session
    is persistent and taken back if the broker has it (clean start off), as the gateway's."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or username or f"citywatch-t-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    if username is not None:
        c.username_pw_set(username, password)
    answered = threading.Event()
    result: list[ReasonCode] = []

    def on_connect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        result.append(rc)
        answered.set()

    c.on_connect = on_connect
    client = Client(c)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with client.cond:
            client.received.append((msg.topic, msg.payload))
            client.cond.notify_all()

    c.on_message = on_message
    properties, clean_start = None, mqtt.MQTT_CLEAN_START_FIRST_ONLY  # paho's default
    if session_expiry_s is not None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
        clean_start = False
    c.connect("127.0.0.1", port, keepalive=30, clean_start=clean_start, properties=properties)
    c.loop_start()
    if not answered.wait(10):
        c.loop_stop()
        raise AssertionError("no CONNACK within 10 s")
    client.connack = result[0]
    if client.refused:
        c.loop_stop()
    return client


def close(*clients: Client) -> None:
    for cl in clients:
        cl.client.disconnect()
        cl.client.loop_stop()


async def register(broker: Broker, *devices: tuple[str, str]) -> None:
    con = await asyncpg.connect(broker.settings.database_dsn)
    try:
        await store.upsert_devices(
            con, [DeviceProfile.model_validate({"device_id": d, "kind": k}) for d, k in devices]
        )
    finally:
        await con.close()


def reading() -> bytes:
    return json.dumps({"time": datetime.now(UTC).isoformat(), "metrics": {"ph": 7.1}}).encode()


# How each broker answers a CONNECT whose login it refuses (MQTT 5 reason 0x87 or 0x86).
REFUSED_LOGIN = {"mosquitto": "Not authorized", "artemis": "Bad user name or password"}


# -- the guarantees ----------------------------------------------------------------------------


async def test_device_cannot_publish_under_another_device_id(broker: Broker) -> None:
    mine, theirs = f"{broker.prefix}own-1", f"{broker.prefix}other-1"
    await register(broker, (mine, "water"), (theirs, "water"))
    password = await broker.provision(mine)
    ingest = await asyncio.to_thread(
        connect, broker.services_port, *broker.settings.mqtt_login("citywatch-ingest")
    )
    device = await asyncio.to_thread(connect, broker.port, mine, password, mine)
    try:
        assert not ingest.refused and not device.refused
        own, forged = f"citywatch/water/{mine}/up", f"citywatch/water/{theirs}/up"
        await asyncio.to_thread(ingest.subscribe, own, forged)

        await asyncio.to_thread(device.publish, own, b"own")
        await asyncio.to_thread(device.publish, forged, b"forged")
        # Same connection, same subscriber, QoS 1: delivered in order. Once the sentinel
        # published after the forged message is here, the forged one would be too.
        await asyncio.to_thread(device.publish, own, b"sentinel")
        await ingest.wait_for(b"sentinel")
        with ingest.cond:
            got = list(ingest.received)
        assert got == [(own, b"own"), (own, b"sentinel")]
    finally:
        close(ingest, device)


async def test_wrong_password_unknown_user_and_anonymous_are_refused(broker: Broker) -> None:
    device = f"{broker.prefix}pw-1"
    await register(broker, (device, "air"))
    password = await broker.provision(device)
    for username, secret in (
        (device, password + "x"),  # wrong password
        (device, ""),
        (f"{broker.prefix}nobody", password),  # not a device nor an account
        ("citywatch-ingest", password),  # another account's name, this device's password
        (None, None),  # anonymous
    ):
        refused = await asyncio.to_thread(connect, broker.port, username, secret)
        assert refused.refused
        assert refused.connack.getName() == REFUSED_LOGIN[broker.kind], (username, refused.connack)
    ok = await asyncio.to_thread(connect, broker.port, device, password)
    assert not ok.refused
    close(ok)


async def test_device_provisioned_while_the_broker_runs_logs_in_without_a_restart(
    broker: Broker,
) -> None:
    pid = broker.part.pid()
    assert pid is not None
    device = f"{broker.prefix}late-1"
    await register(broker, (device, "flood"))
    before = await asyncio.to_thread(connect, broker.port, device, "no-password-yet")
    assert before.refused

    password = await broker.provision(device)  # regenerates the files and sends SIGHUP

    async def logs_in() -> bool:
        attempt = await asyncio.to_thread(connect, broker.port, device, password)
        close(attempt)
        return not attempt.refused

    await wait_until(logs_in, timeout=10, what="the new device's login after the reload")
    assert broker.part.pid() == pid  # reloaded, not restarted

    # Rotating credentials: provisioning again retires the old password.
    newer = await broker.provision(device)

    async def old_refused() -> bool:
        attempt = await asyncio.to_thread(connect, broker.port, device, password)
        close(attempt)
        return attempt.refused

    await wait_until(old_refused, timeout=10, what="the old password refused after rotation")
    assert not (await asyncio.to_thread(connect, broker.port, device, newer)).refused
    assert broker.part.pid() == pid


@pytest.fixture
async def gateway_env(broker: Broker, ns: Namespace) -> AsyncIterator[dict[str, str]]:
    """An ingest gateway's environment: this module's broker, production's reject policy."""
    yield {
        "CITYWATCH_MQTT_URL": broker.env["CITYWATCH_MQTT_URL"],
        "CITYWATCH_MQTT_SERVICES_URL": broker.env["CITYWATCH_MQTT_SERVICES_URL"],
        "CITYWATCH_STATE_DIR": broker.env["CITYWATCH_STATE_DIR"],
        "CITYWATCH_INGEST__UNKNOWN_DEVICES": "reject",
        "CITYWATCH_INGEST__FILTERS": json.dumps([f"$share/g{ns.suffix}/citywatch/+/+/up"]),
    }


async def test_disabled_device_loses_its_login_and_its_readings_are_rejected(
    broker: Broker, ns: Namespace, services: Services, gateway_env: dict[str, str]
) -> None:
    disabled, active = f"{broker.prefix}{ns.suffix}-off", f"{broker.prefix}{ns.suffix}-on"
    await register(broker, (disabled, "water"), (active, "water"))
    password = await broker.provision(disabled)
    await broker.cli("disable", disabled)

    async def login_refused() -> bool:
        attempt = await asyncio.to_thread(connect, broker.port, disabled, password)
        close(attempt)
        return attempt.refused

    await wait_until(login_refused, timeout=10, what="the disabled device's login refused")

    await services.start("ingest", **gateway_env)
    # Its readings may still arrive another way (a network server, a forged client): the
    # gateway refuses them too. The simulator account stands in for that path here.
    sim = await asyncio.to_thread(
        connect, broker.services_port, *broker.settings.mqtt_login("citywatch-simulator")
    )
    try:
        await asyncio.to_thread(sim.publish, f"citywatch/water/{disabled}/up", reading())
        await asyncio.to_thread(sim.publish, f"citywatch/water/{active}/up", reading())
    finally:
        close(sim)

    [raw] = await ns.read_topic(ns.rejected_topic, 1)
    rejected = RejectedRecord.model_validate_json(raw)
    assert rejected.reason == "device_disabled"
    assert rejected.topic == f"citywatch/water/{disabled}/up" and disabled in rejected.detail
    [accepted] = await ns.read_topic(ns.readings_topic, 1)
    assert json.loads(accepted)["device_id"] == active
    assert await ns.end_offsets(ns.rejected_topic) == 1


async def test_unknown_device_is_rejected_under_the_reject_policy(
    broker: Broker, ns: Namespace, services: Services, gateway_env: dict[str, str]
) -> None:
    known, stranger = f"{broker.prefix}{ns.suffix}-known", f"{broker.prefix}{ns.suffix}-who"
    await register(broker, (known, "air"))
    await services.start("ingest", **gateway_env)
    sim = await asyncio.to_thread(
        connect, broker.services_port, *broker.settings.mqtt_login("citywatch-simulator")
    )
    body = json.dumps({"metrics": {"pm25_ugm3": 12.0}}).encode()
    try:
        await asyncio.to_thread(sim.publish, f"citywatch/air/{stranger}/up", body)
        await asyncio.to_thread(sim.publish, f"citywatch/air/{known}/up", body)
    finally:
        close(sim)

    [raw] = await ns.read_topic(ns.rejected_topic, 1)
    rejected = RejectedRecord.model_validate_json(raw)
    assert rejected.reason == "unknown_device" and stranger in rejected.detail
    assert rejected.raw == body  # the payload travels with the reason: nothing is lost
    [accepted] = await ns.read_topic(ns.readings_topic, 1)
    assert json.loads(accepted)["device_id"] == known
    assert await ns.end_offsets(ns.rejected_topic) == 1


# -- client ids: a device cannot take over another client's session (issue 10, point 2) --------


async def test_each_listener_takes_only_its_own_logins(broker: Broker) -> None:
    """Devices log in on the device listener only; CityWatch's service accounts on the
    services listener only, so no device login ever reaches a service's client id."""
    device = f"{broker.prefix}listener-1"
    await register(broker, (device, "air"))
    password = await broker.provision(device)
    on_services = await asyncio.to_thread(connect, broker.services_port, device, password)
    assert on_services.refused
    assert on_services.connack.getName() == REFUSED_LOGIN[broker.kind]
    for account in ("citywatch-ingest", "citywatch-alerts", "citywatch-simulator"):
        login = broker.settings.mqtt_login(account)  # type: ignore[arg-type]
        on_devices = await asyncio.to_thread(connect, broker.port, *login)
        assert on_devices.refused, account
        on_own = await asyncio.to_thread(connect, broker.services_port, *login)
        assert not on_own.refused, account
        close(on_own)
    anonymous = await asyncio.to_thread(connect, broker.services_port, None, None)
    assert anonymous.refused


def logins(broker: Broker) -> list[tuple[str, str]]:
    """(client id, username) of every login the broker logged, in order."""
    found = (_LOGIN.search(line) for line in broker.log_lines())
    return [(m.group(1), m.group(2)) for m in found if m]


_LOGIN = re.compile(r"New client connected from \S+ as (\S+) \(.*u'([^']*)'\)\.$")


async def test_a_device_using_the_gateways_client_id_does_not_take_over_its_session(
    broker: Broker, ns: Namespace, services: Services, gateway_env: dict[str, str]
) -> None:
    intruder, other = f"{broker.prefix}{ns.suffix}-in", f"{broker.prefix}{ns.suffix}-ok"
    await register(broker, (intruder, "water"), (other, "water"))
    intruder_pw, other_pw = await broker.provision(intruder), await broker.provision(other)
    gateway_id = Settings().ingest.client_id  # the gateway's well-known id
    assert gateway_id == "citywatch-ingest-1"

    # This module's broker is its own, so the gateway can use its production client id.
    await services.start("ingest", **gateway_env, CITYWATCH_INGEST__CLIENT_ID=gateway_id)
    sender = await asyncio.to_thread(connect, broker.port, other, other_pw, other)
    assert not sender.refused
    own_topic = f"citywatch/water/{other}/up"
    await asyncio.to_thread(sender.publish, own_topic, reading())
    await ns.read_topic(ns.readings_topic, 1)  # the gateway is connected and reading
    gateway_logins = logins(broker).count((gateway_id, "citywatch-ingest"))
    assert gateway_logins >= 1 or broker.kind == "artemis"  # Artemis does not log logins

    # The intruder's own, valid login, claiming the gateway's client id, then the other
    # device's: each time Mosquitto names the connection after the intruder instead, and
    # Artemis refuses it.
    for n, claimed in enumerate((gateway_id, other), start=1):
        attempt = await asyncio.to_thread(connect, broker.port, intruder, intruder_pw, claimed)
        if broker.kind == "artemis":
            assert attempt.connack.getName() == REFUSED_LOGIN["artemis"], claimed
            continue
        assert not attempt.refused

        async def logged(n: int = n) -> bool:
            return [u for _, u in logins(broker)].count(intruder) == n

        await wait_until(logged, timeout=10, what="the broker logging the intruder's login")
        close(attempt)
    try:
        await asyncio.to_thread(sender.publish, own_topic, reading())
        assert len(await ns.read_topic(ns.readings_topic, 2)) == 2  # the gateway still reads
    finally:
        close(sender)
    if broker.kind == "artemis":
        return  # refused before any session was touched; Artemis does not log logins

    seen = logins(broker)
    assert [cid for cid, user in seen if user == intruder] == [intruder, intruder]
    # The gateway never had to log in again (a taken-over session's client reconnects),
    # nor did the other device.
    assert seen.count((gateway_id, "citywatch-ingest")) == gateway_logins
    assert seen.count((other, other)) == 1


async def login_after_reload(broker: Broker, username: str, password: str) -> Client:
    """A client logged in on the device listener once Mosquitto has reloaded its password
    file (on the SIGHUP the CLI sent, a moment after it returned)."""
    logged_in: list[Client] = []

    async def logs_in() -> bool:
        attempt = await asyncio.to_thread(connect, broker.port, username, password)
        if not attempt.refused:
            logged_in.append(attempt)
        return not attempt.refused

    await wait_until(logs_in, timeout=10, what=f"{username}'s login after the reload")
    return logged_in[0]


# -- registration reaches the gateway at once (issue 13, point 4) -------------------------------


async def test_device_added_and_provisioned_while_the_gateway_runs_has_its_first_reading_stored(
    broker: Broker,
    ns: Namespace,
    services: Services,
    gateway_env: dict[str, str],
    dbcon: asyncpg.Connection,
) -> None:
    """An engineer powers the device on right after `devices provision`: its first uplink is
    stored, although the gateway's registry snapshot (reloaded once an hour here) predates
    the device; a device nobody registered is still refused, with the advice to register it.
    """
    device, stranger = f"{broker.prefix}{ns.suffix}-new", f"{broker.prefix}{ns.suffix}-who"
    await services.start(
        "ingest", "processor", **gateway_env, CITYWATCH_INGEST__REGISTRY_REFRESH_S="3600"
    )
    await broker.cli("add", device, "--kind", "water")
    password = await broker.provision(device)

    logged_in = [await login_after_reload(broker, device, password)]
    sim = await asyncio.to_thread(
        connect, broker.services_port, *broker.settings.mqtt_login("citywatch-simulator")
    )
    first = json.dumps(
        {"time": datetime.now(UTC).isoformat(), "seq": 1, "metrics": {"ph": 7.3}}
    ).encode()
    try:
        await asyncio.to_thread(logged_in[0].publish, f"citywatch/water/{device}/up", first)
        await asyncio.to_thread(sim.publish, f"citywatch/water/{stranger}/up", reading())
    finally:
        close(logged_in[0], sim)

    async def stored() -> bool:
        return bool(
            await dbcon.fetchval("SELECT count(*) FROM readings WHERE device_id = $1", device)
        )

    await wait_until(stored, timeout=30, what="the first reading of the new device in PostgreSQL")
    row = await dbcon.fetchrow("SELECT metric, value FROM readings WHERE device_id = $1", device)
    assert (row["metric"], row["value"]) == ("ph", 7.3)
    [raw] = await ns.read_topic(ns.rejected_topic, 1)
    rejected = RejectedRecord.model_validate_json(raw)
    assert rejected.reason == "unknown_device"
    assert stranger in rejected.detail and "citywatch devices add" in rejected.detail
    # Only the stranger was refused: the new device's uplink went to the readings topic.
    assert await ns.end_offsets(ns.rejected_topic) == 1
    await dbcon.execute("DELETE FROM readings WHERE device_id = $1", device)


# -- network-server integrations (issue 13, point 5) ---------------------------------------------


def ttn_uplink(device: str, app: str, f_cnt: int, ph: float) -> bytes:
    at = datetime.now(UTC).isoformat()
    return json.dumps(
        {
            "end_device_ids": {"device_id": device, "application_ids": {"application_id": app}},
            "received_at": at,
            "uplink_message": {"f_cnt": f_cnt, "received_at": at, "decoded_payload": {"ph": ph}},
        }
    ).encode()


async def test_integration_account_publishes_its_applications_uplinks_and_no_other_devices(
    broker: Broker, ns: Namespace, services: Services, dbcon: asyncpg.Connection
) -> None:
    name, app, other_app = f"ttn-{ns.suffix}", ns.ttn_app, f"other-{ns.suffix}"
    device = f"{broker.prefix}{ns.suffix}-lora"
    await broker.cli("add", device, "--kind", "water", "--format", "ttn")
    # A device with its own login, sending native JSON: the broker lets the integration
    # publish under its application for any device id, so only the gateway can refuse this.
    native = f"{broker.prefix}{ns.suffix}-native"
    await broker.cli("add", native, "--kind", "water")
    spoof = f"v3/{app}@citywatch/devices/{native}/up"
    added = await broker.citywatch(
        "integrations", "add", "ttn", name, "--app", app, "--tenant", "citywatch"
    )
    found = re.search(r"^\s*password:\s+(\S+)$", added.stdout, re.MULTILINE)
    assert found, added.stdout
    username, password = f"citywatch-integration-{name}", found.group(1)
    own = f"v3/{app}@citywatch/devices/{device}/up"
    assert f"publish to: v3/{app}@citywatch/devices/+/up" in added.stdout
    listed = await broker.citywatch("integrations", "list")
    assert f"{name}  ttn  {username}  v3/{app}@citywatch/devices/+/up" in listed.stdout

    await services.start(
        "ingest",
        "processor",
        CITYWATCH_MQTT_URL=broker.env["CITYWATCH_MQTT_URL"],
        CITYWATCH_MQTT_SERVICES_URL=broker.env["CITYWATCH_MQTT_SERVICES_URL"],
        CITYWATCH_STATE_DIR=broker.env["CITYWATCH_STATE_DIR"],
        CITYWATCH_INGEST__UNKNOWN_DEVICES="reject",
    )
    # What the broker lets through, seen by a subscriber on the ingest account.
    watcher = await asyncio.to_thread(
        connect, broker.services_port, *broker.settings.mqtt_login("citywatch-ingest")
    )
    await asyncio.to_thread(
        watcher.subscribe, "+/+/+/up", "v3/+/devices/+/up", "application/+/device/+/event/up"
    )
    network_server = await login_after_reload(broker, username, password)
    # Mosquitto grants a SUBSCRIBE and applies the ACL to each delivery: with no `read`
    # right, nothing is ever delivered to the account, not even its own uplinks.
    await asyncio.to_thread(network_server.subscribe, "#", own)
    try:
        await asyncio.to_thread(network_server.publish, own, ttn_uplink(device, app, 1, 7.4))
        for forged in (
            f"v3/{other_app}@citywatch/devices/{device}/up",  # another application
            f"v3/{app}/devices/{device}/up",  # its application on another tenant layout
            f"citywatch/water/{device}/up",  # a device's own topic
            f"application/{ns.chirpstack_app}/device/0004a30b001c0530/event/up",
            f"v3/{app}@citywatch/devices/{device}/join",  # not an uplink
        ):
            await asyncio.to_thread(network_server.publish, forged, ttn_uplink(device, app, 2, 9.9))
        await asyncio.to_thread(network_server.publish, spoof, ttn_uplink(native, app, 1, 9.9))
        sentinel = ttn_uplink(device, app, 3, 7.5)
        await asyncio.to_thread(network_server.publish, own, sentinel)
        await watcher.wait_for(sentinel)
        with watcher.cond:
            through = [topic for topic, _ in watcher.received]
        # The broker queues a message's deliveries before it acks the PUBLISH, and the client
        # handles packets in order: had the sentinel been delivered back, it would be here.
        with network_server.cond:
            echoed = list(network_server.received)
    finally:
        close(network_server, watcher)
    assert through == [own, spoof, own]
    assert echoed == []

    async def stored() -> bool:
        n = await dbcon.fetchval("SELECT count(*) FROM readings WHERE device_id = $1", device)
        return bool(n == 2)

    await wait_until(stored, timeout=30, what="the integration's two uplinks in PostgreSQL")
    values = await dbcon.fetch(
        "SELECT value FROM readings WHERE device_id = $1 AND metric = 'ph' ORDER BY value", device
    )
    assert [r["value"] for r in values] == [7.4, 7.5]
    # Of what was forged, only the spoof reached the gateway, and it was refused.
    [raw] = await ns.read_topic(ns.rejected_topic, 1)
    rejected = RejectedRecord.model_validate_json(raw)
    assert (rejected.reason, rejected.topic) == ("format_mismatch", spoof)
    assert await ns.end_offsets(ns.rejected_topic) == 1
    assert await dbcon.fetchval("SELECT count(*) FROM readings WHERE device_id = $1", native) == 0
    await dbcon.execute("DELETE FROM readings WHERE device_id = $1", device)

    await broker.citywatch("integrations", "remove", name)

    async def login_refused() -> bool:
        attempt = await asyncio.to_thread(connect, broker.port, username, password)
        close(attempt)
        return attempt.refused

    await wait_until(login_refused, timeout=10, what="the removed integration's login refused")
