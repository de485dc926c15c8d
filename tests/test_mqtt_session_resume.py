"""A gateway that comes back to its persistent session gets every message, not one window.

Seen in CI (test_delivery's SIGTERM during a Kafka outage): the restarted gateway resumed its
session on Artemis, was redelivered the Receive Maximum's worth of messages its predecessor
had left unacked, acked them, and was sent nothing more; the rest stayed in the broker. It
had subscribed again on the resumed session: Artemis then replaces the subscription's
consumer, refuses the acks of the redelivered messages ("attempted to Ack already Ack'd
message") and never frees their slots of the window. Against the stack's real broker.
"""

from __future__ import annotations

import asyncio
import uuid

from services.common.settings import Settings
from services.ingest.mqtt_source import Inbound, MqttSource
from simulators.publisher import Publisher

WINDOW = 10  # the gateway's Receive Maximum here: small, so one window is quickly full


def _source(stack: Settings, client_id: str, filters: tuple[str, ...]) -> MqttSource:
    username, password = stack.mqtt_login("citywatch-ingest")
    return MqttSource(
        host=stack.mqtt_services_host,
        port=stack.mqtt_services_port,
        client_id=client_id,
        filters=filters,
        receive_maximum=WINDOW,
        session_expiry_s=60,  # the broker forgets the test's session a minute after it
        broker=stack.mqtt_broker,  # as the gateway does
        username=username,
        password=password,
    )


PROBE = b"probe"


async def _next(source: MqttSource, what: str) -> Inbound:
    """The next message that is not a probe (probes are acked and skipped)."""
    while True:
        try:
            msg = await asyncio.wait_for(source.get(), timeout=15)
        except TimeoutError:
            raise AssertionError(f"timed out after 15s waiting for: {what}") from None
        if msg.payload != PROBE:
            return msg
        assert source.ack(msg)


async def _subscribed(source: MqttSource, publisher: Publisher, topic: str) -> None:
    """Until a probe arrives: `connected` is set when SUBSCRIBE is sent, and the broker
    drops what is published before it has the subscription."""
    for _ in range(100):
        info = publisher.publish_raw(topic, PROBE)
        await asyncio.to_thread(info.wait_for_publish, 10)
        try:
            msg = await asyncio.wait_for(source.get(), timeout=0.2)
        except TimeoutError:
            continue
        assert msg.payload == PROBE and source.ack(msg)
        return
    raise AssertionError("the subscription never took a probe")


ROUNDS = 5  # whether Artemis stalls depends on its redelivery racing the resubscription


async def _resume_round(stack: Settings, publisher: Publisher) -> None:
    tag = uuid.uuid4().hex[:8]
    filters = (f"$share/g{tag}/r{tag}/+/+/up",)
    client_id = f"citywatch-ingest-resume-{tag}"
    total = 3 * WINDOW
    first = _source(stack, client_id, filters)
    first.start()
    try:
        topic = f"r{tag}/dev/1/up"
        await _subscribed(first, publisher, topic)
        for i in range(total):
            info = publisher.publish_raw(topic, f"m{i}".encode())
            await asyncio.to_thread(info.wait_for_publish, 10)
        # The first connection takes a full window and acks none of it (Kafka is down).
        for i in range(WINDOW):
            await _next(first, f"message {i + 1} of the first window")
    finally:
        first.close()

    second = _source(stack, client_id, filters)
    second.start()
    seen: set[bytes] = set()
    try:
        while len(seen) < total:
            msg = await _next(second, f"all {total} messages after the resume ({len(seen)} so far)")
            assert second.ack(msg)
            seen.add(msg.payload)
    finally:
        second.close()
    assert seen == {f"m{i}".encode() for i in range(total)}


async def test_a_resumed_session_delivers_every_message_after_the_unacked_ones(
    stack: Settings, publisher: Publisher
) -> None:
    for _ in range(ROUNDS):
        await _resume_round(stack, publisher)
