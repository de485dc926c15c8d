"""All database access goes through here: pools, migrations, the bulk reading writer.

Writes are bulk (`unnest` arrays, one statement per table per batch) and idempotent
(`ON CONFLICT DO NOTHING` on the natural key), so a redelivered batch changes nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from schemas import Reading
from services.common.errors import DatabaseUnavailable, StateError

log = logging.getLogger(__name__)

# A connection of our own or one lent by a pool: every query helper takes either.
Conn = asyncpg.Connection | PoolConnectionProxy

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
StoragePath = Literal["timescaledb", "plain"]
# Any fixed 64-bit number: serialises concurrent `citywatch db migrate` runs.
_MIGRATION_LOCK = 0x43_57_4D_49_47  # "CWMIG"

# Errors that mean "the database is not there right now", as opposed to a bug in our SQL.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # "cannot switch to state ...; another operation is in progress": a pooled connection
    # whose query was cancelled while PostgreSQL went down (seen once in CI, the processor
    # then exited). An outage like the others; the connection itself is unusable
    # (`discard_if_broken`).
    asyncpg.InternalClientError,
)

__all__ = [
    "CONNECTION_ERRORS",
    "Conn",
    "StoredBatch",
    "connect",
    "create_pool",
    "discard_if_broken",
    "drift_bucket_means",
    "migrate",
    "migrate_database",
    "qc_overrides",
    "recent_values",
    "storage_path",
    "store_readings",
]


def discard_if_broken(con: Conn, exc: BaseException) -> None:
    """Close a pooled connection that a protocol-state error left unusable, so the pool
    opens a fresh one instead of handing it out again (call before the pool takes it back)."""
    if isinstance(exc, asyncpg.InternalClientError):
        con.terminate()


async def connect(dsn: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable("postgresql", f"cannot connect: {exc}") from exc


@asynccontextmanager
async def create_pool(dsn: str, *, max_size: int = 4) -> AsyncIterator[asyncpg.Pool]:
    """A pool that opens connections lazily (min_size=0), so a service can start while the
    database is down and report not-ready instead of crashing."""
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=max_size, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


# -- migrations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(plain|timescaledb))?\.sql$")


def _migrations_for(storage: StoragePath) -> list[Migration]:
    chosen: dict[int, Migration] = {}
    for file in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = _NAME.match(file.name)
        if not m:
            raise StateError(f"migration file {file.name} does not match NNNN_name[.path].sql")
        variant = m.group(3)
        if variant is None or variant == storage:
            chosen[int(m.group(1))] = Migration(int(m.group(1)), m.group(2), file)
    return [chosen[v] for v in sorted(chosen)]


async def timescaledb_available(con: asyncpg.Connection) -> bool:
    row = await con.fetchval(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    return bool(row)


async def storage_path(con: Conn) -> StoragePath | None:
    """Which path this database was migrated onto, or None before the first migration."""
    if await con.fetchval("SELECT to_regclass('citywatch_storage')") is None:
        return None
    path = await con.fetchval("SELECT path FROM citywatch_storage")
    return "timescaledb" if path == "timescaledb" else "plain"


async def migrate(con: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet applied, each in its own transaction, under an advisory
    lock so that concurrent runs apply each file exactly once. Returns what was applied."""
    await con.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await con.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   path       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        storage = await storage_path(con)
        if storage is None:
            storage = "timescaledb" if await timescaledb_available(con) else "plain"
        done = {r["version"] for r in await con.fetch("SELECT version FROM schema_migrations")}
        applied: list[str] = []
        for mig in _migrations_for(storage):
            if mig.version in done:
                continue
            async with con.transaction():
                await con.execute(mig.path.read_text())
                await con.execute(
                    "INSERT INTO schema_migrations (version, name, path) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    storage,
                )
            log.info(
                "migration applied", extra={"version": mig.version, "migration": mig.path.name}
            )
            applied.append(mig.path.name)
        return applied
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


async def migrate_database(dsn: str) -> tuple[list[str], StoragePath | None]:
    """Connect, migrate, and say what was applied and which storage path the database uses."""
    con = await connect(dsn)
    try:
        applied = await migrate(con)
        return applied, await storage_path(con)
    finally:
        await con.close()


