-- Clinic offboarding (`medicalpro-admin offboard`).
--
-- A clinic that left is `deleted`: gateways and workers serve only `active` and
-- `relocating` clinics, so its users can neither sign in nor use a token, and no
-- fleet command (backup, migrate-fleet, rotate-data-keys) picks it up.
ALTER TABLE companies DROP CONSTRAINT companies_status_check;
ALTER TABLE companies ADD CONSTRAINT companies_status_check
    CHECK (status IN ('provisioning', 'active', 'suspended', 'relocating', 'deleted'));

-- Each clinic's backup key, wrapped by the master key like its data keys. Backups
-- are sealed with it (AES-256-GCM in chunks), so deleting the row makes every copy
-- of every backup of the clinic unreadable, wherever the files went.
CREATE TABLE clinic_backup_keys (
    clinic_id   uuid PRIMARY KEY REFERENCES companies (id),
    wrapped     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One offboarding per clinic, each step stamped when done, so a run cut short is
-- finished by running it again. Nothing destructive happens before `grace_until`.
CREATE TABLE offboardings (
    clinic_id             uuid PRIMARY KEY REFERENCES companies (id),
    requested_at          timestamptz NOT NULL DEFAULT now(),
    grace_until           timestamptz NOT NULL,
    export_path           text NOT NULL,
    -- The server (host:port) the clinic database was exported from: later steps
    -- refuse to run against another, so a wrong REGION_DB_* drops nothing.
    server                text,
    suspended_at          timestamptz,
    exported_at           timestamptz,
    export_rows           bigint,
    export_sha256         text,
    deleted_at            timestamptz,
    databases_dropped_at  timestamptz,
    role_dropped_at       timestamptz,
    keys_shredded_at      timestamptz,
    finished_at           timestamptz
);
