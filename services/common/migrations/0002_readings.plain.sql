-- Plain PostgreSQL (>= 14): the narrow readings table, range-partitioned by day.
-- The DEFAULT partition takes any day that has no partition yet, so a reading for any
-- day is stored, never rejected; citywatch_ensure_partitions() creates days ahead.

CREATE TABLE readings (
    time      timestamptz NOT NULL,
    device_id text NOT NULL,
    metric    text NOT NULL,
    value     double precision NOT NULL,
    quality   smallint NOT NULL DEFAULT 2,  -- IOOS QARTOD flag: 1 pass, 2 not evaluated, 3 suspect, 4 fail
    PRIMARY KEY (device_id, metric, time)
) PARTITION BY RANGE (time);

CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- Creates one partition per UTC day in [first_day, last_day]. A day whose rows already sit
-- in the default partition is left there (moving them would lock the table); its
-- readings remain stored and queryable through `readings` all the same.
CREATE FUNCTION citywatch_ensure_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date := first_day;
    created integer := 0;
    lo timestamptz;
    hi timestamptz;
    part text;
BEGIN
    WHILE d <= last_day LOOP
        part := format('readings_%s', to_char(d, 'YYYYMMDD'));
        lo := (d::timestamp AT TIME ZONE 'UTC');
        hi := ((d + 1)::timestamp AT TIME ZONE 'UTC');
        IF to_regclass(part) IS NULL
           AND NOT EXISTS (SELECT 1 FROM readings_default WHERE time >= lo AND time < hi) THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END $$;

SELECT citywatch_ensure_partitions(current_date - 1, current_date + 7);

CREATE VIEW citywatch_storage AS SELECT 'plain'::text AS path;