async def ensure_partitions(con: Conn, days_behind: int = 1, days_ahead: int = 7) -> int:
    created = await con.fetchval(
        "SELECT citywatch_ensure_partitions(current_date - $1::int, current_date + $2::int)",
        days_behind,
        days_ahead,
    )
    return int(created or 0)


# -- the readings writer ----------------------------------------------------------------


@dataclass(frozen=True)
class StoredBatch:
    readings: int
    rows_offered: int
    rows_inserted: int  # fewer than offered when a batch is redelivered: duplicates are skipped
    # Rows inserted, by (metric, QARTOD flag); rows whose flag a reflag made worse, likewise.
    flags: dict[tuple[str, int], int] = field(default_factory=dict)
    reflagged: dict[tuple[str, int], int] = field(default_factory=dict)
    # With `rollups`: rows stored earlier that a reflag made fail, whose rollup buckets must
    # be recomputed without them (maintenance.refresh_rollups).
    failed: list[tuple[str, str, datetime]] = field(default_factory=list)


# Each row carries its QARTOD flag. A redelivered row conflicts and keeps the flag it was
# stored with; RETURNING counts only the rows this statement inserted.
_INSERT_READINGS = """
WITH ins AS (
    INSERT INTO readings (time, device_id, metric, value, quality)
    SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::float8[], $5::int2[])
    ON CONFLICT DO NOTHING
    RETURNING time, device_id, metric, value, quality){rollups}
SELECT metric, quality, count(*)::int AS n FROM ins GROUP BY metric, quality
"""

# The plain path's rollups (migration 0007), kept incrementally in the same statement: the
# rows this statement inserted (never a redelivered one, which conflicts and is not
# returned) are aggregated per series and bucket and merged into what the bucket holds:
# min/max by LEAST/GREATEST, count added, avg weighted by the counts. So a redelivered
# batch merges nothing and a late reading lands in its own bucket, as with a recompute,
# without reading back the bucket's stored rows. Fail values (quality 4) stay out; a
# reflag to fail takes a value out again, and only that needs a recompute
# (maintenance.refresh_rollups of `StoredBatch.failed`). Rows in key order: a fixed lock
# order. Both rollups straight from the inserted rows: the hour's avg is exact, up to
# floating-point rounding.
_MERGE_ROLLUP = """,
{name} AS (
    INSERT INTO {name} AS x (bucket, device_id, metric, min, avg, max, count)
    SELECT date_bin(INTERVAL '{width}', time, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           device_id, metric, min(value), avg(value), max(value), count(*)
    FROM ins WHERE quality <> 4
    GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
    ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
        min = LEAST(x.min, EXCLUDED.min),
        max = GREATEST(x.max, EXCLUDED.max),
        avg = (x.avg * x.count + EXCLUDED.avg * EXCLUDED.count) / (x.count + EXCLUDED.count),
        count = x.count + EXCLUDED.count)"""

_INSERT_READINGS_ROLLED = _INSERT_READINGS.format(
    rollups=_MERGE_ROLLUP.format(name="readings_1m", width="1 minute")
    + _MERGE_ROLLUP.format(name="readings_1h", width="1 hour")
)
_INSERT_READINGS = _INSERT_READINGS.format(rollups="")

# A later verdict (the centred spike test, once a value's right neighbour arrived) only
# ever makes a stored flag worse, ranking not evaluated (2) below pass (1): applying the
# same verdict twice changes nothing.
_REFLAG_READINGS = """
WITH upd AS (
    UPDATE readings AS r SET quality = u.q
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int2[]) AS u(d, m, t, q)
    WHERE r.device_id = u.d AND r.metric = u.m AND r.time = u.t
      AND (CASE WHEN r.quality = 2 THEN 0 ELSE r.quality END)
        < (CASE WHEN u.q = 2 THEN 0 ELSE u.q END)
    RETURNING r.device_id, r.metric, r.time, r.quality)
SELECT device_id, metric, time, quality FROM upd
"""

# Not evaluated: the default of the `quality` column, for rows nobody judged; fail: the
# flag whose values stay out of the rollups.
_NOT_EVALUATED = 2
_FAIL = 4

