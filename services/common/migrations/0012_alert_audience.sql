-- Who an alert is for (issue 14): `public` alerts reach the residents' page, `operators`
-- alerts (a device's own health: offline, stuck; a crew's task: a full litter boom) reach
-- the ops page and the alerts API only. Set from the rule's `audience` when the alert opens
-- (services/alerts/rules.py). Rows written before this migration get the rule type's
-- default: offline and stuck are for operators, everything else public.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS audience text NOT NULL DEFAULT 'public'
    CHECK (audience IN ('public', 'operators'));
UPDATE alerts SET audience = 'operators'
    WHERE rule_type IN ('offline', 'stuck') AND audience = 'public';
