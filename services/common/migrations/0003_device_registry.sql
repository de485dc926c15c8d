-- The device registry: what `citywatch devices ...` manages and the gateway enforces.
-- Devices the processor meets before anyone registered them stay 'unprovisioned'.

ALTER TABLE devices
    ADD COLUMN payload_format text NOT NULL DEFAULT 'native'
        CHECK (payload_format IN ('native', 'senml', 'ttn', 'chirpstack')),
    ADD COLUMN field_mapping  jsonb,            -- {"waterLevel": "water_level_m"} or "fiware-air-quality"
    ADD COLUMN install_date   date,
    ADD COLUMN calibration    jsonb NOT NULL DEFAULT '{}'::jsonb,   -- {"ph": -0.1}
    ADD COLUMN qc_overrides   jsonb NOT NULL DEFAULT '{}'::jsonb,   -- {"ph": {"spike": {...}}}
    ADD COLUMN password_hash  text,             -- mosquitto_passwd format; NULL = no MQTT login
    ADD COLUMN updated_at     timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT devices_status_known CHECK (status IN ('active', 'disabled', 'unprovisioned'));

-- A device registered before it ever reported has not been seen yet.
ALTER TABLE devices
    ALTER COLUMN first_seen DROP NOT NULL,
    ALTER COLUMN last_seen DROP NOT NULL,
    ALTER COLUMN last_reading_at DROP NOT NULL;
