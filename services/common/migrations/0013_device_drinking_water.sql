-- Drinking-water points (issue 14): a water device registered as a drinking-water point
-- (`citywatch devices add --drinking-water`, or `drinking_water` in an import file) is the
-- only one whose readings and alerts the residents' page calls "drinking water", with
-- boil-water advice; other water is labelled for the water body it measures (sea, estuary,
-- river). Existing devices are not drinking-water points until an engineer says so.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS drinking_water boolean NOT NULL DEFAULT false;
