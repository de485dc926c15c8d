"""The spine, end to end: MQTT -> ingest -> Kafka -> processor -> PostgreSQL, all real."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from schemas import RejectedRecord
from simulators import Fleet, Publisher
from tests.harness import Namespace, Services, wait_until

pytestmark = pytest.mark.stack


async def test_reading_published_over_mqtt_is_stored_once_with_every_metric(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
) -> None:
    await services.start("ingest", "processor")

    device = f"{ns.device_prefix}buoy-7"
    # A day ago (the gateway refuses readings older than 90 days), written in +07:00.
    taken = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    payload = {
        "time": taken.astimezone(timezone(timedelta(hours=7))).isoformat(),
        "seq": 42,
        "metrics": {"ph": 7.2, "turbidity_ntu": 3.1, "temperature_c": 29.5},
    }
    info = publisher.publish_raw(f"{ns.prefix}/water/{device}/up", json.dumps(payload).encode())
    await asyncio.to_thread(info.wait_for_publish, 10)

    async def stored() -> bool:
        return await ns.rows(dbcon) == 3

    await wait_until(stored, timeout=30, what="3 rows for the reading")
    rows = await dbcon.fetch(
        "SELECT time, metric, value FROM readings WHERE device_id = $1 ORDER BY metric", device
    )
    assert [(r["metric"], r["value"]) for r in rows] == [
        ("ph", 7.2),
        ("temperature_c", 29.5),
        ("turbidity_ntu", 3.1),
    ]
    assert {r["time"] for r in rows} == {taken}
    dev = await dbcon.fetchrow(
        "SELECT kind, last_reading_at FROM devices WHERE device_id = $1", device
    )
    assert dev["kind"] == "water"
    assert dev["last_reading_at"] == taken

    # Exactly once: the processor committed the one record, and nothing more is stored.
    async def committed() -> bool:
        return await ns.committed(f"processor-{ns.suffix}", ns.readings_topic) == 1

    await wait_until(committed, timeout=20, what="offset committed")
    assert await ns.rows(dbcon) == 3


async def test_device_flushing_hours_of_buffered_readings_is_stored_in_full(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
) -> None:
    """A gauge back from a 6-hour outage sends its buffer: 6 lists of 360 readings each."""
    await services.start("ingest", "processor")

    device = f"{ns.device_prefix}gauge-buffered"
    outage_start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    infos = []
    for hour in range(6):
        readings = [
            {
                "time": (outage_start + timedelta(hours=hour, seconds=10 * i)).isoformat(),
                "seq": hour * 360 + i,
                "metrics": {"water_level_m": 1.0 + i / 1000, "rain_mm_h": 2.5},
            }
            for i in range(360)
        ]
        payload = json.dumps(readings).encode()
        infos.append(publisher.publish_raw(f"{ns.prefix}/flood/{device}/up", payload))
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, 10)

    async def stored() -> bool:
        return await ns.rows(dbcon) == 6 * 360 * 2

    await wait_until(stored, timeout=60, what="all 4320 buffered rows")
    span = await dbcon.fetchrow(
        "SELECT min(time) AS first, max(time) AS last FROM readings WHERE device_id = $1", device
    )
    assert span["first"] == outage_start
    assert span["last"] == outage_start + timedelta(hours=5, seconds=3590)
    latest = await dbcon.fetchval(
        "SELECT time FROM device_latest WHERE device_id = $1 AND metric = 'water_level_m'", device
    )
    assert latest == span["last"]


MALFORMED = {
    # name: (topic kind/device, payload, expected reason)
    "not_json": ("water/{d}", b'{"metrics": ', "not_json"),
    "not_utf8": ("water/{d}", b"\xc3\x28\xa0\xa1", "not_utf8"),
    "wrong_type": ("water/{d}", b'{"metrics": {"ph": "7.2"}}', "wrong_type"),
    "unknown_kind": ("radar/{d}", b'{"metrics": {"ph": 7.2}}', "unknown_kind"),
    "unknown_metric": ("water/{d}", b'{"metrics": {"radiation_usv": 0.2}}', "unknown_metric"),
    "out_of_range": ("water/{d}", b'{"metrics": {"ph": 19.5}}', "out_of_range"),
    "nan": ("water/{d}", b'{"metrics": {"ph": NaN}}', "not_finite"),
    "missing_device_id": ("water/", b'{"metrics": {"ph": 7.2}}', "bad_topic"),
    "conflicting_device_id": (
        "water/{d}",
        b'{"device_id": "other", "metrics": {"ph": 7.2}}',
        "device_mismatch",
    ),
    "time_without_zone": (
        "water/{d}",
        b'{"time": "2026-11-24T10:00:00", "metrics": {"ph": 7}}',
        "time_without_zone",
    ),
    "oversized": (
        "water/{d}",
        b'{"metrics": {"ph": 7.2}, "pad": "' + b"x" * 300_000 + b'"}',
        "payload_too_large",
    ),
}


async def test_malformed_payloads_are_rejected_with_reasons_and_valid_ones_stored(
    ns: Namespace,
    services: Services,
    publisher: Publisher,
    dbcon: asyncpg.Connection,
) -> None:
    ingest, processor = await services.start("ingest", "processor")
    pids = (ingest.pid, processor.pid)

    fleet = Fleet(per_kind=2, seed=7, prefix=ns.prefix, id_prefix=ns.device_prefix)
    valid = [
        m
        for m, _ in zip(
            fleet.messages(datetime.now(UTC) - timedelta(hours=1), 10), range(40), strict=False
        )
    ]
    device = f"{ns.device_prefix}bad-1"
    infos = []
    # Interleave: valid, malformed, valid, ... so a rejection sits between good readings.
    bad = list(MALFORMED.values())
    for i, msg in enumerate(valid):
        infos.append(publisher.publish_raw(msg.topic, msg.payload))
        if i < len(bad):
            where, payload, _ = bad[i]
            infos.append(publisher.publish_raw(f"{ns.prefix}/{where.format(d=device)}/up", payload))
    for info in infos:
        await asyncio.to_thread(info.wait_for_publish, 10)

    expected_rows = sum(m.rows for m in valid)
    rejected = await ns.read_topic(ns.rejected_topic, len(MALFORMED))
    records = [RejectedRecord.model_validate_json(r) for r in rejected]
    assert sorted(r.reason for r in records) == sorted(v[2] for v in MALFORMED.values())
    for rec in records:
        assert rec.detail and rec.topic.startswith(ns.prefix)
        assert rec.raw  # the raw bytes travel with the reason
    not_utf8 = next(r for r in records if r.reason == "not_utf8")
    assert not_utf8.raw == MALFORMED["not_utf8"][1]

    async def all_stored() -> bool:
        return await ns.rows(dbcon) == expected_rows

    await wait_until(all_stored, timeout=30, what=f"{expected_rows} rows")
    # Nothing extra on the rejected topic, nothing extra in the table, nobody restarted.
    assert await ns.end_offsets(ns.rejected_topic) == len(MALFORMED)
    assert await ns.end_offsets(ns.readings_topic) == len(valid)
    assert (ingest.pid, processor.pid) == pids and ingest.alive() and processor.alive()
    for reason in {v[2] for v in MALFORMED.values()}:
        assert ingest.metric("citywatch_ingest_rejected_total", f'reason="{reason}"') >= 1
