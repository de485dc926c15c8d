-- Tables that are the same on plain PostgreSQL and on TimescaleDB.

CREATE TABLE devices (
    device_id       text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('water', 'air', 'flood', 'litter')),
    name            text,
    area            text,
    lat             double precision,
    lon             double precision,
    status          text NOT NULL DEFAULT 'unprovisioned',
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,   -- when the gateway last received anything from it
    last_reading_at timestamptz NOT NULL    -- the newest reading time it has reported
);

-- The latest value of each metric per device, latest by *reading* time: a late or
-- backfilled reading never overwrites a newer one (see services/common/db.py).
CREATE TABLE device_latest (
    device_id text NOT NULL,
    metric    text NOT NULL,
    time      timestamptz NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (device_id, metric)
);

CREATE TABLE alerts (
    alert_id    uuid PRIMARY KEY,
    rule_id     text NOT NULL,
    device_id   text NOT NULL,
    kind        text NOT NULL,
    metric      text NOT NULL,
    severity    text NOT NULL,
    state       text NOT NULL CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    value       double precision NOT NULL,  -- the value that opened the episode
    last_value  double precision NOT NULL,
    threshold   double precision NOT NULL,
    started_at  timestamptz NOT NULL,       -- reading time that opened it
    resolved_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    title_en    text NOT NULL,
    title_km    text NOT NULL
);
-- One open episode per rule and device: the database, not memory, enforces it.
CREATE UNIQUE INDEX alerts_one_open_episode ON alerts (rule_id, device_id) WHERE state <> 'resolved';
CREATE INDEX alerts_by_state ON alerts (state, started_at DESC);

-- Every transition, also the outbox for citywatch.alerts.v1 (published_at set once sent).
CREATE TABLE alert_events (
    event_id     bigserial PRIMARY KEY,
    alert_id     uuid NOT NULL REFERENCES alerts (alert_id),
    state        text NOT NULL,
    value        double precision NOT NULL,
    at           timestamptz NOT NULL,      -- reading time of the transition
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX alert_events_unpublished ON alert_events (event_id) WHERE published_at IS NULL;

-- The newest reading time each rule has evaluated per device: a replayed or redelivered
-- reading (time <= cursor) is not evaluated again, so it cannot raise a second alert.
CREATE TABLE alert_cursors (
    rule_id   text NOT NULL,
    device_id text NOT NULL,
    last_time timestamptz NOT NULL,
    PRIMARY KEY (rule_id, device_id)
);
