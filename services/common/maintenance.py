"""Storage upkeep: rollups on the plain path, retention and compression on both paths.

The rollups `readings_1m` and `readings_1h` (migration 0007) have the same names and
columns on both storage paths. On TimescaleDB they are continuous aggregates that refresh
themselves; on plain PostgreSQL the processor keeps them in each batch's transaction: the
insert merges its new rows into them (`db.store_readings(..., rollups=True)`), and
`refresh_rollups` recomputes the few buckets a reflag to fail took a value out of.
`maintain` (`citywatch db maintain`) applies the one retention setting
(`CITYWATCH_RETENTION__*`) to whichever path a database is on; running it again changes
nothing, so a cron job may call it as often as it likes (daily is enough). The processor
also applies it itself at start and every `retention.maintain_every_h` hours, under an
advisory lock so that only one process at a time does.

Retention counts whole UTC days: with `raw_days = 30`, raw readings from before today's
UTC midnight minus 30 days are dropped. On plain PostgreSQL that is whole daily partitions
plus the matching rows of the default partition; on TimescaleDB whole daily chunks, the
same boundary because chunks are aligned to UTC midnight. Aggregates go by whole chunks
on TimescaleDB (a day for readings_1m, a week for readings_1h) and by row on plain.

TimescaleDB caveat, by design: refreshing an aggregate over a range whose raw chunks were
dropped empties it there, so refreshes (policies and `maintain`) never reach past the raw
cutoff. A reading that arrives already older than `raw_days` is stored until the next
`maintain` drops it, but never aggregated; on the plain path its batch aggregated it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from services.common import db
from services.common.errors import StateError
from services.common.settings import RetentionSettings

log = logging.getLogger(__name__)

__all__ = [
    "ROLLUPS",
    "MaintenanceReport",
    "SeriesBucket",
    "area_last_readings",
    "failed_minutes",
    "maintain",
    "maintain_database",
    "maintain_if_free",
    "minute_of",
    "refresh_rollups",
    "retention_cutoffs",
    "rollups_by_processor",
]

Rollup = Literal["readings_1m", "readings_1h"]
ROLLUPS: tuple[Rollup, ...] = ("readings_1m", "readings_1h")

# (device_id, metric, minute bucket): one minute of one series a batch wrote into.
SeriesBucket = tuple[str, str, datetime]

# Values with this QARTOD flag (fail) stay out of the rollups on both paths.
_FAIL = 4


def minute_of(t: datetime) -> datetime:
    """The start of `t`'s UTC minute: the bucket time_bucket('1 minute', t) gives."""
    return t.astimezone(UTC).replace(second=0, microsecond=0)


# -- plain path: rollups kept by the processor -----------------------------------------------

# Recompute each touched minute from `readings`, then write it: an upsert where values
# remain, a delete where none do (every value of the minute was later flagged fail).
# `date_bin` with a UTC origin, not `date_trunc`, so the session time zone cannot move a
# bucket (date_trunc('hour') in a +05:30 session would).
_REFRESH_1M = """
WITH touched AS (
    SELECT DISTINCT d, m, b FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS t(d, m, b)),
agg AS (
    SELECT t.d, t.m, t.b,
           min(r.value) AS lo, avg(r.value) AS mean, max(r.value) AS hi, count(r.value) AS n
    FROM touched t
    LEFT JOIN readings r
      ON r.device_id = t.d AND r.metric = t.m
     AND r.time >= t.b AND r.time < t.b + INTERVAL '1 minute' AND r.quality <> 4
    GROUP BY t.d, t.m, t.b),
gone AS (
    DELETE FROM readings_1m x USING agg
    WHERE agg.n = 0 AND x.device_id = agg.d AND x.metric = agg.m AND x.bucket = agg.b)
INSERT INTO readings_1m (bucket, device_id, metric, min, avg, max, count)
SELECT b, d, m, lo, mean, hi, n FROM agg WHERE n > 0
ORDER BY d, m, b
ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
    min = EXCLUDED.min, avg = EXCLUDED.avg, max = EXCLUDED.max, count = EXCLUDED.count
"""

