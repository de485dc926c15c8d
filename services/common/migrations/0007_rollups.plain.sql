-- Minute and hour aggregates per device and metric as plain tables, with the names and
-- columns of the TimescaleDB continuous aggregates (0007_rollups.timescaledb.sql):
--   bucket (start, UTC-aligned), device_id, metric, min, avg, max, count
-- Values flagged QARTOD "fail" (quality 4) are left out on both paths.
--
-- The processor keeps them up to date: in each batch's transaction, after the readings,
-- it recomputes every bucket the batch touched from `readings` (minutes) and from
-- `readings_1m` (hours) and upserts the result (services/common/maintenance.py,
-- refresh_rollups). Recomputing instead of adding makes a redelivered batch change
-- nothing and a late reading land in its own bucket. `citywatch db maintain` deletes
-- rows past their retention.

CREATE TABLE readings_1m (
    bucket    timestamptz NOT NULL,
    device_id text NOT NULL,
    metric    text NOT NULL,
    min       double precision NOT NULL,
    avg       double precision NOT NULL,
    max       double precision NOT NULL,
    count     bigint NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_1m_bucket ON readings_1m (bucket);

-- Same columns, key and bucket index.
CREATE TABLE readings_1h (LIKE readings_1m INCLUDING ALL);

-- Readings stored before this migration: aggregate them once.
INSERT INTO readings_1m (bucket, device_id, metric, min, avg, max, count)
SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
       device_id, metric, min(value), avg(value), max(value), count(*)
FROM readings
WHERE quality <> 4
GROUP BY 1, 2, 3;

INSERT INTO readings_1h (bucket, device_id, metric, min, avg, max, count)
SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
       device_id, metric, min(value), avg(value), max(value), count(*)
FROM readings
WHERE quality <> 4
GROUP BY 1, 2, 3;
