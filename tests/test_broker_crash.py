"""A broker crash and acknowledged readings (issue 10, point 3).

The two runs of the issue, scaled down: a fleet publishes QoS 1 at a steady rate while the
broker is SIGKILLed and started again, (1) with the gateway running, and (2) with the
gateway down from before the crash until after the broker is back, so that devices publish
into a restarted broker before the gateway has reconnected. Counted at the source: every
message of the fleet has its own reading time, so the rows say exactly which of the
messages the broker acknowledged (PUBACK) were stored, and that none was stored twice.

Both runs go against each broker the stack can run (docs/broker-durability.md):
- Apache ActiveMQ Artemis (`CITYWATCH_MQTT_BROKER=artemis`) journals and fsyncs a message
  before it acknowledges it, and queues for the gateway's session across its restart:
  nothing acknowledged is lost, in either run.
- Mosquitto 2.0 (the default) can promise less, and these tests pin it: nothing
  acknowledged after the crash is lost (the gateway's session and subscription come back
  from the persistence file and are queued for at once), and of what was acknowledged
  before it, at most what the broker queued since its last save, which it makes every
  `autosave_interval` changes. With the gateway running little waits in the broker, so run
  (1) loses few if any (0 to 6 here); neither run reaches zero on Mosquitto, which
  acknowledges before it saves.

The broker they kill is their own: configured as `citywatch stack up` configures the
stack's, on free ports with a state folder of its own (as in test_mqtt_auth.py), so the
stack's broker, which other tests share, is never touched. Kafka and PostgreSQL are the
test stack's.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.common.settings import Settings, load_settings
from services.stack.components import DEPLOY, mqtt_broker
from services.stack.process import pid_alive, wait_for
from simulators import Fleet, Message, Publisher, PublishStats
from tests.harness import Namespace, Services, share_stack_logins, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.slow]

COUNT = 6000  # messages: 12 s at RATE, about 33,000 rows
RATE = 500  # messages per second: what a shared 2-core CI machine sustains with the stack
# Mosquitto saves its state after this many changes (deploy/mosquitto/mosquitto.conf).
SAVE_EVERY = int(
    re.findall(
        r"^autosave_interval (\d+)$", (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(), re.M
    )[0]
)
# One pass of the broker's loop may take in a publisher's whole window before it saves.
PUBLISHER_WINDOW = 2000


def fixed_ports(count: int) -> list[int]:
    """Free ports below the kernel's ephemeral range, for the broker this module kills.

    While the broker is down the fleet reconnects in a tight loop, and a connect to a port
    in that range may be given the same port as its source: TCP connects the socket to
    itself and holds the port, so the restarted broker cannot bind it (seen with Artemis,
    which takes seconds to start). The kernel never picks a source port below the range."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    found: list[int] = []
    for port in random.sample(range(max(1024, low - 2000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise AssertionError(f"not {count} free ports below {low}")


@pytest.fixture(scope="module", params=["mosquitto", "artemis"])
def broker(migrated: Settings, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """This module's own broker, of each kind the stack can run; the settings that reach
    it (and its service accounts)."""
    state = migrated.state_dir / f"crash-{uuid.uuid4().hex[:8]}"
    devices, services = fixed_ports(2)
    urls = {
        "mqtt_url": f"mqtt://127.0.0.1:{devices}",
        "mqtt_services_url": f"mqtt://127.0.0.1:{services}",
        "mqtt_broker": request.param,
    }
    share_stack_logins(migrated, state)  # the same PostgreSQL and Kafka, password-only
    mqtt_broker(load_settings(state_dir=state, **urls)).up()
    settings = load_settings(state_dir=state, **urls)  # with the accounts `up` generated
    yield settings
    mqtt_broker(settings).down()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def fleet_publisher(broker: Settings) -> Iterator[Publisher]:
    """The simulated fleet's connection, on the simulator's account. It reconnects at once
    (the gateway waits a second): devices are back and publishing before the gateway, the
    order in which a lost or unqueued subscription loses what they publish."""
    username, password = broker.mqtt_login("citywatch-simulator")
    with Publisher(
        broker.mqtt_services_host,
        broker.mqtt_services_port,
        client_id=f"citywatch-sim-{uuid.uuid4().hex[:8]}",
        username=username,
        password=password,
        reconnect_delay_s=(0, 1),
    ) as pub:
        yield pub


def gateway_env(ns: Namespace, broker: Settings, *, shared: bool = False) -> dict[str, str]:
    """The module's broker (and its kind), and the gateway's subscription on this test's
    topics: by default plain, as the gateway's default filters; `shared` in the form
    several gateways use."""
    share = f"$share/crash-{ns.suffix}/" if shared else ""
    return {
        "CITYWATCH_MQTT_URL": broker.mqtt_url,
        "CITYWATCH_MQTT_SERVICES_URL": broker.mqtt_services,
        "CITYWATCH_MQTT_BROKER": broker.mqtt_broker,  # whether a resumed session resubscribes
        "CITYWATCH_STATE_DIR": str(broker.state_dir),
        "CITYWATCH_INGEST__FILTERS": json.dumps([f"{share}{ns.prefix}/+/+/up"]),
    }


def messages(ns: Namespace) -> list[Message]:
    """COUNT valid messages, each with its own reading time (1 ms apart)."""
    fleet = Fleet(per_kind=3, seed=3, prefix=ns.prefix, id_prefix=ns.device_prefix)
    stream = fleet.messages(datetime.now(UTC) - timedelta(hours=2), step_ms=1)
    return [next(stream) for _ in range(COUNT)]


class Publishing:
    """Publishes the messages at RATE in a background thread, keeping the fleet's figures."""

    def __init__(self, publisher: Publisher, msgs: list[Message], rate: float = RATE) -> None:
        self.publisher = publisher
        self.msgs = msgs
        self.rate = rate
        self.stats: PublishStats | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.stats = self.publisher.run(iter(self.msgs), rate=self.rate)

    def __enter__(self) -> Publishing:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(120)

    async def acked_more(self, count: int) -> None:
        """Wait until the broker has acknowledged `count` more publishes than now."""
        target = self.publisher.acked + count

        async def done() -> bool:
            return self.publisher.acked >= target

        await wait_until(done, timeout=60, what=f"{target} publishes acknowledged")

    async def finished(self) -> None:
        await asyncio.to_thread(self._thread.join, 120)
        assert self.stats is not None, "publisher did not finish"
        # Every publish was acknowledged in the end (paho sends again what the crash cut
        # off), so every message of the fleet is one the broker said it had.
        assert self.stats.acked == self.stats.sent == len(self.msgs), self.stats


async def lost_messages(ns: Namespace, db: asyncpg.Connection, msgs: list[Message]) -> list[int]:
    """The positions (in publishing order) of the messages with no rows, once every row the
    pipeline will store is stored: waits for all of them, and then for no more to come."""
    expected = sum(m.rows for m in msgs)

    async def complete() -> bool:
        return await ns.rows(db) >= expected

    try:
        await wait_until(complete, timeout=30, what=f"{expected} rows stored")
    except AssertionError:
        # Some are missing: wait until the count stops moving, then say which.
        last = -1

        async def settled() -> bool:
            nonlocal last
            now, last = last, await ns.rows(db)
            return now == last

        await wait_until(settled, timeout=60, what="rows to stop arriving", every=3)
    stored = {
        (r["device_id"], r["time"])
        for r in await db.fetch(
            "SELECT DISTINCT device_id, time FROM readings WHERE device_id LIKE $1",
            f"{ns.device_prefix}%",
        )
    }
    assert await ns.rows(db) <= expected  # nothing stored twice
    return [i for i, m in enumerate(msgs) if (m.device_id, reading_time(m)) not in stored]


def reading_time(msg: Message) -> datetime:
    return datetime.fromisoformat(json.loads(msg.payload)["time"])


def kill_broker(broker: Settings) -> None:
    """SIGKILL the module's broker: no save on the way out."""
    pid = mqtt_broker(broker).pid()
    assert pid is not None, "the module's broker is not running"
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(pid), 10)


async def crash_broker(broker: Settings, publisher: Publisher) -> int:
    """Kill the broker and start it again; returns how many publishes it had acknowledged
    when it died (paho reads every PUBACK the broker sent before it sees the close)."""
    await asyncio.to_thread(kill_broker, broker)

    async def cut_off() -> bool:
        return not publisher.connected

    await wait_until(cut_off, timeout=30, what="the fleet sees the broker gone")
    acked = publisher.acked
    await asyncio.to_thread(mqtt_broker(broker).up)
    return acked


def only_the_unsaved_lost(
    broker: Settings, run: str, lost: list[int], acked_before_crash: int
) -> None:
    """Artemis: nothing acknowledged is lost (it journals a message before its PUBACK).
    Mosquitto: nothing the broker acknowledged after the crash is lost, and of what it
    acknowledged before, at most what it had not saved yet. paho sees PUBACKs in publishing
    order, so the first `acked_before_crash` messages are those acknowledged before the
    broker died."""
    after = [i for i in lost if i >= acked_before_crash]
    print(
        f"{run} ({broker.mqtt_broker}): {len(lost)} of {COUNT} acknowledged messages lost, "
        f"{len(after)} of them acknowledged after the crash"
    )
    if broker.mqtt_broker == "artemis":
        assert not lost, f"{len(lost)} of {COUNT} acknowledged messages never stored: {lost[:20]}"
        return
    assert not after, (
        f"{len(after)} messages acknowledged after the crash never stored "
        f"({len(lost)} of {COUNT} in all)"
    )
    assert len(lost) <= SAVE_EVERY + PUBLISHER_WINDOW, (
        f"{len(lost)} of {COUNT} acknowledged messages never stored, more than the "
        f"{SAVE_EVERY} changes between two saves"
    )


async def test_broker_killed_under_load_loses_only_what_it_had_not_saved(
    ns: Namespace,
    services: Services,
    fleet_publisher: Publisher,
    dbcon: asyncpg.Connection,
    broker: Settings,
) -> None:
    """With the gateway running nothing waits long in the broker; what does (acknowledged,
    not yet written to the gateway, not yet saved) is lost, and nothing after the crash."""
    await services.start("ingest", "processor", **gateway_env(ns, broker))
    msgs = messages(ns)
    with Publishing(fleet_publisher, msgs) as fleet:
        await fleet.acked_more(COUNT // 3)
        acked_before_crash = await crash_broker(broker, fleet_publisher)
        await fleet.finished()
    lost = await lost_messages(ns, dbcon, msgs)
    only_the_unsaved_lost(broker, "broker killed under load", lost, acked_before_crash)


async def test_broker_killed_while_the_gateway_is_down_loses_only_what_it_had_not_saved(
    ns: Namespace,
    services: Services,
    fleet_publisher: Publisher,
    dbcon: asyncpg.Connection,
    broker: Settings,
) -> None:
    """The gateway's persistent session outlives a broker crash, and the broker queues for
    it from the moment it is back: what devices publish before the gateway reconnects is
    delivered to it then. Of what the broker queued before the crash, only what it had not
    saved yet may be lost (Mosquitto acknowledges before it saves; Artemis loses nothing)."""
    await gateway_down_across_a_crash(ns, services, fleet_publisher, dbcon, broker, shared=False)


@pytest.mark.parametrize("broker", ["artemis"], indirect=True)
async def test_broker_killed_while_a_shared_subscription_gateway_is_down_loses_nothing(
    ns: Namespace,
    services: Services,
    fleet_publisher: Publisher,
    dbcon: asyncpg.Connection,
    broker: Settings,
) -> None:
    """The same run with the gateway on a shared subscription (`$share/...`, how several
    gateways split the load): Artemis keeps it, and queues for it, across its crash.
    Mosquitto 2.0 does not save shared subscriptions at all (docs/broker-durability.md), so
    this run is Artemis's only."""
    await gateway_down_across_a_crash(ns, services, fleet_publisher, dbcon, broker, shared=True)


async def gateway_down_across_a_crash(
    ns: Namespace,
    services: Services,
    fleet_publisher: Publisher,
    dbcon: asyncpg.Connection,
    broker: Settings,
    *,
    shared: bool,
) -> None:
    """Run 2: the gateway SIGKILLed, the broker SIGKILLed and restarted while it is down,
    the gateway started again once devices have published into the restarted broker."""
    env = gateway_env(ns, broker, shared=shared)
    ingest, _processor = await services.start("ingest", "processor", **env)
    msgs = messages(ns)
    with Publishing(fleet_publisher, msgs) as fleet:
        await fleet.acked_more(COUNT // 4)
        ingest.kill()
        await fleet.acked_more(COUNT // 4)  # queued for the gateway's session
        acked_before_crash = await crash_broker(broker, fleet_publisher)
        await fleet.acked_more(COUNT // 4)  # published into the restarted broker, gateway down
        ingest.start()
        await fleet.finished()
    lost = await lost_messages(ns, dbcon, msgs)
    run = (
        "broker killed, shared-subscription gateway down"
        if shared
        else "broker killed, gateway down"
    )
    only_the_unsaved_lost(broker, run, lost, acked_before_crash)
