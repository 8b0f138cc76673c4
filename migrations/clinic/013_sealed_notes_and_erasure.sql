-- Clinical free text is sealed like the ssn: appointment and document notes are
-- stored as ciphertext (`notes_enc`, AES-256-GCM under the clinic's data key,
-- bound to the row). Notes written before stay in `notes` until
-- `medicalpro-admin rotate-data-keys` seals them (the API shows them meanwhile);
-- every write through the API clears the plaintext column.
ALTER TABLE appointments ADD COLUMN notes_enc bytea;
ALTER TABLE documents ADD COLUMN notes_enc bytea;

-- An issued document stays frozen, its sealed notes included; only an erasure
-- (which marks its transaction) may clear a patient's free text from it.
CREATE OR REPLACE FUNCTION document_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    erasing boolean := coalesce(current_setting('medicalpro.erasing', true), '') = 'on';
BEGIN
    IF OLD.status <> 'draft' AND (
        NEW.kind IS DISTINCT FROM OLD.kind OR NEW.patient_id IS DISTINCT FROM OLD.patient_id
        OR NEW.number IS DISTINCT FROM OLD.number
        OR (NOT erasing AND (NEW.notes IS DISTINCT FROM OLD.notes OR NEW.notes_enc IS DISTINCT FROM OLD.notes_enc))
        OR NEW.issued_at IS DISTINCT FROM OLD.issued_at
        OR NEW.net_cents IS DISTINCT FROM OLD.net_cents OR NEW.gross_cents IS DISTINCT FROM OLD.gross_cents
        OR (NEW.deleted_at IS DISTINCT FROM OLD.deleted_at AND OLD.kind = 'invoice')
    ) THEN
        RAISE EXCEPTION 'document % is % and can no longer be changed', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION document_lines_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    SELECT status INTO st FROM documents WHERE id = coalesce(NEW.document_id, OLD.document_id);
    IF st IS DISTINCT FROM 'draft' THEN
        -- An erasure may replace a line's description and nothing else.
        IF TG_OP = 'UPDATE' AND coalesce(current_setting('medicalpro.erasing', true), '') = 'on'
           AND (NEW.document_id, NEW.position, NEW.product_id, NEW.quantity, NEW.unit_price_cents, NEW.vat_rate_bp)
               IS NOT DISTINCT FROM
               (OLD.document_id, OLD.position, OLD.product_id, OLD.quantity, OLD.unit_price_cents, OLD.vat_rate_bp)
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'the lines of a % document can no longer be changed', st
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN coalesce(NEW, OLD);
END;
$$;
GRANT UPDATE (description) ON document_lines TO medicalpro_clinic_app;

-- A quote's notes follow it into the invoice as the data layer re-seals them (a
-- sealed value is bound to its row); plaintext notes from before are copied.
CREATE OR REPLACE FUNCTION convert_quote(doc uuid, new_id uuid) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    d documents;
BEGIN
    SELECT * INTO d FROM documents WHERE id = doc AND deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF d.kind <> 'quote' THEN
        RAISE EXCEPTION 'only a quote can be converted into an invoice'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF d.status IN ('cancelled', 'accepted') THEN
        RAISE EXCEPTION 'this quote is % and cannot be converted', d.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    INSERT INTO documents (id, company_id, kind, patient_id, converted_from, notes)
        VALUES (new_id, d.company_id, 'invoice', d.patient_id, doc, d.notes);
    INSERT INTO document_lines (document_id, position, description, product_id, quantity, unit_price_cents, vat_rate_bp)
        SELECT new_id, position, description, product_id, quantity, unit_price_cents, vat_rate_bp
        FROM document_lines WHERE document_id = doc;
    UPDATE documents SET status = 'accepted', updated_at = now() WHERE id = doc;
    RETURN new_id;
END;
$$;

-- Erasure finishes the job: it reaches a soft-deleted patient too, and also
-- removes the clinical notes of their appointments and the free text of their
-- documents and document lines (amounts, numbers and dates stay, as the law keeps
-- invoices).
CREATE OR REPLACE FUNCTION erase_patient(pid uuid, unused uuid) RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN
    UPDATE patients
        SET first_name = 'Erased',
            last_name = 'Patient ' || left(pid::text, 8),
            email = NULL,
            phone = NULL,
            birth_date = NULL,
            ssn_enc = NULL,
            ssn_bidx = NULL,
            updated_at = now()
        WHERE id = pid;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('medicalpro.erasing', 'on', true);
    UPDATE appointments SET notes = NULL, notes_enc = NULL, updated_at = now()
        WHERE patient_id = pid AND (notes IS NOT NULL OR notes_enc IS NOT NULL);
    UPDATE documents SET notes = NULL, notes_enc = NULL, updated_at = now()
        WHERE patient_id = pid AND (notes IS NOT NULL OR notes_enc IS NOT NULL);
    UPDATE document_lines SET description = 'Erased'
        WHERE description <> 'Erased'
          AND document_id IN (SELECT id FROM documents WHERE patient_id = pid);
    PERFORM set_config('medicalpro.erasing', 'off', true);
    RETURN pid;
END;
$$;
