-- The reading that crossed the level (issue 14): an alert's title and CAP message state the
-- value and time that raised it, not whatever the device reads now. `alerts.trigger_*` is
-- the crossing of the alert's current severity (set on firing and on escalation and
-- de-escalation); `alerts.last_value` stays the latest value. Each event keeps its own
-- trigger (for a resolution: the first reading back below the level), so a CAP message
-- rebuilt from the outbox later says the same. NULL in rows written before this migration:
-- readers fall back to `value` and `at`.
ALTER TABLE alerts
    ADD COLUMN IF NOT EXISTS trigger_value double precision,
    ADD COLUMN IF NOT EXISTS trigger_at    timestamptz;
ALTER TABLE alert_events
    ADD COLUMN IF NOT EXISTS trigger_value double precision,
    ADD COLUMN IF NOT EXISTS trigger_at    timestamptz;
