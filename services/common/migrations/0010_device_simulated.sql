-- Simulated devices (issue 14): a device registered as simulated (the demo's and the
-- simulator's fleets, `citywatch devices add --simulated`) raises its alerts with CAP status
-- `Exercise`, whatever the rule says, so a demo can never page real staff or sirens. The
-- alerts service reads the flag with the device's area (services/alerts/store.py).
ALTER TABLE devices ADD COLUMN IF NOT EXISTS simulated boolean NOT NULL DEFAULT false;
