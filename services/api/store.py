"""The read API's SQL: devices with their latest values, readings raw and bucketed, open data.

Every query is bounded by its caller (time range, page size) and served by an index: the
readings key `(device_id, metric, time)`, `device_latest`'s key, `alerts_by_state`.

Bucketed queries read the minute and hour rollups (`readings_1m`, `readings_1h`) when the
database has them and computes from `readings` with `date_bin` otherwise. `Rollups` is the
one place that switch lives: it is detected once per connection pool, from the catalog.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.common.db import Conn

__all__ = [
    "BucketRow",
    "RawRow",
    "RollupTable",
    "Rollups",
    "active_alerts",
    "bucketed_readings",
    "detect_rollups",
    "devices",
    "hourly_aggregates",
    "raw_readings",
]

# date_bin needs an origin; a Monday at UTC midnight keeps days and hours on the clock.
_ORIGIN = datetime.fromisoformat("2000-01-03T00:00:00+00:00")

# Device health and latest values in one pass. `newest` is the newest reading time among
# its latest values: a device that still talks (last_seen recent) while `newest` stands
# still is stuck (a frozen clock, a replaying buffer).
_DEVICES = """
SELECT d.device_id, d.kind, d.name, d.area, d.lat, d.lon, d.status AS registry_status,
       d.drinking_water, d.first_seen, d.last_seen, d.last_reading_at,
       CASE WHEN d.last_seen IS NULL OR d.last_seen < now() - make_interval(secs => $3)
                THEN 'offline'
            WHEN COALESCE(l.newest, d.last_reading_at) < now() - make_interval(secs => $4)
                THEN 'stuck'
            ELSE 'online' END AS conn,
       -- A device's own alert, or its area's alert of its kind (flood levels and combined
       -- rules raise one alert per area, with no device): the area's gauges are in alert.
       EXISTS (SELECT 1 FROM alerts a
               WHERE a.state <> 'resolved'
                 AND (a.device_id = d.device_id
                      OR (a.device_id IS NULL AND a.area = d.area AND a.kind = d.kind))
              ) AS in_alert,
       COALESCE(l.latest, '{}') AS latest,
       -- Its latest refusal by the gateway, when newer than anything stored from it: a
       -- device that talks but is refused (services/ingest/refusals.py).
       CASE WHEN f.last_at > COALESCE(d.last_seen, '-infinity') THEN
           json_build_object('reason', f.reason, 'detail', f.detail, 'at', f.last_at,
                             'count', f.count)::text
       END AS refused
FROM devices d
LEFT JOIN device_refusals f USING (device_id)
LEFT JOIN LATERAL (
    SELECT max(dl.time) AS newest,
           json_object_agg(dl.metric, json_build_object(
               'value', dl.value, 'time', dl.time, 'quality', COALESCE(r.quality, 2)))::text
               AS latest
    FROM device_latest dl
    LEFT JOIN readings r
           ON r.device_id = dl.device_id AND r.metric = dl.metric AND r.time = dl.time
    WHERE dl.device_id = d.device_id) AS l ON true
