-- Backups of clinic databases taken by `medicalpro-admin backup`: one row per
-- attempt. A run skips clinics whose latest successful backup is newer than its
-- cut-off, so an interrupted run is resumed by running it again. The workers export
-- the age of each region's oldest latest backup for alerting.
CREATE TABLE clinic_backups (
    id           bigserial PRIMARY KEY,
    clinic_id    uuid NOT NULL REFERENCES companies (id),
    region       text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status       text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'success', 'failed')),
    -- Where the dump was written (a path the operator's tooling understands).
    location     text,
    size_bytes   bigint,
    error        text
);
CREATE INDEX clinic_backups_latest ON clinic_backups (clinic_id, finished_at DESC)
    WHERE status = 'success';
