-- Device profiles and derived metrics (issue 13). A device registered with a shipped profile
-- (`citywatch devices add ID --profile NAME`, deploy/devices/profiles/) keeps the profile's
-- name; its mapping, derivations and list layout are copied into the entry, so the gateway
-- needs nothing but the registry. `params` holds the per-device parameters the derivations
-- use (mount height, datum offset, density, ...), shown by `citywatch devices show`;
-- `derived` the declarations ([{"type": "level_from_distance"}, ...]); `measurements` how
-- to read a decoder's list of measurements ({"list": ..., "name": ..., "value": ...}).
ALTER TABLE devices ADD COLUMN IF NOT EXISTS profile text;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS params jsonb NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN IF NOT EXISTS derived jsonb NOT NULL DEFAULT '[]';
ALTER TABLE devices ADD COLUMN IF NOT EXISTS measurements jsonb;
-- Other kinds whose metrics the device also reports (a weather station: flood and air).
ALTER TABLE devices ADD COLUMN IF NOT EXISTS also_kinds text[] NOT NULL DEFAULT '{}';
