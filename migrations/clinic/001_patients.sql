-- A clinic database: patients, and the audit outbox written in the same statement as
-- every access. Tables are granted to the group role every clinic role belongs to.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE audit_outbox (
    seq          bigserial PRIMARY KEY,
    user_id      uuid,
    action       text NOT NULL,
    resource     text NOT NULL,
    resource_id  uuid,
    client_ip    inet,
    request_id   text,
    outcome      text NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE patients (
    id          uuid PRIMARY KEY,
    company_id  uuid NOT NULL,
    first_name  text NOT NULL,
    last_name   text NOT NULL,
    email       text,
    phone       text,
    birth_date  date,
    ssn_enc     bytea,
    ssn_bidx    bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX patients_live ON patients (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX patients_deleted_at ON patients (deleted_at);
CREATE INDEX patients_first_name_trgm ON patients USING gin (first_name gin_trgm_ops);
CREATE INDEX patients_last_name_trgm ON patients USING gin (last_name gin_trgm_ops);
CREATE INDEX patients_ssn_bidx ON patients (company_id, ssn_bidx) WHERE ssn_bidx IS NOT NULL;

-- Clinic roles read and write rows but never hard-delete clinic data.
GRANT USAGE ON SCHEMA public TO medicalpro_clinic_app;
GRANT SELECT, INSERT, UPDATE ON patients TO medicalpro_clinic_app;
GRANT SELECT, INSERT, DELETE ON audit_outbox TO medicalpro_clinic_app;
GRANT USAGE ON SEQUENCE audit_outbox_seq_seq TO medicalpro_clinic_app;
