-- Alert delivery (services/alerts/delivery): durable state of every notification.
--
-- The delivery service consumes citywatch.alerts.v1 and, per batch and in one transaction,
-- records each new event (deduplicated on event_id), the alert's delivery state, and one
-- pending row per channel target in alert_deliveries. Only then does it commit its Kafka
-- offsets. Channel workers send the pending rows and log every attempt, so a crash or a
-- failing channel delays a notification but never loses it.

-- One row per event consumed: the primary key is the at-least-once deduplication.
CREATE TABLE alert_delivery_events (
    event_id    text PRIMARY KEY,
    alert_id    text NOT NULL,
    seq         integer NOT NULL,          -- the alert's message number (CAP identifier)
    transition  text NOT NULL,
    at          timestamptz NOT NULL,
    event       jsonb NOT NULL,            -- the event as received
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_delivery_events_by_alert ON alert_delivery_events (alert_id, seq);

-- The newest known state of each alert, for reminders, escalation and MQTT retained state.
CREATE TABLE alert_delivery_alerts (
    alert_id       text PRIMARY KEY,
    rule_id        text NOT NULL,
    area           text,
    severity       text NOT NULL,
    state          text NOT NULL CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    status         text NOT NULL,          -- CAP status: Actual, Test, Exercise
    last_event_id  text NOT NULL,
    last_at        timestamptz NOT NULL,
    next_remind_at timestamptz,            -- null: no reminders (rule has none, or not firing)
    escalate_at    timestamptz,            -- null: no escalation pending
    reminders      integer NOT NULL DEFAULT 0,
    escalated      boolean NOT NULL DEFAULT false,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_delivery_alerts_due ON alert_delivery_alerts (next_remind_at)
    WHERE state = 'firing';
CREATE INDEX alert_delivery_alerts_by_topic ON alert_delivery_alerts (severity, area)
    WHERE state <> 'resolved';

-- One row per (notification, channel target): the durable queue of the channel workers.
CREATE TABLE alert_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    event_id        text NOT NULL,         -- the event, or a reminder's synthetic id
    alert_id        text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('mqtt', 'webhook', 'email')),
    target          text NOT NULL,         -- subscriber name, or the MQTT topic
    reason          text NOT NULL CHECK (reason IN ('transition', 'reminder', 'escalation')),
    body            text NOT NULL,         -- the notification JSON (signed as is for webhooks)
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'expired')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,           -- a worker holds the row until then
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (event_id, channel, target)     -- a redelivered event adds nothing
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (channel, target, next_attempt_at)
    WHERE status = 'pending';

-- The delivery log: every attempt, successful or not.
CREATE TABLE alert_delivery_attempts (
    delivery_id bigint NOT NULL REFERENCES alert_deliveries (delivery_id),
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    status_code integer,                   -- HTTP status or SMTP reply code, when there is one
    error       text,
    duration_ms double precision NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