# Each touched hour from its (at most 60) minute rows: cheaper than rescanning an hour of
# raw rows per batch. avg = sum(avg * count) / sum(count) is the hour's exact mean, up to
# floating-point rounding.
_REFRESH_1H = """
WITH touched AS (
    SELECT DISTINCT d, m, date_bin(INTERVAL '1 hour', b, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS h
    FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS t(d, m, b)),
agg AS (
    SELECT t.d, t.m, t.h,
           min(x.min) AS lo, sum(x.avg * x.count) / nullif(sum(x.count), 0) AS mean,
           max(x.max) AS hi, coalesce(sum(x.count), 0)::bigint AS n
    FROM touched t
    LEFT JOIN readings_1m x
      ON x.device_id = t.d AND x.metric = t.m
     AND x.bucket >= t.h AND x.bucket < t.h + INTERVAL '1 hour'
    GROUP BY t.d, t.m, t.h),
gone AS (
    DELETE FROM readings_1h x USING agg
    WHERE agg.n = 0 AND x.device_id = agg.d AND x.metric = agg.m AND x.bucket = agg.h)
INSERT INTO readings_1h (bucket, device_id, metric, min, avg, max, count)
SELECT h, d, m, lo, mean, hi, n FROM agg WHERE n > 0
ORDER BY d, m, h
ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
    min = EXCLUDED.min, avg = EXCLUDED.avg, max = EXCLUDED.max, count = EXCLUDED.count
"""


def failed_minutes(failed: Iterable[tuple[str, str, datetime]]) -> list[SeriesBucket]:
    """The series-minutes of stored rows a reflag made fail (`db.StoredBatch.failed`):
    what `refresh_rollups` recomputes, since a merged value cannot be subtracted from a
    min or max. The batch's own rows were merged by the insert."""
    return [(d, metric, minute_of(t)) for d, metric, t in failed]


async def refresh_rollups(con: db.Conn, touched: Iterable[SeriesBucket]) -> int:
    """Recompute the minute and hour rollups of the touched series-minutes (plain path).

    Call it in the transaction that wrote the readings, after them: the processor calls
    it for the buckets a reflag to fail changed (`failed_minutes`). Each bucket is
    recomputed from what is stored, so running it twice writes the same numbers. Two
    processors cannot write different rows of one series at once (a device's readings
    stay on one partition; during a rebalance the second writer of the same rows waits on
    the first's row locks), so the last recompute sees every row. Returns how many minute
    buckets were recomputed.
    """
    keys = sorted(set(touched))  # a fixed lock order
    if not keys:
        return 0
    args = ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    await con.execute(_REFRESH_1M, *args)
    await con.execute(_REFRESH_1H, *args)
    return len(keys)


# -- retention and compression -------------------------------------------------------------


@dataclass(frozen=True)
class Cutoffs:
    """Per relation, the time before which its rows are past retention (UTC midnights)."""

    readings: datetime
    readings_1m: datetime
    readings_1h: datetime
    compress_before: datetime  # TimescaleDB: raw chunks entirely older are compressed


def retention_cutoffs(retention: RetentionSettings, today: date) -> Cutoffs:
    def midnight(days: int) -> datetime:
        return datetime.combine(today - timedelta(days=days), datetime.min.time(), UTC)

    return Cutoffs(
        readings=midnight(retention.raw_days),
        readings_1m=midnight(retention.minute_days),
        readings_1h=midnight(retention.hour_days),
        compress_before=midnight(retention.compress_after_days),
    )


@dataclass
class MaintenanceReport:
    """What one `maintain` run did, for the command's output and the tests."""

    storage: db.StoragePath
    cutoffs: Cutoffs
    dropped: list[str] = field(default_factory=list)  # partitions or chunks, by name
    deleted_rows: dict[str, int] = field(default_factory=dict)
    compressed: list[str] = field(default_factory=list)
    policies_changed: list[str] = field(default_factory=list)  # TimescaleDB jobs (re)created


