-- Which clinic schema version each clinic database and each region's template has
-- reached, as recorded by the fleet migration (`medicalpro-admin migrate-fleet`).
-- 0 means "not recorded yet": such a clinic is migrated (or found current) on the
-- next fleet run.

ALTER TABLE companies
    ADD COLUMN schema_version     integer NOT NULL DEFAULT 0,
    ADD COLUMN schema_migrated_at timestamptz;

CREATE TABLE region_templates (
    region          text PRIMARY KEY REFERENCES regions (name),
    schema_version  integer NOT NULL,
    migrated_at     timestamptz NOT NULL DEFAULT now()
);
