-- Network-server integrations (issue 13, point 5): `citywatch integrations add ttn|chirpstack`
-- gives a The Things Stack application or a ChirpStack application an MQTT login on the
-- device listener that may publish that application's uplinks and nothing else. Like a
-- device's, only the password's hash is kept; Mosquitto's files are generated from here
-- (services/registry/mosquitto.py).
CREATE TABLE IF NOT EXISTS mqtt_integrations (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    network       text NOT NULL CHECK (network IN ('ttn', 'chirpstack')),
    application   text NOT NULL,  -- TTN: `{app}@{tenant}` or `{app}`; ChirpStack: its UUID
    password_hash text NOT NULL,  -- mosquitto_passwd format ($7$)
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (network, application)
);
