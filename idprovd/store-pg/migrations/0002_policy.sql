-- Issue 16: the auto-approval rules and enrollment windows stored through
-- the admin API (one record, like the provisioning state).
ALTER TABLE site ADD COLUMN policy jsonb;
