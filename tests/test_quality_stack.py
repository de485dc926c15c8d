"""QARTOD flags through the real pipeline: MQTT -> ingest -> Kafka -> processor -> PostgreSQL.

Checked at the source: `readings.quality` row by row, with the shipped defaults
(deploy/quality/defaults.yaml) and a per-device override read from `devices.qc_overrides`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
import pytest

from simulators import Publisher
from tests.harness import Namespace, Services, wait_until

pytestmark = pytest.mark.stack

P, S, F = 1, 3, 4
STEP = timedelta(minutes=10)


def ph_at(i: int) -> float:
    """A normal pH: 7.16..7.24, never the same twice in a row, at most 0.48 pH/h."""
    return round(7.2 + 0.02 * ((i * 7) % 5 - 2), 3)


async def flags(db: asyncpg.Connection, device: str, metric: str) -> list[int]:
    rows = await db.fetch(
        "SELECT quality FROM readings WHERE device_id = $1 AND metric = $2 ORDER BY time",
        device,
        metric,
    )
    return [r["quality"] for r in rows]


async def test_spike_and_flat_line_in_a_stream_are_flagged_and_normal_values_pass(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
) -> None:
    device = f"{ns.device_prefix}buoy-qc"
    strict = f"{ns.device_prefix}buoy-strict"  # registered with a narrow pH suspect span
    await dbcon.execute(
        "INSERT INTO devices (device_id, kind, status, qc_overrides)"
        " VALUES ($1, 'water', 'active', $2::jsonb)",
        strict,
        json.dumps({"ph": {"gross_range": {"suspect_max": 7.19}}}),
    )
    ingest, processor = await services.start("ingest", "processor")

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=8)
    n, spike_at = 40, 5
    # pH normal but for one spike; the water temperature stuck at 29.5 throughout.
    ph = [9.0 if i == spike_at else ph_at(i) for i in range(n)]
    readings = [
        {"time": (start + i * STEP).isoformat(), "metrics": {"ph": ph[i], "temperature_c": 29.5}}
        for i in range(n)
    ]

    async def publish(device_id: str, part: list[dict[str, object]]) -> None:
        info = publisher.publish_raw(f"{ns.prefix}/water/{device_id}/up", json.dumps(part).encode())
        await asyncio.to_thread(info.wait_for_publish, 10)

    async def rows_of(device_id: str) -> int:
        return int(
            await dbcon.fetchval("SELECT count(*) FROM readings WHERE device_id = $1", device_id)
        )

    # The spike is the last value of the first message: stored before its right neighbour
    # exists, so its verdict reaches the stored row by an UPDATE in a later batch.
    await publish(device, readings[: spike_at + 1])

    async def first_part_stored() -> bool:
        return await rows_of(device) == 2 * (spike_at + 1)

    await wait_until(first_part_stored, timeout=30, what="first message's rows")
    assert (await flags(dbcon, device, "ph"))[spike_at] == S  # rate of change only, so far
    await publish(device, readings[spike_at + 1 :])
    await publish(strict, readings[:3])

    async def all_stored() -> bool:
        return await rows_of(device) == 2 * n and await rows_of(strict) == 6

    await wait_until(all_stored, timeout=30, what="every row of both devices")

    async def all_committed() -> bool:  # nothing is still on its way to being re-judged
        end = await ns.end_offsets(ns.readings_topic)
        return await ns.committed(f"processor-{ns.suffix}", ns.readings_topic) == end

    await wait_until(all_committed, timeout=30, what="every record committed")

    # pH: the spike fails; the value after it passes (a failed spike is no neighbour: its
    # successor's rate of change is judged against the value before it, so the steep way
    # back from a glitch is not held against an ordinary value); the value before it
    # passes: the differential spike test (deploy/quality) implicates only a value that
    # jumps away from both neighbours. Every other value passes, the first and last included.
    expected_ph = [P] * n
    expected_ph[spike_at] = F
    assert await flags(dbcon, device, "ph") == expected_ph
    # Temperature: four equal readings are suspect (the repeat count its noise model gives,
    # 0.1 C of noise at 0.01 C resolution: deploy/quality), and flat within
    # 0.005 C for 6 h is fail (defaults file).
    assert await flags(dbcon, device, "temperature_c") == [P] * 3 + [S] * 33 + [F] * 4
    # The override: 7.2 and 7.24 are above this device's suspect span, 7.16 is within it.
    assert [ph_at(i) for i in range(3)] == [7.16, 7.2, 7.24]
    assert await flags(dbcon, strict, "ph") == [P, S, S]

    # The flags are exported, counted once per stored row (the spike's re-flag apart).
    def counted(name: str, metric: str, flag: str) -> float:
        return processor.metric(name, f'flag="{flag}",metric="{metric}"')

    assert counted("citywatch_processor_quality_flags_total", "temperature_c", "fail") == 4
    assert counted("citywatch_processor_quality_flags_total", "temperature_c", "suspect") == 33
    assert counted("citywatch_processor_quality_reflagged_total", "ph", "fail") == 1
    assert ingest.alive() and processor.alive()


async def test_a_drifting_gauge_is_stored_suspect_once_its_gap_to_its_area_is_clear(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
) -> None:
    # Three gauges in one area (a per-test area id, so other tests' devices are not
    # neighbours); g2 reads 0.3 m above the others, three times the 0.1 m the defaults
    # allow. The processor re-runs the drift check every second of its loop time.
    area = f"{ns.device_prefix}estuary"
    gauges = [f"{ns.device_prefix}gauge-{i}" for i in range(3)]
    for device in gauges:
        await dbcon.execute(
            "INSERT INTO devices (device_id, kind, area, status)"
            " VALUES ($1, 'flood', $2, 'active')",
            device,
            area,
        )
    (processor,) = await services.start("processor", CITYWATCH_PROCESSOR__DRIFT_REFRESH_S="1")
    ingest = (await services.start("ingest"))[0]
    step = timedelta(minutes=5)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)

    def level(device: str, i: int) -> float:
        tide = 1.0 + 0.005 * i  # a slow rise every gauge sees
        return round(tide + (0.3 if device == gauges[2] else 0.001 * (i % 3)), 3)

    async def publish(i: int) -> None:
        for device in gauges:
            body = {
                "time": (start + i * step).isoformat(),
                "metrics": {"water_level_m": level(device, i)},
            }
            info = publisher.publish_raw(
                f"{ns.prefix}/flood/{device}/up", json.dumps(body).encode()
            )
            await asyncio.to_thread(info.wait_for_publish, 10)

    async def stored(i: int) -> bool:
        n = await dbcon.fetchval(
            "SELECT count(*) FROM readings WHERE device_id = ANY($1) AND time = $2",
            gauges,
            start + i * step,
        )
        return int(n) == len(gauges)

    # An hour and a half of history: enough buckets for a verdict.
    history = 18
    for i in range(history):
        await publish(i)
    await wait_until(partial(stored, history - 1), timeout=30, what="the history stored")

    # Then one reading each at a time, until the check has run on the history and g2's
    # newest value is stored suspect (bounded: the check runs every second of batches).
    i = history
    while True:
        await publish(i)
        await wait_until(partial(stored, i), timeout=30, what=f"reading {i} stored")
        newest = await flags_at(dbcon, gauges, start + i * step)
        if newest[gauges[2]] == S or i >= history + 60:
            break
        i += 1
    assert newest[gauges[2]] == S, "the drifting gauge was never flagged"
    # Its neighbours are not, at the same reading, nor at any time.
    assert newest[gauges[0]] == P and newest[gauges[1]] == P
    assert S not in await flags(dbcon, gauges[0], "water_level_m")
    assert S not in await flags(dbcon, gauges[1], "water_level_m")
    # Before six buckets (the defaults' min_buckets) were stored there was no verdict to
    # give: those values pass, whenever the check ran.
    assert (await flags(dbcon, gauges[2], "water_level_m"))[:6] == [P] * 6
    assert processor.metric("citywatch_processor_quality_drifting") >= 1
    assert ingest.alive() and processor.alive()


async def flags_at(db: asyncpg.Connection, devices: list[str], at: datetime) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT device_id, quality FROM readings WHERE device_id = ANY($1) AND time = $2"
        " AND metric = 'water_level_m'",
        devices,
        at,
    )
    return {r["device_id"]: r["quality"] for r in rows}
