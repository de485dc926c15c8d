"""Rollups, retention and compression on both storage paths, and the processor's lag gauge.

Plain PostgreSQL: a brand-new database of the test stack per module (as in
tests/test_migrations.py). TimescaleDB: a fresh PGlite + TimescaleDB server; its background
jobs never run, so the tests call what the refresh policies would (`refresh_continuous_
aggregate`) where a policy would have run. On the plain path the tests write each batch as
the processor does, in one transaction: readings merged into the rollups by the insert, then
`refresh_rollups` of the buckets a reflag to fail took a value out of.

Every check compares the rollups with a GROUP BY over the raw rows at that moment.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from schemas import Reading
from services.common import db, maintenance
from services.common.kafka import client_options
from services.common.settings import KAFKA_ADMIN, RetentionSettings
from tests.fixtures_databases import FreshDatabases, connected, pglite
from tests.harness import Namespace, Services, wait_until

pytestmark = pytest.mark.stack

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]

# The reference: what each rollup must hold, straight from the raw rows (fail flags out).
_GROUP_BY = """
SELECT date_bin($2::text::interval, time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       device_id, metric, min(value) AS min, avg(value) AS avg, max(value) AS max,
       count(*) AS count
FROM readings
WHERE device_id LIKE $1 AND quality <> 4
GROUP BY 1, 2, 3 ORDER BY device_id, metric, bucket
"""
_ROLLUP = """
SELECT bucket, device_id, metric, min, avg, max, count FROM {table}
WHERE device_id LIKE $1 ORDER BY device_id, metric, bucket
"""


def reading(device: str, at: datetime, **metrics: float) -> Reading:
    return Reading(
        device_id=device, kind="water", time=at, received_at=datetime.now(UTC), metrics=metrics
    )


async def write_batch(
    con: asyncpg.Connection,
    readings: list[Reading],
    *,
    flags: dict[tuple[str, str, datetime], int] | None = None,
    reflags: list[tuple[str, str, datetime, int]] | None = None,
) -> db.StoredBatch:
    """One batch as the processor writes it (services/processor/writer.py `_store`)."""
    rollups = await maintenance.rollups_by_processor(con)
    async with con.transaction():
        stored = await db.store_readings(
            con, readings, flags=flags, reflags=reflags or [], rollups=rollups
        )
        if stored.failed:
            await maintenance.refresh_rollups(con, maintenance.failed_minutes(stored.failed))
    return stored


async def settle(con: asyncpg.Connection) -> None:
    """TimescaleDB: materialise what the refresh policies would have by now (PGlite runs
    no background jobs). Plain path: nothing to do, the batch's transaction did it."""
    if await db.storage_path(con) == "timescaledb":
        for rollup in maintenance.ROLLUPS:
            await con.execute(f"CALL refresh_continuous_aggregate('{rollup}', NULL, NULL)")


async def assert_rollups_match_raw(con: asyncpg.Connection, prefix: str) -> int:
    """Both rollups equal a GROUP BY over `readings`; returns the minute rows compared."""
    for table, width in (("readings_1m", "1 minute"), ("readings_1h", "1 hour")):
        want = [dict(r) for r in await con.fetch(_GROUP_BY, f"{prefix}%", width)]
        got = [dict(r) for r in await con.fetch(_ROLLUP.format(table=table), f"{prefix}%")]
        assert [{**r, "avg": pytest.approx(r["avg"])} for r in want] == got, table
    return len(await con.fetch(_ROLLUP.format(table="readings_1m"), f"{prefix}%"))


# -- one connection factory per storage path ----------------------------------------------


@pytest.fixture(scope="module")
async def plain_dsn(fresh_databases: FreshDatabases) -> str:
    dsn = await fresh_databases.create()
    async with connected(dsn) as con:
        await db.migrate(con)
        assert await db.storage_path(con) == "plain"
    return dsn


@pytest.fixture(scope="module")
async def timescale_port(pglite_port: int) -> int:
    async with pglite(pglite_port) as con:
        await db.migrate(con)
        assert await db.storage_path(con) == "timescaledb"
    return pglite_port


@pytest.fixture(params=["plain", "timescaledb"])
def connect(request: pytest.FixtureRequest) -> Connect:
    """`async with connect() as con`: a connection to a migrated database of the path."""
    if request.param == "plain":
        dsn: str = request.getfixturevalue("plain_dsn")
        return lambda: connected(dsn)
    port: int = request.getfixturevalue("timescale_port")
    return lambda: pglite(port)


def noon(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)


# -- rollups ---------------------------------------------------------------------------------


async def test_rollups_equal_group_by_after_batches_redelivery_late_readings_and_reflags(
    connect: Connect,
) -> None:
    prefix = f"ru-{uuid.uuid4().hex[:8]}-"
    a, b = f"{prefix}a", f"{prefix}b"
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    batch = [
        reading(a, base + timedelta(seconds=s), ph=7.0 + s / 100, turbidity_ntu=s / 10)
        for s in range(0, 180, 15)  # three minutes, four readings a minute
    ] + [reading(b, base + timedelta(minutes=70, seconds=s), ph=6.5) for s in (0, 30)]
    # One value failed QARTOD: it is stored but stays out of the rollups.
    failed = (a, "ph", base + timedelta(seconds=30))
    async with connect() as con:
        stored = await write_batch(con, batch, flags={failed: 4})
        assert stored.rows_inserted == 26
        await settle(con)
        minutes = await assert_rollups_match_raw(con, prefix)
        assert minutes == 3 + 3 + 1  # a: ph and turbidity over 3 minutes; b: 1 minute
        assert (
            await con.fetchval(
                "SELECT count FROM readings_1m WHERE device_id = $1 AND metric = 'ph' "
                "AND bucket = $2",
                a,
                base,
            )
            == 3
        )  # of four readings in that minute, one failed
        before = [
            tuple(r) for r in await con.fetch(_ROLLUP.format(table="readings_1h"), f"{prefix}%")
        ]

        # Redelivered: nothing new is stored and every bucket holds the same numbers.
        again = await write_batch(con, batch, flags={failed: 4})
        assert again.rows_inserted == 0
        await settle(con)
        await assert_rollups_match_raw(con, prefix)
        after = [
            tuple(r) for r in await con.fetch(_ROLLUP.format(table="readings_1h"), f"{prefix}%")
        ]
        assert after == before

        # Late readings: into an existing minute, and two hours before everything else.
        late = [
            reading(a, base + timedelta(seconds=5), ph=9.0),
            reading(a, base - timedelta(hours=2), ph=5.0, turbidity_ntu=1.0),
        ]
        assert (await write_batch(con, late)).rows_inserted == 3
        await settle(con)
        assert await assert_rollups_match_raw(con, prefix) == minutes + 2
        assert (
            await con.fetchval(
                "SELECT max FROM readings_1h WHERE device_id = $1 AND metric = 'ph' "
                "AND bucket = date_bin('1 hour', $2::timestamptz, '2000-01-01 00:00+00')",
                a,
                base,
            )
            == 9.0
        )

        # A later verdict flags a stored value fail: it leaves its minute and hour; a minute
        # left with no value has no row at all.
        alone = base - timedelta(hours=2)
        await write_batch(
            con, [], reflags=[(a, "ph", base + timedelta(seconds=5), 4), (a, "ph", alone, 4)]
        )
        await settle(con)
        assert await assert_rollups_match_raw(con, prefix) == minutes + 1


# -- retention and compression ---------------------------------------------------------------

RETENTION = RetentionSettings(raw_days=30, minute_days=60, hour_days=90, compress_after_days=7)


async def test_maintain_drops_what_is_past_retention_keeps_the_rest_and_is_idempotent(
    connect: Connect,
) -> None:
    prefix = f"rt-{uuid.uuid4().hex[:8]}-"
    device = f"{prefix}x"
    today = datetime.now(UTC).date()
    ages = (100, 75, 40, 20, 0)  # days; midday, far from any cutoff
    at = {age: noon(today - timedelta(days=age)) for age in ages}
    async with connect() as con:
        plain = await db.storage_path(con) == "plain"
        if plain:  # daily partitions for the old days, as the processor would have made
            for age in (40, 20):
                day = today - timedelta(days=age)
                await con.fetchval("SELECT citywatch_ensure_partitions($1::date, $1::date)", day)
        await write_batch(con, [reading(device, at[age], ph=float(age)) for age in ages])
        # The policies materialised these while they were recent.
        await settle(con)
        await assert_rollups_match_raw(con, prefix)

        report = await maintenance.maintain(con, RETENTION, today=today)

        async def ages_in(table: str, column: str) -> list[float]:
            rows = await con.fetch(
                f"SELECT min FROM {table} WHERE device_id = $1 ORDER BY {column}"
                if table != "readings"
                else "SELECT value AS min FROM readings WHERE device_id = $1 ORDER BY time",
                device,
            )
            return [r["min"] for r in rows]

        assert await ages_in("readings", "time") == [20.0, 0.0]
        assert await ages_in("readings_1m", "bucket") == [40.0, 20.0, 0.0]
        assert await ages_in("readings_1h", "bucket") == [75.0, 40.0, 20.0, 0.0]
        assert report.dropped, "nothing was dropped"
        if plain:
            old, kept = (f"readings_{today - timedelta(days=d):%Y%m%d}" for d in (40, 20))
            assert old in report.dropped and kept not in report.dropped
            assert await con.fetchval("SELECT to_regclass($1)", old) is None
            assert await con.fetchval("SELECT to_regclass($1)", kept) is not None
            # 100 and 75 days old sat in the default partition: their rows were deleted.
            assert report.deleted_rows["readings"] >= 2
        else:
            await assert_compressed_as_configured(con, today)

        # Again: nothing more to do, nothing changes.
        tables = (("readings", "time"), ("readings_1m", "bucket"), ("readings_1h", "bucket"))
        before = [await ages_in(t, c) for t, c in tables]
        second = await maintenance.maintain(con, RETENTION, today=today)
        assert second.dropped == [] and second.compressed == [] and second.policies_changed == []
        assert not any(second.deleted_rows.values())
        assert before == [await ages_in(t, c) for t, c in tables]


async def assert_compressed_as_configured(con: asyncpg.Connection, today: date) -> None:
    """TimescaleDB: chunks older than compress_after_days compressed, newer ones not, the
    policies say what the settings say, and a late reading still lands in a compressed
    chunk and in the rollups."""
    cutoff = datetime.combine(today - timedelta(days=7), datetime.min.time(), UTC)
    chunks = await con.fetch(
        "SELECT range_end, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings'"
    )
    assert chunks
    assert all(c["is_compressed"] == (c["range_end"] <= cutoff) for c in chunks)
    assert any(c["is_compressed"] for c in chunks)
    policies = {
        (r["proc_name"], r["hypertable_name"]): json.loads(r["config"])
        for r in await con.fetch(
            "SELECT proc_name, hypertable_name, config::text AS config "
            "FROM timescaledb_information.jobs WHERE proc_name IN "
            "('policy_retention', 'policy_compression', 'policy_refresh_continuous_aggregate')"
        )
    }
    assert policies[("policy_retention", "readings")]["drop_after"] == "30 days"
    assert policies[("policy_retention", "readings_1m")]["drop_after"] == "60 days"
    assert policies[("policy_retention", "readings_1h")]["drop_after"] == "90 days"
    assert policies[("policy_compression", "readings")]["compress_after"] == "7 days"
    assert ("policy_refresh_continuous_aggregate", "readings_1m") in policies
    assert ("policy_refresh_continuous_aggregate", "readings_1h") in policies


async def test_timescaledb_changed_retention_replaces_the_policy_once(
    timescale_port: int,
) -> None:
    async with pglite(timescale_port) as con:
        await maintenance.maintain(con, RETENTION)
        shorter = RetentionSettings(raw_days=25, minute_days=60, hour_days=90)
        changed = await maintenance.maintain(con, shorter)
        assert changed.policies_changed == ["policy_retention:readings=25d"]
        assert (await maintenance.maintain(con, shorter)).policies_changed == []
        assert (
            await con.fetchval(
                "SELECT config ->> 'drop_after' FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_retention' AND hypertable_name = 'readings'"
            )
            == "25 days"
        )


async def test_processor_applies_retention_itself_and_only_one_process_at_a_time(
    ns: Namespace, services: Services, dbcon: asyncpg.Connection
) -> None:
    """Nobody has to schedule `citywatch db maintain`: a running processor applies retention
    at start and then every `maintain_every_h`. While another process holds the
    maintenance lock (here this test, as a second processor or a cron'd command would),
    the processor skips its turn instead of running beside it."""
    device = f"{ns.device_prefix}old"
    today = datetime.now(UTC).date()
    await write_batch(
        dbcon, [reading(device, noon(today - timedelta(days=age)), ph=7.0) for age in (100, 0)]
    )
    lock = maintenance._MAINTENANCE_LOCK
    assert await dbcon.fetchval("SELECT pg_try_advisory_lock($1)", lock)
    try:
        (processor,) = await services.start(
            "processor",
            CITYWATCH_RETENTION__MAINTAIN_EVERY_H="0.001",  # every 3.6 s
            CITYWATCH_RETENTION__RAW_DAYS="30",
        )

        def runs(outcome: str) -> float:
            key = f'citywatch_processor_maintenance_runs_total{{outcome="{outcome}"}}'
            return processor.metrics().get(key, 0.0)

        async def skipped() -> bool:
            return runs("skipped") >= 1

        await wait_until(skipped, timeout=30, what="the processor skipping a locked turn")
        assert runs("done") == 0
        assert await ns.rows(dbcon) == 2, "retention ran while another process held the lock"
    finally:
        await dbcon.execute("SELECT pg_advisory_unlock($1)", lock)

    async def old_row_gone() -> bool:
        return runs("done") >= 1 and await ns.rows(dbcon) == 1

    await wait_until(old_row_gone, timeout=30, what="the 100-day-old reading dropped")
    kept = await dbcon.fetchval("SELECT time FROM readings WHERE device_id = $1", device)
    assert kept == noon(today)


def test_retention_settings_keep_aggregates_at_least_as_long_as_raw_readings() -> None:
    with pytest.raises(ValueError, match="raw_days <= minute_days <= hour_days"):
        RetentionSettings(raw_days=30, minute_days=20, hour_days=90)


# -- the processor: rollups kept per batch, consumer lag per partition, area freshness --------


async def test_processor_keeps_rollups_and_exports_lag_per_partition_and_area_freshness(
    ns: Namespace, services: Services, dbcon: asyncpg.Connection
) -> None:
    partitions = 4  # Namespace.create_topics made the readings topic with four
    (processor,) = await services.start("processor")
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    devices = [f"{ns.device_prefix}{p}" for p in range(partitions)]
    area = f"area-{ns.suffix}"
    producer = AIOKafkaProducer(**client_options(ns.settings, KAFKA_ADMIN))
    await producer.start()
    try:
        for p, device in enumerate(devices):  # one device per partition, keyed as ingest does
            for i in range(20):
                r = reading(device, base + timedelta(seconds=10 * i), ph=6.0 + i / 10)
                await producer.send(
                    ns.readings_topic, r.to_kafka(), key=device.encode(), partition=p
                )
        await producer.flush()
    finally:
        await producer.stop()

    async def all_stored() -> bool:
        return await ns.rows(dbcon) == partitions * 20

    await wait_until(all_stored, timeout=60, what="80 rows in readings")
    # Plain path (the test stack): the batch transactions kept the rollups.
    assert await assert_rollups_match_raw(dbcon, ns.device_prefix) == partitions * 4

    def lag(p: int) -> float | None:
        labels = f'partition="{p}",topic="{ns.readings_topic}"'  # exposition sorts labels
        return processor.metrics().get(f"citywatch_processor_consumer_lag{{{labels}}}")

    async def lag_zero_everywhere() -> bool:
        return all(lag(p) == 0.0 for p in range(partitions))

    await wait_until(lag_zero_everywhere, timeout=30, what="a lag gauge of 0 per partition")
    assert await ns.committed(f"processor-{ns.suffix}", ns.readings_topic) == partitions * 20

    # The registry gives the devices an area: its newest reading time is exported.
    await dbcon.execute(
        "UPDATE devices SET area = $1 WHERE device_id = ANY($2::text[])", area, devices
    )
    newest = (base + timedelta(seconds=190)).timestamp()

    async def area_exported() -> bool:
        key = f'citywatch_area_last_reading_timestamp_seconds{{area="{area}"}}'
        return processor.metrics().get(key) == newest

    await wait_until(area_exported, timeout=30, what=f"the newest reading time of {area}")
