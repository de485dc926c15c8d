"""The raw limit of each stage alone, measured with the same clients the services use.

Each function pushes `n` items through one component as fast as it takes them and returns
items per second, so the pipeline's rate can be read as a fraction of its slowest stage.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from schemas import Reading
from schemas.adapters import decode_native
from services.common import db, kafka
from services.common.mqtt_client import BufferedClient
from services.common.settings import KAFKA_ADMIN, Settings
from simulators import Fleet, Message, Publisher


def sample_messages(n: int, *, per_kind: int, prefix: str, id_prefix: str) -> list[Message]:
    fleet = Fleet(per_kind=per_kind, seed=11, prefix=prefix, id_prefix=id_prefix)
    stream = fleet.messages(datetime.now(UTC) - timedelta(hours=3), step_ms=1)
    return [next(stream) for _ in range(n)]


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
        username, password = settings.mqtt_login("citywatch-simulator")
        with Publisher(
            settings.mqtt_services_host,
            settings.mqtt_services_port,
            client_id=f"citywatch-{prefix}-pub",
            username=username,
            password=password,
        ) as pub:
            start = time.monotonic()
            pub.run(iter(msgs))
            done.wait(60)
            elapsed = time.monotonic() - start
    finally:
        sub.disconnect()
        sub.loop_stop()
    return got / elapsed


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
