-- When each stream head last advanced, by the database's clock (issue 14): a stream whose
-- newest reading arrived close to the wall clock is live, and for live streams the alerts
-- service's offline check follows the wall clock too (services/alerts/engine.py
-- `live_heads`), so a partition whose devices all fall silent still reports them. Rows from
-- before this migration count as seen now.
ALTER TABLE alert_stream_heads
    ADD COLUMN IF NOT EXISTS seen_at timestamptz NOT NULL DEFAULT now();