async def maintain(
    con: db.Conn, retention: RetentionSettings, *, today: date | None = None
) -> MaintenanceReport:
    """Apply retention (and, on TimescaleDB, compression) to a migrated database.

    Idempotent: a second run finds nothing past retention and the policies as configured.
    Must not run inside a transaction: TimescaleDB refuses to refresh an aggregate in one.
    """
    storage = await db.storage_path(con)
    if storage is None:
        raise StateError("the database is not migrated yet: run `citywatch db migrate` first")
    if await con.fetchval("SELECT to_regclass('readings_1m')") is None:
        raise StateError("the rollups are missing: run `citywatch db migrate` first")
    cutoffs = retention_cutoffs(retention, today or datetime.now(UTC).date())
    report = MaintenanceReport(storage, cutoffs)
    if storage == "plain":
        await _maintain_plain(con, report)
    else:
        await _maintain_timescaledb(con, retention, report)
    log.info(
        "maintenance done",
        extra={
            "storage": storage,
            "raw_cutoff": cutoffs.readings.isoformat(),
            "dropped": len(report.dropped),
            "deleted_rows": report.deleted_rows,
            "compressed": len(report.compressed),
            "policies_changed": report.policies_changed,
        },
    )
    return report


_DAILY_PARTITION = re.compile(r"^readings_(\d{8})$")


async def _maintain_plain(con: db.Conn, report: MaintenanceReport) -> None:
    c = report.cutoffs
    async with con.transaction():
        # Dropping a partition locks `readings` briefly; never queue behind a long query
        # for long (the next run tries again).
        await con.execute("SET LOCAL lock_timeout = '10s'")
        children = await con.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'readings'::regclass ORDER BY 1"
        )
        for row in children:
            m = _DAILY_PARTITION.match(row["relname"])
            if m is None:
                continue  # readings_default: its old rows are deleted below
            day_end = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC)
            if day_end + timedelta(days=1) <= c.readings:
                await con.execute(f'DROP TABLE "{row["relname"]}"')
                report.dropped.append(row["relname"])
        # Days that never got a partition (backfills, far past) sit in the default one.
        report.deleted_rows["readings"] = _count(
            await con.execute("DELETE FROM readings_default WHERE time < $1", c.readings)
        )
        for rollup in ROLLUPS:
            report.deleted_rows[rollup] = _count(
                await con.execute(f"DELETE FROM {rollup} WHERE bucket < $1", getattr(c, rollup))
            )


def _count(status: str) -> int:
    """Rows affected, from a command tag such as 'DELETE 12'."""
    return int(status.rsplit(" ", 1)[-1])


def _literal(t: datetime) -> str:
    """A timestamptz literal. CALL refresh_continuous_aggregate() must run outside any
    transaction, and a parameterised (extended-protocol) CALL counts as one, so the
    window goes into the statement text: our own datetimes, never user input."""
    return f"TIMESTAMPTZ '{t.astimezone(UTC).isoformat()}'"


async def _maintain_timescaledb(
    con: db.Conn, retention: RetentionSettings, report: MaintenanceReport
) -> None:
    c = report.cutoffs
    # 1. Materialise every late reading still held in raw chunks, before any chunk goes.
    #    From the raw cutoff on, raw chunks always exist (drops stop at a chunk boundary
    #    at or before it), so this refresh never empties an aggregate.
    for rollup in ROLLUPS:
        await con.execute(
            f"CALL refresh_continuous_aggregate('{rollup}', {_literal(c.readings)}, NULL)"
        )
    # 2. Drop whole chunks past retention: raw, then each aggregate.
    for relation, cutoff in (
        ("readings", c.readings),
        ("readings_1m", c.readings_1m),
        ("readings_1h", c.readings_1h),
    ):
        dropped = await con.fetch(
            "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)::text AS chunk",
            relation,
            cutoff,
        )
        report.dropped += [r["chunk"] for r in dropped]
    # 3. Compress raw chunks entirely older than compress_after_days, each once.
    chunks = await con.fetch(
        "SELECT format('%I.%I', chunk_schema, chunk_name) AS chunk "
        "FROM timescaledb_information.chunks "
        "WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings' "
        "AND NOT is_compressed AND range_end <= $1 ORDER BY range_start",
        c.compress_before,
    )
    for row in chunks:
        await con.execute(
            "SELECT compress_chunk($1::regclass, if_not_compressed => true)", row["chunk"]
        )
        report.compressed.append(row["chunk"])
    # 4. The same settings as background policies, for a TimescaleDB that runs its jobs.
    policies = (
        ("policy_retention", "readings", "drop_after", retention.raw_days),
        ("policy_retention", "readings_1m", "drop_after", retention.minute_days),
        ("policy_retention", "readings_1h", "drop_after", retention.hour_days),
        ("policy_compression", "readings", "compress_after", retention.compress_after_days),
    )
    for proc, relation, key, days in policies:
        if await _ensure_policy(con, proc, relation, key, days):
            report.policies_changed.append(f"{proc}:{relation}={days}d")