WHERE ($1::text IS NULL OR d.kind = $1) AND ($2::text IS NULL OR d.device_id = $2)
ORDER BY d.device_id
"""


async def devices(
    con: Conn,
    *,
    kind: str | None = None,
    device_id: str | None = None,
    offline_after_s: float,
    stuck_after_s: float,
) -> list[dict[str, Any]]:
    """Every device (of a kind, or one), with `conn` (online/offline/stuck), `in_alert`,
    `latest` = {metric: {value, time, quality}} and `refused` = {reason, detail, at, count}
    (the gateway's latest refusal of its messages, when newer than its last reading)."""
    rows = await con.fetch(_DEVICES, kind, device_id, offline_after_s, stuck_after_s)
    out = []
    for r in rows:
        d = dict(r)
        d["latest"] = json.loads(r["latest"])
        d["refused"] = json.loads(r["refused"]) if r["refused"] is not None else None
        out.append(d)
    return out


async def active_alerts(con: Conn, limit: int = 500) -> list[dict[str, Any]]:
    rows = await con.fetch(
        """SELECT a.alert_id::text, a.rule_id, a.device_id, a.kind, a.metric, a.severity,
                  a.state, a.value, a.last_value, a.threshold, a.started_at, a.updated_at,
                  a.title_en, a.title_km, a.area AS alert_area, a.rule_type, a.status,
                  a.audience, COALESCE(d.drinking_water, false) AS drinking_water,
                  d.name AS device_name
           FROM alerts a LEFT JOIN devices d USING (device_id)
           WHERE a.state <> 'resolved' ORDER BY a.started_at DESC LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]


# -- raw readings -------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRow:
    time: datetime
    metric: str
    value: float
    quality: int


async def raw_readings(
    con: Conn,
    *,
    device: str,
    metric: str | None,
    start: datetime,
    end: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[RawRow]:
    """One device's readings in [start, end), ordered by (time, metric), after a keyset
    cursor: stable pages even while new readings arrive."""
    after_t, after_m = after if after else (None, None)
    rows = await con.fetch(
        """SELECT time, metric, value, quality FROM readings
           WHERE device_id = $1 AND ($2::text IS NULL OR metric = $2)
             AND time >= $3 AND time < $4
             AND ($5::timestamptz IS NULL OR (time, metric) > ($5, $6::text))
           ORDER BY time, metric LIMIT $7""",
        device,
        metric,
        start,
        end,
        after_t,
        after_m,
        limit,
    )
    return [RawRow(r["time"], r["metric"], r["value"], r["quality"]) for r in rows]


# -- rollups: the one switch between rollup tables and raw readings --------------------------


@dataclass(frozen=True)
class RollupTable:
    """A rollup table's name and its columns, as found in the catalog."""

    name: str
    width: timedelta
    time_col: str
    min_col: str
    avg_col: str
    max_col: str
    count_col: str | None


@dataclass(frozen=True)
class Rollups:
    """Which rollup tables this database has (none: every bucket comes from `readings`)."""

    tables: tuple[RollupTable, ...] = ()

    def source(self, bucket: timedelta) -> tuple[str, str, str, str, str, str]:
        """(FROM table, time column, min, avg, max, count) for a bucket width, columns
        qualified with the alias `x`: the widest rollup whose width divides the bucket, else
        the raw readings."""
        for t in sorted(self.tables, key=lambda t: t.width, reverse=True):
            if bucket >= t.width and bucket % t.width == timedelta(0):
                n = f"x.{t.count_col}" if t.count_col else None
                return (
                    t.name,
                    f"x.{t.time_col}",
                    f"min(x.{t.min_col})",
                    f"sum(x.{t.avg_col} * {n}) / nullif(sum({n}), 0)"
                    if n
                    else f"avg(x.{t.avg_col})",
                    f"max(x.{t.max_col})",
                    f"sum({n})" if n else "count(*)",
                )
        return ("readings", "x.time", "min(x.value)", "avg(x.value)", "max(x.value)", "count(*)")


_CANDIDATES = {
    "time": ("bucket", "time", "ts"),
    "min": ("min", "min_value", "value_min"),
    "avg": ("avg", "mean", "avg_value", "value_avg"),
    "max": ("max", "max_value", "value_max"),
    "count": ("count", "n", "samples", "value_count"),
}


async def detect_rollups(con: Conn) -> Rollups:
    """Find `readings_1m` and `readings_1h` and map their columns; a table whose columns
    are not recognised is ignored (the raw path still answers, only slower)."""
    found = []
    for name, width in (("readings_1m", timedelta(minutes=1)), ("readings_1h", timedelta(hours=1))):
        if await con.fetchval("SELECT to_regclass($1)", name) is None:
            continue
        cols = {
            r["attname"]
            for r in await con.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass"
                " AND attnum > 0 AND NOT attisdropped",
                name,
            )
        }
        pick = {k: next((c for c in v if c in cols), None) for k, v in _CANDIDATES.items()}
        if not {"device_id", "metric"} <= cols or None in (
            pick["time"],
            pick["min"],
            pick["avg"],
            pick["max"],
        ):
            continue
        found.append(
            RollupTable(
                name,
                width,
                f'"{pick["time"]}"',
                f'"{pick["min"]}"',
                f'"{pick["avg"]}"',
                f'"{pick["max"]}"',
                f'"{pick["count"]}"' if pick["count"] else None,
            )
        )
    return Rollups(tuple(found))


@dataclass(frozen=True)
class BucketRow:
    bucket: datetime
    metric: str
    min: float
    avg: float
    max: float
    count: int


async def bucketed_readings(
    con: Conn,
    rollups: Rollups,
    *,
    device: str,
    metric: str | None,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[BucketRow]:
    """min/avg/max/count per bucket and metric, ordered by (bucket, metric), keyset-paged."""
    table, tcol, mn, av, mx, cnt = rollups.source(bucket)
    after_t, after_m = after if after else (None, None)
    # Only identifiers from the catalog (quoted) and fixed expressions are interpolated.
    sql = f"""
        SELECT * FROM (
            SELECT date_bin($3::interval, {tcol}, $8::timestamptz) AS bucket, x.metric,
                   {mn} AS min, {av} AS avg, {mx} AS max, {cnt}::bigint AS count
            FROM {table} AS x
            WHERE x.device_id = $1 AND ($2::text IS NULL OR x.metric = $2)
              AND {tcol} >= $4 AND {tcol} < $5
              AND ($6::timestamptz IS NULL OR {tcol} >= $6)
            GROUP BY 1, 2) AS b
        WHERE ($6::timestamptz IS NULL OR (bucket, metric) > ($6, $7::text))
        ORDER BY bucket, metric LIMIT $9"""
    rows = await con.fetch(
        sql, device, metric, bucket, start, end, after_t, after_m, _ORIGIN, limit
    )
    return [
        BucketRow(r["bucket"], r["metric"], r["min"], r["avg"], r["max"], r["count"]) for r in rows
    ]


async def hourly_aggregates(
    con: Conn,
    rollups: Rollups,
    *,
    device_areas: Sequence[tuple[str, str]],
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    """Open data: per hour, area, kind and metric, min/avg/max over the area's devices, the
    number of values and of devices. Battery and signal strength are device housekeeping,
    not environment, and are left out."""
    table, tcol, mn, av, mx, cnt = rollups.source(timedelta(hours=1))
    sql = f"""
        SELECT date_bin('1 hour', {tcol}, $5::timestamptz) AS hour, m.area, d.kind, x.metric,
               {mn} AS min, {av} AS avg, {mx} AS max, {cnt}::bigint AS count,
               count(DISTINCT x.device_id)::int AS devices
        FROM {table} AS x
        JOIN unnest($1::text[], $2::text[]) AS m(device_id, area) ON m.device_id = x.device_id
        JOIN devices AS d ON d.device_id = x.device_id
        WHERE {tcol} >= $3 AND {tcol} < $4
          AND x.metric NOT IN ('battery_pct', 'rssi_dbm')
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
    rows = await con.fetch(
        sql,
        [d for d, _ in device_areas],
        [a for _, a in device_areas],
        start,
        end,
        _ORIGIN,
    )
    return [dict(r) for r in rows]
