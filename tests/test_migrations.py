"""Migrations against real databases: both storage paths, from an empty database.

Plain PostgreSQL: the test PostgreSQL of the stack, one brand-new database per scenario
(`citywatch_mig_<uuid8>`, dropped afterwards). TimescaleDB: the PGlite + TimescaleDB
wire-protocol server in deploy/pglite, started as a subprocess (it serves one connection
at a time, so every test opens one connection and closes it before the next).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

import asyncpg
import pytest

from schemas import Reading
from services.common import db
from tests.fixtures_databases import FreshDatabases, connected, pglite
from tests.harness import wait_until

pytestmark = pytest.mark.stack


def files_for(path: str) -> list[str]:
    """The migration files a database on `path` must get: the shared ones and its own variant
    of each per-path file (`NNNN_name.plain.sql` / `NNNN_name.timescaledb.sql`)."""
    names = sorted(p.name for p in db.MIGRATIONS_DIR.glob("*.sql"))
    return [n for n in names if n.count(".") == 1 or n.endswith(f".{path}.sql")]


PLAIN_FILES = files_for("plain")
TIMESCALE_FILES = files_for("timescaledb")
assert (
    "0002_readings.plain.sql" in PLAIN_FILES and "0002_readings.timescaledb.sql" in TIMESCALE_FILES
)


def recorded(files: list[str], path: str) -> list[tuple[int, str, str]]:
    """The schema_migrations rows that applying `files` on `path` must leave."""
    return [(int(f[:4]), f[5:].split(".")[0], path) for f in files]


def noon_utc(day: date) -> datetime:
    """Midday UTC: far from any day boundary, whatever the session time zone."""
    return datetime.combine(day, dtime(12), UTC)


def reading(device: str, at: datetime, **metrics: float) -> Reading:
    return Reading(
        device_id=device,
        kind="water",
        time=at,
        received_at=datetime.now(UTC),
        metrics=metrics or {"ph": 7.0},
    )


async def store(con: asyncpg.Connection, readings: list[Reading]) -> db.StoredBatch:
    async with con.transaction():
        return await db.store_readings(con, readings)


# -- plain PostgreSQL: fresh databases on the test stack (tests/fixtures_databases.py) -----


@dataclass(frozen=True)
class Migrated:
    dsn: str
    first_run: list[str]


@pytest.fixture(scope="module")
async def plain_db(fresh_databases: FreshDatabases) -> Migrated:
    """A brand-new database on the plain path, migrated once (what that run applied)."""
    dsn = await fresh_databases.create()
    async with connected(dsn) as con:
        assert not await db.timescaledb_available(con), (
            "the test PostgreSQL offers timescaledb: these tests need the plain path"
        )
        assert await db.storage_path(con) is None
        return Migrated(dsn, await db.migrate(con))


async def partition_of(con: asyncpg.Connection, device: str, at: datetime) -> str:
    return str(
        await con.fetchval(
            "SELECT tableoid::regclass::text FROM readings WHERE device_id = $1 AND time = $2",
            device,
            at,
        )
    )


async def test_plain_migration_applies_core_and_partitioned_readings_once(
    plain_db: Migrated,
) -> None:
    assert plain_db.first_run == PLAIN_FILES
    async with connected(plain_db.dsn) as con:
        assert await db.migrate(con) == []
        assert await db.storage_path(con) == "plain"
        rows = await con.fetch("SELECT version, name, path FROM schema_migrations ORDER BY 1")
        assert [tuple(r) for r in rows] == recorded(PLAIN_FILES, "plain")
        assert (
            await con.fetchval(
                "SELECT c.relkind::text FROM pg_class c "
                "JOIN pg_partitioned_table p ON p.partrelid = c.oid "
                "WHERE c.oid = 'readings'::regclass"
            )
            == "p"
        )
        default = await con.fetchval(
            "SELECT p.partdefid::regclass::text FROM pg_partitioned_table p "
            "WHERE p.partrelid = 'readings'::regclass"
        )
        assert default == "readings_default"


async def test_plain_readings_400_days_past_and_30_days_ahead_are_stored_in_default(
    plain_db: Migrated,
) -> None:
    today = datetime.now(UTC).date()
    device = f"mig-{uuid.uuid4().hex[:8]}"
    past = noon_utc(today - timedelta(days=400))
    future = noon_utc(today + timedelta(days=30))
    async with connected(plain_db.dsn) as con:
        stored = await store(con, [reading(device, past, ph=6.5), reading(device, future, ph=8.25)])
        assert (stored.rows_offered, stored.rows_inserted) == (2, 2)
        rows = await con.fetch(
            "SELECT time, value, tableoid::regclass::text AS part FROM readings "
            "WHERE device_id = $1 AND metric = 'ph' ORDER BY time",
            device,
        )
        assert [(r["time"], r["value"], r["part"]) for r in rows] == [
            (past, 6.5, "readings_default"),
            (future, 8.25, "readings_default"),
        ]


async def test_plain_ensure_partitions_creates_days_and_leaves_a_default_day_there(
    plain_db: Migrated,
) -> None:
    day = datetime.now(UTC).date() + timedelta(days=30)
    device = f"mig-{uuid.uuid4().hex[:8]}"
    in_default = noon_utc(day)
    async with connected(plain_db.dsn) as con:
        await store(con, [reading(device, in_default)])
        assert await partition_of(con, device, in_default) == "readings_default"

        created = await con.fetchval(
            "SELECT citywatch_ensure_partitions($1::date, $2::date)",
            day - timedelta(days=1),
            day + timedelta(days=1),
        )
        # The day before and the day after are new; the day with rows in default is skipped.
        assert created == 2
        names = {
            d: f"readings_{d:%Y%m%d}"
            for d in (day - timedelta(days=1), day, day + timedelta(days=1))
        }
        parts = {
            r[0]
            for r in await con.fetch(
                "SELECT inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent = 'readings'::regclass"
            )
        }
        assert names[day - timedelta(days=1)] in parts
        assert names[day + timedelta(days=1)] in parts
        assert names[day] not in parts
        # The skipped day's reading stays where it is, still readable through `readings`.
        assert await partition_of(con, device, in_default) == "readings_default"

        # The new partitions take their UTC day.
        for d in (day - timedelta(days=1), day + timedelta(days=1)):
            at = noon_utc(d)
            await store(con, [reading(device, at)])
            assert await partition_of(con, device, at) == names[d]
        # Running it again creates nothing more (and still leaves the default day alone).
        assert (
            await con.fetchval(
                "SELECT citywatch_ensure_partitions($1::date, $2::date)",
                day - timedelta(days=1),
                day + timedelta(days=1),
            )
            == 0
        )


async def test_concurrent_migrations_both_succeed_and_apply_each_version_once(
    fresh_databases: FreshDatabases,
) -> None:
    dsn = await fresh_databases.create()
    async with connected(dsn) as holder, connected(dsn) as a, connected(dsn) as b:
        # Hold the migration lock so that both runs are provably waiting at the same time.
        await holder.execute("SELECT pg_advisory_lock($1)", db._MIGRATION_LOCK)
        runs = [asyncio.create_task(db.migrate(con)) for con in (a, b)]
        pids = [a.get_server_pid(), b.get_server_pid()]

        async def both_waiting() -> bool:
            waiting = await holder.fetchval(
                "SELECT count(DISTINCT pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND NOT granted AND pid = ANY($1::int[])",
                pids,
            )
            return waiting == 2

        try:
            await wait_until(both_waiting, timeout=30, what="both migrations wait on the lock")
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", db._MIGRATION_LOCK)
            async with asyncio.timeout(60):
                results = await asyncio.gather(*runs, return_exceptions=True)

        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"a concurrent migration failed: {errors!r}"
        assert sorted(results, key=len) == [[], PLAIN_FILES]
        rows = await holder.fetch(
            "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version ORDER BY 1"
        )
        assert [(r["version"], r["n"]) for r in rows] == [
            (v, 1) for v, _, _ in recorded(PLAIN_FILES, "plain")
        ]
        assert await db.storage_path(holder) == "plain"


# -- TimescaleDB: the PGlite wire-protocol server (tests/fixtures_databases.py) ------------


@pytest.fixture(scope="module")
async def timescale_db(pglite_port: int) -> Migrated:
    async with pglite(pglite_port) as con:
        assert await db.timescaledb_available(con)
        assert await db.storage_path(con) is None
        return Migrated(str(pglite_port), await db.migrate(con))


async def test_timescaledb_migration_chooses_hypertable_path_and_is_idempotent(
    timescale_db: Migrated, pglite_port: int
) -> None:
    assert timescale_db.first_run == TIMESCALE_FILES
    async with pglite(pglite_port) as con:
        assert await db.migrate(con) == []
        assert await db.storage_path(con) == "timescaledb"
        rows = await con.fetch("SELECT version, name, path FROM schema_migrations ORDER BY 1")
        assert [tuple(r) for r in rows] == recorded(TIMESCALE_FILES, "timescaledb")
        hypertables = await con.fetch(
            "SELECT hypertable_name FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'public'"
        )
        assert [r[0] for r in hypertables] == ["readings"]


async def test_timescaledb_redelivered_batch_inserts_nothing_and_latest_follows_reading_time(
    timescale_db: Migrated, pglite_port: int
) -> None:
    device = f"mig-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(microsecond=0)
    older, newer = now - timedelta(minutes=10), now - timedelta(minutes=5)
    batch = [
        reading(device, older, ph=7.0, turbidity=1.5),
        reading(device, newer, ph=7.5, turbidity=2.5),
    ]
    async with pglite(pglite_port) as con:
        first = await store(con, batch)
        assert (first.rows_offered, first.rows_inserted) == (4, 4)
        again = await store(con, batch)  # redelivered: the natural key skips every row
        assert (again.rows_offered, again.rows_inserted) == (4, 0)
        assert await con.fetchval("SELECT count(*) FROM readings WHERE device_id = $1", device) == 4

        # A reading older than what device_latest holds arrives late: it is stored, but the
        # latest value stays the newest by reading time.
        late = now - timedelta(hours=1)
        stored = await store(con, [reading(device, late, ph=9.9)])
        assert stored.rows_inserted == 1
        latest = await con.fetch(
            "SELECT metric, time, value FROM device_latest WHERE device_id = $1 ORDER BY metric",
            device,
        )
        assert [tuple(r) for r in latest] == [("ph", newer, 7.5), ("turbidity", newer, 2.5)]
        assert (
            await con.fetchval("SELECT last_reading_at FROM devices WHERE device_id = $1", device)
            == newer
        )

        # A newer reading does replace it.
        newest = now
        await store(con, [reading(device, newest, ph=6.0)])
        assert (
            await con.fetchval(
                "SELECT value FROM device_latest WHERE device_id = $1 AND metric = 'ph'", device
            )
            == 6.0
        )


async def test_timescaledb_ensure_partitions_is_a_no_op(
    timescale_db: Migrated, pglite_port: int
) -> None:
    async with pglite(pglite_port) as con:
        assert await db.ensure_partitions(con, days_behind=400, days_ahead=30) == 0
        assert (
            await con.fetchval(
                "SELECT citywatch_ensure_partitions(current_date - 1, current_date + 7)"
            )
            == 0
        )
