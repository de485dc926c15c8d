"""The raw limit of each stage alone, measured with the same clients the services use.

Each function pushes `n` items through one component as fast as it takes them and returns
items per second, so the pipeline's rate can be read as a fraction of its slowest stage.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from schemas import Reading
from schemas.adapters import decode_native
from services.bench.common import percentile
from services.common import db, kafka
from services.common.mqtt_client import BufferedClient
from services.common.settings import KAFKA_ADMIN, Settings
from services.ingest.mqtt_source import Inbound, MqttSource
from simulators import Fleet, Message, Publisher


def sample_messages(n: int, *, per_kind: int, prefix: str, id_prefix: str) -> list[Message]:
    fleet = Fleet(per_kind=per_kind, seed=11, prefix=prefix, id_prefix=id_prefix)
    stream = fleet.messages(datetime.now(UTC) - timedelta(hours=3), step_ms=1)
    return [next(stream) for _ in range(n)]


def _simulator(settings: Settings, prefix: str) -> Publisher:
    """A publisher on the services listener under the simulator's login (it may publish
    to any device's uplink topic)."""
    username, password = settings.mqtt_login("citywatch-simulator")
    return Publisher(
        settings.mqtt_services_host,
        settings.mqtt_services_port,
        client_id=f"citywatch-{prefix}-pub",
        username=username,
        password=password,
    )


def mqtt_pub_sub(settings: Settings, n: int, *, per_kind: int) -> float:
    """Mosquitto alone: QoS 1 publish -> QoS 1 subscriber, messages per second."""
    prefix = f"benchraw{uuid.uuid4().hex[:6]}"
    msgs = sample_messages(n, per_kind=per_kind, prefix=prefix, id_prefix="raw-")
    got = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(*_a: object) -> None:
        nonlocal got
        got += 1
        if got >= n:
            done.set()

    sub = BufferedClient(
        CallbackAPIVersion.VERSION2, client_id=f"citywatch-{prefix}-sub", protocol=mqtt.MQTTv5
    )
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.username_pw_set(*settings.mqtt_login("citywatch-ingest"))
    sub.connect(settings.mqtt_services_host, settings.mqtt_services_port)
    sub.loop_start()
    try:
        sub.subscribe(f"{prefix}/+/+/up", qos=1)  # what the ingest account may read
        subscribed.wait(10)
        with _simulator(settings, prefix) as pub:
            start = time.monotonic()
            pub.run(iter(msgs))
            done.wait(60)
            elapsed = time.monotonic() - start
    finally:
        sub.disconnect()
        sub.loop_stop()
    return got / elapsed


@dataclass(frozen=True)
class BrokerLatency:
    """One fixed-rate run of `mqtt_latency`: publish -> subscriber receive, in ms."""

    rate: float
    topics: int
    ack_delay_ms: float
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float


