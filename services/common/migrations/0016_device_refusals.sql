-- Why a registered device's messages are refused (the gateway's latest rejection of each,
-- with a count), so the operations centre can tell a device that is silent from one that
-- talks but is refused: a clock hours ahead (`time_in_future`), a payload in the wrong
-- format, readings outside the sensor's span. Only registered devices get a row (bounded by
-- the registry); the rejected topic keeps every payload.
CREATE TABLE IF NOT EXISTS device_refusals (
    device_id text PRIMARY KEY,
    reason    text NOT NULL,
    detail    text NOT NULL,
    last_at   timestamptz NOT NULL,
    count     bigint NOT NULL CHECK (count > 0)
);