_UPSERT_DEVICES = """
INSERT INTO devices (device_id, kind, lat, lon, first_seen, last_seen, last_reading_at)
SELECT d, k, la, lo, s, s, r
FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[],
            $5::timestamptz[], $6::timestamptz[]) AS u(d, k, la, lo, s, r)
ON CONFLICT (device_id) DO UPDATE SET
    first_seen      = COALESCE(devices.first_seen, EXCLUDED.first_seen),
    last_seen       = GREATEST(devices.last_seen, EXCLUDED.last_seen),
    last_reading_at = GREATEST(devices.last_reading_at, EXCLUDED.last_reading_at),
    -- The registry's position is the truth for a registered device (issue 10): what a
    -- device reports only fills in for one nobody registered (unprovisioned).
    lat = CASE WHEN devices.status = 'unprovisioned'
               THEN COALESCE(EXCLUDED.lat, devices.lat) ELSE devices.lat END,
    lon = CASE WHEN devices.status = 'unprovisioned'
               THEN COALESCE(EXCLUDED.lon, devices.lon) ELSE devices.lon END
"""

# `WHERE device_latest.time < EXCLUDED.time`: latest by reading time, never by arrival.
_UPSERT_LATEST = """
INSERT INTO device_latest (device_id, metric, time, value)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[])
ON CONFLICT (device_id, metric) DO UPDATE SET time = EXCLUDED.time, value = EXCLUDED.value
WHERE device_latest.time < EXCLUDED.time
"""


async def store_readings(
    con: Conn,
    readings: Sequence[Reading],
    *,
    flags: Mapping[tuple[str, str, datetime], int] | None = None,
    reflags: Sequence[tuple[str, str, datetime, int]] = (),
    rollups: bool = False,
) -> StoredBatch:
    """Write a batch of readings; call inside a transaction so the batch is all or nothing.

    `flags` gives each row's QARTOD flag by (device, metric, time), 2 where absent;
    `reflags` raise the flags of rows stored earlier (see `_REFLAG_READINGS`). `rollups`
    (the plain path, where the processor keeps them): the inserted rows are merged into
    the minute and hour rollups in the same statement (`_MERGE_ROLLUP`); the caller then
    recomputes the buckets of `StoredBatch.failed`.
    """
    times: list[datetime] = []
    devices: list[str] = []
    metrics: list[str] = []
    values: list[float] = []
    quality: list[int] = []
    flag_of = flags or {}
    # Per device: the facts for `devices`; per (device, metric): the newest value. Reduced
    # here because one statement may not update the same row twice.
    seen: dict[str, tuple[str, float | None, float | None, datetime, datetime]] = {}
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    for r in readings:
        for metric, value in r.metrics.items():
            times.append(r.time)
            devices.append(r.device_id)
            metrics.append(metric)
            values.append(value)
            quality.append(flag_of.get((r.device_id, metric, r.time), _NOT_EVALUATED))
            key = (r.device_id, metric)
            if key not in latest or latest[key][0] < r.time:
                latest[key] = (r.time, value)
        prev = seen.get(r.device_id)
        lat = r.lat if r.lat is not None else (prev[1] if prev else None)
        lon = r.lon if r.lon is not None else (prev[2] if prev else None)
        seen[r.device_id] = (
            r.kind,
            lat,
            lon,
            max(r.received_at, prev[3]) if prev else r.received_at,
            max(r.time, prev[4]) if prev else r.time,
        )
    insert = _INSERT_READINGS_ROLLED if rollups else _INSERT_READINGS
    counted = await con.fetch(insert, times, devices, metrics, values, quality)
    by_flag = {(row["metric"], row["quality"]): row["n"] for row in counted}
    reflagged: dict[tuple[str, int], int] = {}
    failed: list[tuple[str, str, datetime]] = []
    if reflags:
        ordered = sorted(reflags)  # a fixed lock order, as for `devices` below
        changed = await con.fetch(
            _REFLAG_READINGS,
            [k[0] for k in ordered],
            [k[1] for k in ordered],
            [k[2] for k in ordered],
            [k[3] for k in ordered],
        )
        for row in changed:
            as_flag = (row["metric"], row["quality"])
            reflagged[as_flag] = reflagged.get(as_flag, 0) + 1
            if rollups and row["quality"] == _FAIL:
                failed.append((row["device_id"], row["metric"], row["time"]))
    ids = sorted(seen)  # a fixed lock order: two writers never deadlock on `devices`
    await con.execute(
        _UPSERT_DEVICES,
        ids,
        [seen[d][0] for d in ids],
        [seen[d][1] for d in ids],
        [seen[d][2] for d in ids],
        [seen[d][3] for d in ids],
        [seen[d][4] for d in ids],
    )
    keys = sorted(latest)
    await con.execute(
        _UPSERT_LATEST,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [latest[k][0] for k in keys],
        [latest[k][1] for k in keys],
    )
    return StoredBatch(
        readings=len(readings),
        rows_offered=len(times),
        rows_inserted=sum(by_flag.values()),
        flags=by_flag,
        reflagged=reflagged,
        failed=failed,
    )


