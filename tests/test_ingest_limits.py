"""Issue 10 at the gateway: no payload stops intake, the broker refuses what no device may
send, and one device's readings reach Kafka in the order it published them.

Real Mosquitto, Kafka and PostgreSQL; each test reads its answer at the source (records on
the test's topics, rows, the gateway's MQTT acks proven by a restart that redelivers
nothing). Tests that need a registered device with its own login, or the broker exactly as
`citywatch stack up` configures it, use the module broker of tests/test_mqtt_auth.py (its
own Mosquitto, started by the stack's `Mosquitto` component).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from paho.mqtt.reasoncodes import ReasonCode

from schemas import RejectedRecord
from schemas.device import DeviceProfile
from schemas.reading import MAX_DETAIL_CHARS
from services.common.kafka import MAX_RECORD_BYTES, client_options, ensure_topics
from services.common.settings import KAFKA_ADMIN
from services.ingest.gateway import DEAD_LETTER_EXCERPT_BYTES
from services.registry import store
from simulators import Publisher
from tests.harness import Namespace, Services, wait_until
from tests.test_mqtt_auth import (  # noqa: F401 - `broker` and `gateway_env` are fixtures
    Broker,
    broker,
    close,
    connect,
    gateway_env,
    register,
)
from tests.test_native_adapter import hostile_payload

pytestmark = pytest.mark.stack


def _reading(seq: int, at: datetime) -> bytes:
    return json.dumps({"time": at.isoformat(), "seq": seq, "metrics": {"ph": 7.0}}).encode()


async def _rows(db: asyncpg.Connection, device: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM readings WHERE device_id = $1", device))


async def test_hostile_payload_from_a_registered_device_is_rejected_capped_and_intake_moves_on(
    broker: Broker,  # noqa: F811
    ns: Namespace,
    services: Services,
    gateway_env: dict[str, str],  # noqa: F811
    dbcon: asyncpg.Connection,
) -> None:
    device = f"{broker.prefix}{ns.suffix}-hostile"
    await register(broker, (device, "water"))
    password = await broker.provision(device)
    ingest, _processor = await services.start("ingest", "processor", **gateway_env)

    hostile = hostile_payload()  # 256 KiB; quoted whole, its rejection was 1.3 MB
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    topic = f"citywatch/water/{device}/up"
    client = await asyncio.to_thread(connect, broker.port, device, password)
    try:
        await asyncio.to_thread(client.publish, topic, hostile)
        for seq in range(5):
            await asyncio.to_thread(
                client.publish, topic, _reading(seq, start + timedelta(minutes=seq))
            )
    finally:
        close(client)

    [raw] = await ns.read_topic(ns.rejected_topic, 1)
    assert len(raw) < MAX_RECORD_BYTES
    record = RejectedRecord.model_validate_json(raw)
    assert record.reason == "unknown_metric" and record.topic == topic
    assert len(record.detail) <= MAX_DETAIL_CHARS
    assert record.raw == hostile and record.raw_size == len(hostile)
    assert record.raw_sha256 == hashlib.sha256(hostile).hexdigest()

    async def stored() -> bool:
        return await _rows(dbcon, device) == 5

    await wait_until(stored, timeout=30, what="the 5 valid readings after the hostile one")

    async def all_acked() -> bool:
        return ingest.metric("citywatch_ingest_acked_total") == 6

    await wait_until(all_acked, timeout=20, what="all 6 messages acked to MQTT")
    # Acked at the broker: a new gateway on the same session is handed nothing again.
    assert ingest.stop() == 0
    await services.start("ingest", **gateway_env)
    client = await asyncio.to_thread(connect, broker.port, device, password)
    try:
        await asyncio.to_thread(client.publish, topic, _reading(5, start + timedelta(minutes=5)))
    finally:
        close(client)

    async def sentinel_stored() -> bool:
        return await _rows(dbcon, device) == 6

    await wait_until(sentinel_stored, timeout=30, what="the sentinel reading")
    assert await ns.end_offsets(ns.readings_topic) == 6
    assert await ns.end_offsets(ns.rejected_topic) == 1


async def test_record_the_broker_refuses_is_dead_lettered_and_later_readings_flow(
    ns: Namespace, services: Services, publisher: Publisher
) -> None:
    # A rejected topic that takes records of at most 64 KiB: the broker itself refuses the
    # full rejection (MESSAGE_TOO_LARGE, which no retry can change).
    small = f"test.{ns.suffix}.rejected-small"
    admin = AIOKafkaAdminClient(**client_options(ns.settings, KAFKA_ADMIN))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(small, 1, 1, topic_configs={"max.message.bytes": str(64 * 1024)})]
        )
    finally:
        await admin.close()
    await ensure_topics(ns.settings, {small: 1})  # waits for its leader
    (ingest,) = await services.start("ingest", CITYWATCH_TOPICS__REJECTED=small)

    device = f"{ns.device_prefix}refused"
    topic = f"{ns.prefix}/water/{device}/up"
    payload = b"not json " * 20_000  # 180 kB: its rejection is 240 kB of base64
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    infos = [publisher.publish_raw(topic, payload)]
    infos += [
        publisher.publish_raw(topic, _reading(seq, start + timedelta(minutes=seq)))
        for seq in range(3)
    ]
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, 10)

    [raw] = await ns.read_topic(small, 1)
    record = RejectedRecord.model_validate_json(raw)
    assert record.reason == "kafka_refused" and "MessageSizeTooLarge" in record.detail
    assert record.raw == payload[:DEAD_LETTER_EXCERPT_BYTES]
    assert record.raw_size == len(payload)
    assert record.raw_sha256 == hashlib.sha256(payload).hexdigest()
    readings = await ns.read_topic(ns.readings_topic, 3)
    assert [json.loads(r)["seq"] for r in readings] == [0, 1, 2]

    async def all_acked() -> bool:
        return ingest.metric("citywatch_ingest_acked_total") == 4

    await wait_until(all_acked, timeout=20, what="all 4 messages acked to MQTT")
    assert ingest.metric("citywatch_ingest_rejected_total", 'reason="kafka_refused"') == 1
    assert await ns.end_offsets(small) == 1


async def test_one_devices_readings_reach_kafka_in_publish_order_across_a_kafka_failure(
    ns: Namespace, services: Services, publisher: Publisher
) -> None:
    """The readings topic does not exist yet: every send fails (UNKNOWN_TOPIC_OR_PARTITION,
    retriable) until the test creates it, after several failed attempts."""
    late = f"test.{ns.suffix}.readings-late"
    (ingest,) = await services.start(
        "ingest", CITYWATCH_TOPICS__READINGS=late, CITYWATCH_KAFKA_REQUEST_TIMEOUT_MS="2000"
    )
    devices = [f"{ns.device_prefix}ordered-{i}" for i in range(2)]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    infos = [
        publisher.publish_raw(
            f"{ns.prefix}/flood/{device}/up",
            json.dumps(
                {
                    "time": (start + timedelta(seconds=seq)).isoformat(),
                    "seq": seq,
                    "metrics": {"water_level_m": 1.0},
                }
            ).encode(),
        )
        for seq in range(20)
        for device in devices
    ]
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, 10)

    async def failing() -> bool:
        return ingest.metric("citywatch_ingest_kafka_errors_total") >= 4

    await wait_until(failing, timeout=60, what="four failed Kafka sends")
    await ensure_topics(ns.settings, {late: 2})

    records = [json.loads(r) for r in await ns.read_topic(late, 40)]
    for device in devices:
        assert [r["seq"] for r in records if r["device_id"] == device] == list(range(20))
    assert await ns.end_offsets(late) == 40
    assert ingest.alive()


async def test_packet_above_the_device_limit_is_refused_by_the_broker_and_intake_goes_on(
    broker: Broker,  # noqa: F811
    ns: Namespace,
    services: Services,
    gateway_env: dict[str, str],  # noqa: F811
) -> None:
    limit = broker.part.max_packet_size
    assert limit == broker.settings.ingest.max_payload_bytes + 64 * 1024
    if broker.kind == "artemis":  # both acceptors; 512 MiB queued per address at most
        conf = (broker.part.dir / "etc" / "broker.xml").read_text()
        assert conf.count(f"maximumPacketSize={limit};") == 2
        assert "<page-limit-bytes>536870912</page-limit-bytes>" in conf
    else:
        conf = (broker.part.dir / "mosquitto.conf").read_text()
        assert f"\nmax_packet_size {limit}\n" in conf
        assert "\nmax_queued_bytes 536870912\n" in conf

    device = f"{broker.prefix}{ns.suffix}-big"
    await register(broker, (device, "water"))
    password = await broker.provision(device)
    (ingest,) = await services.start("ingest", **gateway_env)
    topic = f"citywatch/water/{device}/up"

    client = await asyncio.to_thread(connect, broker.port, device, password)
    dropped = threading.Event()

    def on_disconnect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        dropped.set()

    client.client.on_disconnect = on_disconnect
    client.client.publish(topic, b"x" * limit, qos=1)
    assert await asyncio.to_thread(dropped.wait, 10), "the broker kept the client"
    close(client)

    client = await asyncio.to_thread(connect, broker.port, device, password)
    try:
        at = datetime.now(UTC) - timedelta(minutes=1)
        await asyncio.to_thread(client.publish, topic, _reading(0, at))
    finally:
        close(client)
    [raw] = await ns.read_topic(ns.readings_topic, 1)
    assert json.loads(raw)["device_id"] == device
    # The oversized packet never reached the gateway: nothing was rejected, nothing restarted.
    assert await ns.end_offsets(ns.rejected_topic) == 0
    assert ingest.alive()


async def test_reported_position_does_not_overwrite_the_registrys(
    ns: Namespace, services: Services, publisher: Publisher, dbcon: asyncpg.Connection
) -> None:
    registered, unknown = f"{ns.device_prefix}placed", f"{ns.device_prefix}unplaced"
    await store.upsert_devices(
        dbcon,
        [DeviceProfile(device_id=registered, kind="water", lat=10.6271, lon=103.5220)],
    )
    await services.start("ingest", "processor")
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    moved = {"time": at.isoformat(), "lat": 48.8584, "lon": 2.2945, "metrics": {"ph": 7.1}}
    infos = [
        publisher.publish_raw(f"{ns.prefix}/water/{device}/up", json.dumps(moved).encode())
        for device in (registered, unknown)
    ]
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, 10)

    async def both_stored() -> bool:
        return await ns.rows(dbcon) == 2

    await wait_until(both_stored, timeout=30, what="both readings stored")
    rows = await dbcon.fetch(
        "SELECT device_id, lat, lon, status, last_reading_at FROM devices"
        " WHERE device_id = ANY($1)",
        [registered, unknown],
    )
    by_id = {r["device_id"]: r for r in rows}
    assert (by_id[registered]["lat"], by_id[registered]["lon"]) == (10.6271, 103.5220)
    assert by_id[registered]["last_reading_at"] == at  # the reading itself was taken
    # A device nobody registered has no position but the one it reports.
    assert by_id[unknown]["status"] == "unprovisioned"
    assert (by_id[unknown]["lat"], by_id[unknown]["lon"]) == (48.8584, 2.2945)


async def test_gateway_retrying_a_send_in_place_still_stops_and_leaves_the_message_unacked(
    ns: Namespace, services: Services, publisher: Publisher
) -> None:
    late = f"test.{ns.suffix}.readings-late"
    env = {"CITYWATCH_TOPICS__READINGS": late, "CITYWATCH_KAFKA_REQUEST_TIMEOUT_MS": "2000"}
    (ingest,) = await services.start("ingest", **env)
    device = f"{ns.device_prefix}waiting"
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    info = publisher.publish_raw(f"{ns.prefix}/water/{device}/up", _reading(0, at))
    await asyncio.to_thread(info.wait_for_publish, 10)

    async def failing() -> bool:
        return ingest.metric("citywatch_ingest_kafka_errors_total") >= 1

    await wait_until(failing, timeout=30, what="a failed Kafka send")
    # SIGTERM while the send is retried in place: the gateway drains what it can and exits.
    assert await asyncio.to_thread(ingest.stop) == 0

    # The message was never acked, so the broker hands it to the next gateway on the session.
    await ensure_topics(ns.settings, {late: 1})
    await services.start("ingest", **env)
    [raw] = await ns.read_topic(late, 1)
    assert json.loads(raw)["device_id"] == device


async def test_readings_too_old_or_one_message_spanning_too_long_are_rejected_with_reasons(
    ns: Namespace, services: Services, publisher: Publisher
) -> None:
    (ingest,) = await services.start("ingest")
    now = datetime.now(UTC).replace(microsecond=0)
    device = f"{ns.device_prefix}clock"
    topic = f"{ns.prefix}/water/{device}/up"
    old = _reading(0, now - timedelta(days=91))  # the default bound: 90 days
    wide = b"[" + _reading(1, now - timedelta(days=3)) + b"," + _reading(2, now) + b"]"
    sentinel = _reading(3, now - timedelta(days=1))
    for payload in (old, wide, sentinel):
        info = publisher.publish_raw(topic, payload)
        await asyncio.to_thread(info.wait_for_publish, 10)

    [stored] = await ns.read_topic(ns.readings_topic, 1)
    assert json.loads(stored)["seq"] == 3
    records = [
        RejectedRecord.model_validate_json(r) for r in await ns.read_topic(ns.rejected_topic, 2)
    ]
    assert [(r.reason, r.raw) for r in records] == [
        ("time_too_old", old),
        ("time_spread_too_wide", wide),
    ]
    for reason in ("time_too_old", "time_spread_too_wide"):
        assert ingest.metric("citywatch_ingest_rejected_total", f'reason="{reason}"') == 1
    assert await ns.end_offsets(ns.readings_topic) == 1