async def _ensure_policy(con: db.Conn, proc: str, relation: str, key: str, days: int) -> bool:
    """Make the policy `proc` on `relation` say `key = days`; True when it had to change.

    A policy with the configured value is left as it is (same job id), so re-running
    `maintain` changes nothing; a different value is replaced.
    """
    jobs = await con.fetch(
        "SELECT job_id, (config ->> $3)::interval = make_interval(days => $4) AS same "
        "FROM timescaledb_information.jobs WHERE proc_name = $1 AND hypertable_name = $2",
        proc,
        relation,
        key,
        days,
    )
    if len(jobs) == 1 and jobs[0]["same"]:
        return False
    kind = "retention" if proc == "policy_retention" else "compression"
    if jobs:
        await con.execute(f"SELECT remove_{kind}_policy($1::regclass, if_exists => true)", relation)
    await con.execute(
        f"SELECT add_{kind}_policy($1::regclass, make_interval(days => $2))", relation, days
    )
    return True


# -- facts the processor needs and exports -------------------------------------------------


async def rollups_by_processor(con: db.Conn) -> bool:
    """Whether the processor must keep the rollups: on the plain path once migration 0007
    has made them tables (on TimescaleDB they are continuous aggregates)."""
    kind = await con.fetchval(
        "SELECT c.relkind::text FROM pg_class c "
        "WHERE c.oid = to_regclass('readings_1m') "
        "AND EXISTS (SELECT 1 FROM citywatch_storage WHERE path = 'plain')"
    )
    return bool(kind == "r")


async def area_last_readings(con: db.Conn) -> dict[str, datetime]:
    """Per area of the registry, the newest reading time of any of its devices: what the
    "no data from an area" alert watches. One small scan of `devices`."""
    rows = await con.fetch(
        "SELECT area, max(last_reading_at) AS at FROM devices "
        "WHERE area IS NOT NULL AND last_reading_at IS NOT NULL GROUP BY area"
    )
    return {row["area"]: row["at"] for row in rows}


# Held while one process applies retention: several processors (and a cron'd `citywatch db
# maintain`) may share a database, and the second one to arrive skips rather than waits.
_MAINTENANCE_LOCK = 0x43_57_4D_41_49_4E  # "CWMAIN"


async def maintain_if_free(con: db.Conn, retention: RetentionSettings) -> MaintenanceReport | None:
    """`maintain`, unless another process is applying retention right now (then None)."""
    if not await con.fetchval("SELECT pg_try_advisory_lock($1)", _MAINTENANCE_LOCK):
        return None
    try:
        return await maintain(con, retention)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", _MAINTENANCE_LOCK)


async def maintain_database(dsn: str, retention: RetentionSettings) -> MaintenanceReport:
    """Connect, apply retention and compression, and report (`citywatch db maintain`).
    Waits for a processor that is applying retention at this moment, then runs anyway:
    whoever asks by hand wants the report of a run."""
    con = await db.connect(dsn)
    try:
        await con.execute("SELECT pg_advisory_lock($1)", _MAINTENANCE_LOCK)
        return await maintain(con, retention)
    finally:
        await con.close()  # closing the session releases the lock
