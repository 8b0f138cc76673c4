-- Practitioners: who sees patients.

CREATE TABLE practitioners (
    id              uuid PRIMARY KEY,
    company_id      uuid NOT NULL,
    first_name      text NOT NULL,
    last_name       text NOT NULL,
    email           text,
    phone           text,
    specialty       text,
    license_number  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX practitioners_live ON practitioners (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX practitioners_deleted_at ON practitioners (deleted_at);
CREATE INDEX practitioners_first_name_trgm ON practitioners USING gin (first_name gin_trgm_ops);
CREATE INDEX practitioners_last_name_trgm ON practitioners USING gin (last_name gin_trgm_ops);
CREATE INDEX practitioners_specialty ON practitioners (company_id, specialty);

GRANT SELECT, INSERT, UPDATE ON practitioners TO medicalpro_clinic_app;
