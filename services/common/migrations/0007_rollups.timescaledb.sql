-- Minute and hour aggregates per device and metric as TimescaleDB continuous aggregates.
-- The plain path has tables of the same names and columns (0007_rollups.plain.sql), so
-- the API and the dashboards query `readings_1m` / `readings_1h` on either path:
--   bucket (start, UTC-aligned), device_id, metric, min, avg, max, count
-- Values flagged QARTOD "fail" (quality 4) are left out: a broken sensor's impossible
-- values must not move a published average. Suspect values are kept, as they are real.
--
-- materialized_only = false: a query sees the materialised buckets plus the raw rows above
-- the watermark (real-time aggregation), so live dashboards never wait for a refresh.

CREATE MATERIALIZED VIEW readings_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       device_id,
       metric,
       min(value) AS min,
       avg(value) AS avg,
       max(value) AS max,
       count(*)   AS count
FROM readings
WHERE quality <> 4
GROUP BY bucket, device_id, metric
WITH NO DATA;

-- Straight from `readings`, not from readings_1m: one level, and the hour's avg is exact.
CREATE MATERIALIZED VIEW readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket,
       device_id,
       metric,
       min(value) AS min,
       avg(value) AS avg,
       max(value) AS max,
       count(*)   AS count
FROM readings
WHERE quality <> 4
GROUP BY bucket, device_id, metric
WITH NO DATA;

-- Retention drops whole chunks, so the chunk interval is the granularity with which
-- aggregates past their retention go: a day for minutes, a week for hours.
SELECT set_chunk_time_interval('readings_1m', INTERVAL '1 day');
SELECT set_chunk_time_interval('readings_1h', INTERVAL '7 days');

-- Refresh policies re-aggregate the recent past, where late and buffered readings land.
-- Older late readings are caught by `citywatch db maintain`, which refreshes the whole
-- retained range. start_offset (3 days at most) stays below the shortest raw retention
-- that settings allow (4 days): refreshing where raw chunks were dropped would empty it.
SELECT add_continuous_aggregate_policy('readings_1m',
    start_offset => INTERVAL '2 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');

-- Compression layout (which chunks, and when, is `citywatch db maintain`'s business): one
-- segment per series, newest first, matching the key and the "recent values" lookups.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'time DESC');
