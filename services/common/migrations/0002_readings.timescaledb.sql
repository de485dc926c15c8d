-- TimescaleDB: the same narrow readings table as a hypertable with daily chunks.
-- Chunks are created on insert for any time, so no partition upkeep is needed.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE readings (
    time      timestamptz NOT NULL,
    device_id text NOT NULL,
    metric    text NOT NULL,
    value     double precision NOT NULL,
    quality   smallint NOT NULL DEFAULT 2,  -- IOOS QARTOD flag: 1 pass, 2 not evaluated, 3 suspect, 4 fail
    PRIMARY KEY (device_id, metric, time)
);

SELECT create_hypertable('readings', 'time', chunk_time_interval => INTERVAL '1 day');

-- Same signature as the plain path, so callers need not know which path they run on.
CREATE FUNCTION citywatch_ensure_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;

CREATE VIEW citywatch_storage AS SELECT 'timescaledb'::text AS path;
