-- Consents: a patient agreed to one template version at a time; revocable.

CREATE TABLE consents (
    id           uuid PRIMARY KEY,
    company_id   uuid NOT NULL,
    patient_id   uuid NOT NULL REFERENCES patients (id),
    template_id  uuid NOT NULL REFERENCES consent_templates (id),
    given_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    CONSTRAINT consents_revoked_after_given CHECK (revoked_at IS NULL OR revoked_at >= given_at)
);
CREATE INDEX consents_live ON consents (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX consents_deleted_at ON consents (deleted_at);
CREATE INDEX consents_patient ON consents (patient_id);
CREATE INDEX consents_template ON consents (template_id);

GRANT SELECT, INSERT, UPDATE ON consents TO medicalpro_clinic_app;
