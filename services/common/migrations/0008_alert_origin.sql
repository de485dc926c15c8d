-- Which alerts deployment owns an alert: the consumer group id of the evaluator that opened
-- it (services/alerts/store.py). Its outbox pump publishes the transitions of its own
-- alerts only (and of alerts from before this column, origin NULL), so a second alerts
-- deployment on the same database, such as `citywatch bench alerts` beside a running
-- demo, neither publishes the other's transitions to its own topic nor marks them
-- published before their owner could. An acknowledgement is a transition of the alert,
-- so it goes out through the alert's owner whichever process's API took it.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS origin text;
