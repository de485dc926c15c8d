-- The alerts HTTP API (services/alerts/api.py): bearer tokens and who acknowledged an alert.
--
-- A token is shown once, when `citywatch alerts-token create NAME` makes it; only its
-- SHA-256 is stored, so a copy of the database does not let anyone act as an operator.
-- SHA-256 without salt is enough here (unlike for passwords): the token is 32 random bytes,
-- so there is nothing to guess or look up in a table, and a hash lookup is an index probe.

CREATE TABLE api_tokens (
    token_id     bigserial PRIMARY KEY,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    token_sha256 bytea NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
-- One live token per name: an acknowledgement names a person or a system unambiguously.
CREATE UNIQUE INDEX api_tokens_one_live_per_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- IF NOT EXISTS: the lifecycle rewrite (0004) may add the same columns.
ALTER TABLE alerts
    ADD COLUMN IF NOT EXISTS acknowledged_by text,          -- the token name that acknowledged
    ADD COLUMN IF NOT EXISTS acknowledged_at timestamptz;   -- when (wall-clock time of the ack)