# A series' newest stored values since a time, newest first, at most `$4` per series: the
# primary key (device_id, metric, time) serves each lookup, and `since` prunes partitions.
_RECENT_VALUES = """
SELECT k.d AS device_id, k.m AS metric, r.time, r.value
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(d, m, since)
CROSS JOIN LATERAL (
    SELECT time, value FROM readings
    WHERE device_id = k.d AND metric = k.m AND time >= k.since
    ORDER BY time DESC LIMIT $4) AS r
"""


async def recent_values(
    con: Conn, since: Mapping[tuple[str, str], datetime], per_series: int
) -> dict[tuple[str, str], list[tuple[datetime, float]]]:
    """The newest stored `(time, value)`s of each (device, metric) since its time, at most
    `per_series` each; every asked series is in the answer (empty when nothing is stored)."""
    keys = sorted(since)
    rows = await con.fetch(
        _RECENT_VALUES,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [since[k] for k in keys],
        per_series,
    )
    out: dict[tuple[str, str], list[tuple[datetime, float]]] = {k: [] for k in keys}
    for row in rows:
        out[(row["device_id"], row["metric"])].append((row["time"], row["value"]))
    return out


_DRIFT_BUCKETS = """
SELECT r.device_id, d.area, d.kind, r.metric,
       extract(epoch FROM date_bin(make_interval(secs => $1), r.time,
                                   TIMESTAMPTZ '2000-01-01 00:00:00+00'))::float8 AS bucket,
       avg(r.value) AS mean
FROM devices d
JOIN readings r ON r.device_id = d.device_id
 AND r.time > d.last_reading_at - make_interval(secs => $2)
 AND r.time <= d.last_reading_at
WHERE d.area IS NOT NULL AND r.quality <> 4 AND r.metric = ANY($3::text[])
GROUP BY 1, 2, 3, 4, 5
"""


async def drift_bucket_means(
    con: Conn, bucket_s: float, window_s: float, metrics: Sequence[str]
) -> tuple[dict[tuple[str, str], dict[float, float]], dict[str, tuple[str, str]]]:
    """What the drift check (services/quality/drift.py) judges, in one query: per
    (device, metric) of `metrics`, the means of `bucket_s` buckets of reading time over the
    `window_s` before the device's newest reading (values flagged fail left out), and each
    device's (area, kind). Devices with no area are not in it."""
    rows = await con.fetch(_DRIFT_BUCKETS, bucket_s, window_s, list(metrics))
    means: dict[tuple[str, str], dict[float, float]] = {}
    places: dict[str, tuple[str, str]] = {}
    for row in rows:
        means.setdefault((row["device_id"], row["metric"]), {})[row["bucket"]] = row["mean"]
        places[row["device_id"]] = (row["area"], row["kind"])
    return means, places


async def qc_overrides(con: Conn) -> list[tuple[str, str, dict[str, Any]]]:
    """Every device with QARTOD overrides: `(device_id, kind, qc_overrides)`."""
    rows = await con.fetch(
        "SELECT device_id, kind, qc_overrides::text AS o FROM devices"
        " WHERE qc_overrides <> '{}'::jsonb ORDER BY device_id"
    )
    return [(row["device_id"], row["kind"], json.loads(row["o"])) for row in rows]
