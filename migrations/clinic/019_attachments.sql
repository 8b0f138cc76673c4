-- Attachments: files on a patient (referral letters, scans, signed consents),
-- kept in the clinic's own database so that backups, relocation (every public
-- table is published), exports and erasure carry them.
--
-- `attachments` holds the metadata; the file name and description are sealed
-- like any sensitive field (`filename_enc`, `description_enc`, bound to the row).
-- `attachment_chunks` holds the content in order, each chunk (64 KiB of the file)
-- sealed on its own with the clinic's data key, bound to the attachment and its
-- place, so chunks can be neither swapped nor moved to another file; they are
-- written before their metadata row in one transaction (the reference is checked
-- at commit). Sealed bytes do not compress: they are stored out of line without a
-- compression attempt.
--
-- Deleting an attachment removes its content at once and leaves the metadata row
-- as a tombstone (`deleted_at`), which consents and audit records may still name.

CREATE TABLE attachments (
    id              uuid PRIMARY KEY,
    company_id      uuid NOT NULL,
    patient_id      uuid NOT NULL REFERENCES patients (id),
    filename_enc    bytea,
    description_enc bytea,
    content_type    text NOT NULL,
    size            bigint NOT NULL CHECK (size >= 0),
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_by      uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE INDEX attachments_live ON attachments (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX attachments_deleted_at ON attachments (deleted_at);
CREATE INDEX attachments_patient ON attachments (patient_id);
CREATE INDEX attachments_changes ON attachments (company_id, updated_at, id);

-- A chunk's `id` is derived from its attachment and place (`seq`) and is what its
-- sealed value is bound to, so key rotation re-seals chunks like any sealed field
-- (by `id`), while a chunk moved elsewhere no longer opens where it is read.
CREATE TABLE attachment_chunks (
    id            uuid PRIMARY KEY,
    attachment_id uuid NOT NULL REFERENCES attachments (id) DEFERRABLE INITIALLY DEFERRED,
    seq           integer NOT NULL CHECK (seq >= 0),
    content_enc   bytea NOT NULL,
    UNIQUE (attachment_id, seq)
);
ALTER TABLE attachment_chunks ALTER COLUMN content_enc SET STORAGE EXTERNAL;

GRANT SELECT, INSERT, UPDATE ON attachments TO medicalpro_clinic_app;
GRANT SELECT, INSERT, DELETE ON attachment_chunks TO medicalpro_clinic_app;

-- A consent may point at its signed form: an attachment of the same patient.
ALTER TABLE consents ADD COLUMN attachment_id uuid REFERENCES attachments (id);
CREATE INDEX consents_attachment ON consents (attachment_id) WHERE attachment_id IS NOT NULL;

CREATE FUNCTION consent_attachment_of_patient() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.attachment_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM attachments a
         WHERE a.id = NEW.attachment_id AND a.patient_id = NEW.patient_id
    ) THEN
        RAISE EXCEPTION '`attachment_id` must be an attachment of the consent''s patient'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER consents_attachment_of_patient
    BEFORE INSERT OR UPDATE OF attachment_id, patient_id ON consents
    FOR EACH ROW EXECUTE FUNCTION consent_attachment_of_patient();

-- Erasure now also removes the patient's files: their content is deleted, their
-- names and descriptions cleared, their metadata rows left deleted. The erasure
-- of before (whatever it clears) runs first, under a name of its own.
ALTER FUNCTION erase_patient(uuid, uuid) RENAME TO erase_patient_records;

CREATE FUNCTION erase_patient(pid uuid, unused uuid) RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN
    IF erase_patient_records(pid, unused) IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM attachment_chunks
        WHERE attachment_id IN (SELECT id FROM attachments WHERE patient_id = pid);
    UPDATE attachments
        SET filename_enc = NULL,
            description_enc = NULL,
            deleted_at = coalesce(deleted_at, now()),
            updated_at = now()
        WHERE patient_id = pid
          AND (filename_enc IS NOT NULL OR description_enc IS NOT NULL OR deleted_at IS NULL);
    RETURN pid;
END;
$$;
