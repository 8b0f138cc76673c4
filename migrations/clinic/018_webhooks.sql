-- Webhooks. A clinic's subscriptions (a URL, the event types it wants, the role
-- whose view of the data its deliveries carry, a signing secret sealed with the
-- clinic's data key); events written by triggers in the same transaction as the
-- change they announce; one delivery row per event and subscription, delivered in
-- event order by the worker, retried with backoff, replayable.
--
-- A clinic without an enabled subscription for an event type pays one probe of a
-- tiny table per change and writes nothing.

CREATE TABLE webhook_subscriptions (
    id              uuid PRIMARY KEY,
    company_id      uuid NOT NULL,
    url             text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    description     text CHECK (length(description) <= 500),
    event_types     text[] NOT NULL CHECK (cardinality(event_types) > 0),
    role            text NOT NULL CHECK (role IN ('admin', 'practitioner', 'staff')),
    secret_enc      bytea NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_at     timestamptz,
    disabled_reason text,
    failing_since   timestamptz,
    last_error      text,
    last_success_at timestamptz,
    -- A delivering worker's lease, so that two workers never deliver one
    -- subscription's events at once (nor out of order).
    leased_until    timestamptz,
    lease_owner     uuid,
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    type        text NOT NULL,
    resource    text NOT NULL,
    resource_id uuid NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_occurred_at ON webhook_events (occurred_at);

CREATE TABLE webhook_deliveries (
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_seq       bigint NOT NULL REFERENCES webhook_events (seq) ON DELETE CASCADE,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (subscription_id, event_seq)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (subscription_id, event_seq)
    WHERE delivered_at IS NULL;
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_seq);

-- Records event `t` about `res` row `rid` for every enabled subscription that
-- wants it; nothing when none does.
CREATE FUNCTION webhook_event(t text, res text, rid uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE enabled AND t = ANY (event_types)) THEN
        RETURN;
    END IF;
    INSERT INTO webhook_events (type, resource, resource_id) VALUES (t, res, rid) RETURNING seq INTO s;
    INSERT INTO webhook_deliveries (subscription_id, event_seq)
        SELECT id, s FROM webhook_subscriptions WHERE enabled AND t = ANY (event_types);
END;
$$;

-- Erasure announces itself: the patient's update inside `erase_patient` is
-- `patient.erased`, and the notes it clears on appointments and documents are
-- not announced as changes of their own.
CREATE FUNCTION erasing() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('medicalpro.erasing', true), 'off') = 'on'
$$;

CREATE OR REPLACE FUNCTION erase_patient(pid uuid, unused uuid) RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('medicalpro.erasing', 'on', true);
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
        PERFORM set_config('medicalpro.erasing', 'off', true);
        RETURN NULL;
    END IF;
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

-- Only changes a client made (they move `updated_at`) are announced: key
-- rotation's re-sealing and search-column upkeep are not.
CREATE FUNCTION patients_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM webhook_event('patient.created', 'patients', NEW.id);
    ELSIF erasing() THEN
        PERFORM webhook_event('patient.erased', 'patients', NEW.id);
    ELSIF NEW.updated_at IS DISTINCT FROM OLD.updated_at THEN
        IF NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN
            PERFORM webhook_event('patient.deleted', 'patients', NEW.id);
        ELSE
            PERFORM webhook_event('patient.updated', 'patients', NEW.id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER patients_webhook AFTER INSERT OR UPDATE ON patients
    FOR EACH ROW EXECUTE FUNCTION patients_webhook();

CREATE FUNCTION appointments_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM webhook_event('appointment.booked', 'appointments', NEW.id);
    ELSIF erasing() OR NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        RETURN NULL;
    ELSIF (NEW.status = 'cancelled' AND OLD.status <> 'cancelled')
          OR (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL) THEN
        PERFORM webhook_event('appointment.cancelled', 'appointments', NEW.id);
    ELSIF NEW.starts_at <> OLD.starts_at OR NEW.ends_at <> OLD.ends_at
          OR NEW.practitioner_id <> OLD.practitioner_id THEN
        PERFORM webhook_event('appointment.moved', 'appointments', NEW.id);
    ELSE
        PERFORM webhook_event('appointment.updated', 'appointments', NEW.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER appointments_webhook AFTER INSERT OR UPDATE ON appointments
    FOR EACH ROW EXECUTE FUNCTION appointments_webhook();

CREATE FUNCTION documents_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF erasing() OR NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    IF NEW.kind = 'invoice' AND NEW.status = 'issued' AND OLD.status = 'draft' THEN
        PERFORM webhook_event('invoice.issued', 'documents', NEW.id);
    ELSIF NEW.kind = 'invoice' AND NEW.status = 'paid' THEN
        PERFORM webhook_event('invoice.paid', 'documents', NEW.id);
    ELSIF NEW.kind = 'invoice' AND NEW.status = 'cancelled' THEN
        PERFORM webhook_event('invoice.cancelled', 'documents', NEW.id);
    ELSIF NEW.kind = 'credit_note' AND NEW.status = 'issued' THEN
        PERFORM webhook_event('credit_note.issued', 'documents', NEW.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER documents_webhook AFTER UPDATE OF status ON documents
    FOR EACH ROW EXECUTE FUNCTION documents_webhook();

GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_subscriptions TO medicalpro_clinic_app;
GRANT SELECT, INSERT, DELETE ON webhook_events TO medicalpro_clinic_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_deliveries TO medicalpro_clinic_app;
