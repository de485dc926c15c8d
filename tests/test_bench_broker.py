"""`citywatch bench broker`: the broker alone, publish -> the gateway's MQTT client."""

from __future__ import annotations

import pytest

from services.bench.stages import mqtt_latency
from services.common.settings import Settings

pytestmark = pytest.mark.stack


async def test_broker_latency_counts_every_message_published_and_only_those(
    stack: Settings,
) -> None:
    run = await mqtt_latency(stack, rate=200, seconds=2, topics=5, ack_delay_ms=10)
    assert run.sent >= 300  # 2 s at 200 msg/s, give or take the pacing
    # Every publish came back through the gateway's client, and nothing else was counted
    # (the subscription probe's copies are left out).
    assert run.received == run.sent
    assert 0 < run.p50_ms <= run.p99_ms <= run.max_ms
