-- Alert lifecycle (issue 4): rule types, escalation and de-escalation of one alert, alerts
-- per area (combined rules), CAP status, per-rule evaluation state, stream heads.

-- An alert is about a device, or (combined rules) about an area: device_id is then NULL.
-- Offline alerts have no metric.
ALTER TABLE alerts
    ALTER COLUMN device_id DROP NOT NULL,
    ALTER COLUMN metric DROP NOT NULL,
    ADD COLUMN area      text,                                   -- the device's registry area
    ADD COLUMN rule_type text NOT NULL DEFAULT 'threshold',
    ADD COLUMN status    text NOT NULL DEFAULT 'Actual'
        CONSTRAINT alerts_status_cap CHECK (status IN ('Actual', 'Test', 'Exercise')),
    ADD CONSTRAINT alerts_have_subject CHECK (device_id IS NOT NULL OR area IS NOT NULL);

-- One open episode per rule and device, or per rule and area: the database enforces it.
DROP INDEX IF EXISTS alerts_one_open_episode;
CREATE UNIQUE INDEX alerts_one_open_device_episode ON alerts (rule_id, device_id)
    WHERE state <> 'resolved' AND device_id IS NOT NULL;
CREATE UNIQUE INDEX alerts_one_open_area_episode ON alerts (rule_id, area)
    WHERE state <> 'resolved' AND device_id IS NULL;
CREATE INDEX alerts_by_area ON alerts (area, started_at DESC);

-- Each event says what the alert was at that moment (the outbox may be read later, after
-- the alert has changed again). NULL in rows written before this migration or by writers
-- that do not change severity (an acknowledgement): readers fall back to the alert's.
ALTER TABLE alert_events
    ADD COLUMN severity          text,
    ADD COLUMN previous_severity text,                           -- escalated / deescalated
    ADD COLUMN threshold         double precision,
    ADD COLUMN title_en          text,
    ADD COLUMN title_km          text,
    ADD CONSTRAINT alert_events_state_known
        CHECK (state IN ('firing', 'escalated', 'deescalated', 'acknowledged', 'resolved'));

-- The whole evaluation state per (rule, subject) beside its cursor (services/alerts/engine.py
-- RuleState.to_json): open stage, pending timers, the rule type's window. A restart resumes
-- from here. `device_id` holds the subject: a device id, or 'area:<area>'.
ALTER TABLE alert_cursors ADD COLUMN state jsonb;

-- The newest reading time seen per consumer group and Kafka partition: the staleness rule
-- and offline detection measure against it (engine.py).
CREATE TABLE alert_stream_heads (
    group_id text NOT NULL,
    stream   text NOT NULL,
    head     timestamptz NOT NULL,
    PRIMARY KEY (group_id, stream)
);
