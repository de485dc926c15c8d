"""A registered device that talks but whose every message is refused is shown as such on
`/devices` (and so on /ops), not as a silent device (services/ingest/refusals.py).

Seen in the demo: a water buoy whose clock ran five hours ahead published every ten
seconds, the gateway refused each message (`time_in_future`), and the operations centre
showed it "offline" with nothing else to go on.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from simulators import Publisher
from tests.harness import Namespace, Services, wait_until
from tests.test_api import get

pytestmark = pytest.mark.stack


async def test_a_device_whose_clock_runs_ahead_shows_why_it_is_refused_until_it_reads_again(
    ns: Namespace, services: Services, publisher: Publisher, dbcon: asyncpg.Connection
) -> None:
    device = f"{ns.device_prefix}buoy-clock"
    await dbcon.execute(
        "INSERT INTO devices (device_id, kind, status) VALUES ($1, 'water', 'active')", device
    )
    _ingest, api = await services.start("ingest", "api", CITYWATCH_INGEST__REGISTRY_REFRESH_S="1")
    url = f"http://127.0.0.1:{api.port}/devices/{device}"

    async def send(at: datetime) -> None:
        body = {"time": at.isoformat(), "metrics": {"ph": 7.9}}
        info = publisher.publish_raw(f"{ns.prefix}/water/{device}/up", json.dumps(body).encode())
        await asyncio.to_thread(info.wait_for_publish, 10)

    ahead = datetime.now(UTC) + timedelta(hours=5)
    for i in range(3):
        await send(ahead + timedelta(seconds=10 * i))

    async def refused() -> bool:
        status, body, _ = await get(url)
        return status == 200 and body["refused"] is not None and body["refused"]["count"] == 3

    await wait_until(refused, timeout=30, what="the refusals on /devices")
    _, body, _ = await get(url)
    assert body["status"] == "offline" and body["last_seen"] is None  # nothing was stored
    why = body["refused"]
    assert why["reason"] == "time_in_future" and "clock" in why["detail"], why

    # Its clock is set right: once a reading is stored, the old refusal is no longer shown.
    await services.start("processor")

    async def reading_again() -> bool:
        status, body, _ = await get(url)
        return status == 200 and body["last_seen"] is not None and body["refused"] is None

    await send(datetime.now(UTC))
    await wait_until(reading_again, timeout=60, what="the device reading again")