async def mqtt_latency(
    settings: Settings, *, rate: float, seconds: float, topics: int, ack_delay_ms: float
) -> BrokerLatency:
    """The broker alone, as the pipeline uses it: the simulator's publisher (QoS 1, one
    client) at `rate` msg/s over `topics` device topics, and the gateway's own MQTT client
    (`MqttSource`: MQTT v5, clean_start False, Receive Maximum, manual acks) acknowledging
    each message `ack_delay_ms` after it arrived (the gateway acks once Kafka has it).

    Why: the pipeline's publish -> stored latency mixes the broker with the gateway, Kafka
    and PostgreSQL on shared cores; this is the broker's part on its own. Each payload is
    the wall-clock time of its publish; the latency is the gateway's `received_at` minus it.
    """
    prefix = f"benchlat{uuid.uuid4().hex[:6]}"
    username, password = settings.mqtt_login("citywatch-ingest")
    source = MqttSource(
        host=settings.mqtt_services_host,
        port=settings.mqtt_services_port,
        client_id=f"citywatch-{prefix}-sub",
        filters=(f"{prefix}/+/+/up",),
        receive_maximum=settings.ingest.receive_maximum,
        session_expiry_s=0,  # nothing left on the broker afterwards
        broker=settings.mqtt_broker,  # as the gateway does
        username=username,
        password=password,
    )
    loop = asyncio.get_running_loop()
    latencies: list[float] = []

    ready = f"{prefix}/bench/ready/up"

    def take(msg: Inbound) -> None:
        if msg.topic != ready:  # a late copy of the probe below
            latencies.append(msg.received_at.timestamp() - float(msg.payload))
        if ack_delay_ms > 0:
            loop.call_later(ack_delay_ms / 1000, source.ack, msg)
        else:
            source.ack(msg)

    async def subscribed(pub: Publisher) -> None:
        """Until a first message comes through: the subscription is in place."""
        while True:
            pub.publish_raw(ready, b"0")
            try:
                source.ack(await asyncio.wait_for(source.get(), 0.5))
                return
            except TimeoutError:
                continue

    def stamped() -> Iterator[Message]:
        for i in itertools.count():
            device = f"d{i % topics}"
            yield Message(
                topic=f"{prefix}/bench/{device}/up",
                payload=f"{time.time():.6f}".encode(),
                valid=True,
                device_id=device,
            )

    source.start()
    try:
        await asyncio.wait_for(source.connected.wait(), 10)
        with _simulator(settings, prefix) as pub:
            await asyncio.wait_for(subscribed(pub), 10)
            run = asyncio.create_task(
                asyncio.to_thread(pub.run, stamped(), duration_s=seconds, rate=rate)
            )
            quiet_since = time.monotonic()
            while not run.done() or len(latencies) < run.result().sent:
                try:
                    take(await asyncio.wait_for(source.get(), 0.2))
                    quiet_since = time.monotonic()
                except TimeoutError:
                    if run.done() and time.monotonic() - quiet_since > 30:
                        break  # the rest never came: `received` says how many
            sent = (await run).sent
    finally:
        source.close()
    ms = [x * 1000 for x in latencies]
    return BrokerLatency(
        rate=rate,
        topics=topics,
        ack_delay_ms=ack_delay_ms,
        sent=sent,
        received=len(ms),
        p50_ms=percentile(ms, 0.5),
        p99_ms=percentile(ms, 0.99),
        max_ms=max(ms, default=float("nan")),
    )


def run_bench_broker(
    settings: Settings,
    *,
    rates: tuple[float, ...],
    seconds: float,
    topics: tuple[int, ...],
    ack_delays_ms: tuple[float, ...],
) -> int:
    """`citywatch bench broker`: `mqtt_latency` for each combination, as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"citywatch bench broker ({settings.mqtt_broker}, {seconds:.0f} s each)")
    for title in ("msg/s", "topics", "ack after ms", "received / sent", "p50 ms", "p99 ms"):
        table.add_column(title, justify="right")
    table.add_column("max ms", justify="right")
    for rate in rates:
        for n in topics:
            for delay in ack_delays_ms:
                r = asyncio.run(
                    mqtt_latency(settings, rate=rate, seconds=seconds, topics=n, ack_delay_ms=delay)
                )
                table.add_row(
                    f"{r.rate:,.0f}",
                    str(r.topics),
                    f"{r.ack_delay_ms:g}",
                    f"{r.received:,} / {r.sent:,}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    f"{r.max_ms:.1f}",
                )
    Console().print(table)
    return 0


async def kafka_produce(settings: Settings, n: int, *, topic: str, per_kind: int) -> float:
    """aiokafka alone: idempotent acks=all producer, pipelined, records per second."""
    readings = _readings(n, per_kind=per_kind, id_prefix="rawk-")
    async with kafka.producer(settings, account=KAFKA_ADMIN, client_id="citywatch-bench") as prod:
        start = time.monotonic()
        futures = [
            await prod.send(topic, key=r.device_id.encode(), value=r.to_kafka()) for r in readings
        ]
        await asyncio.gather(*futures)
        return n / (time.monotonic() - start)


async def db_bulk_insert(settings: Settings, n: int, *, per_kind: int, id_prefix: str) -> float:
    """asyncpg alone: the processor's bulk writer in batches of 2000, readings per second."""
    readings = _readings(n, per_kind=per_kind, id_prefix=id_prefix)
    con = await db.connect(settings.database_dsn)
    try:
        start = time.monotonic()
        for i in range(0, n, 2000):
            async with con.transaction():
                await db.store_readings(con, readings[i : i + 2000])
        return n / (time.monotonic() - start)
    finally:
        await con.close()


def _readings(n: int, *, per_kind: int, id_prefix: str) -> list[Reading]:
    out: list[Reading] = []
    now = datetime.now(UTC)
    for msg in sample_messages(n, per_kind=per_kind, prefix="citywatch", id_prefix=id_prefix):
        decoded = decode_native(msg.topic, msg.payload, now)
        assert isinstance(decoded, list)
        out.extend(decoded)
    return out
