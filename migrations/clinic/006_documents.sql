-- Quotes and invoices in one table, with their lines. Totals are computed by the
-- database in integer cents; an issued invoice can no longer change.

CREATE TABLE documents (
    id              uuid PRIMARY KEY,
    company_id      uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('quote', 'invoice')),
    status          text NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'issued', 'accepted', 'paid', 'cancelled')),
    patient_id      uuid NOT NULL REFERENCES patients (id),
    number          text,
    issued_at       timestamptz,
    converted_from  uuid REFERENCES documents (id),
    net_cents       bigint NOT NULL DEFAULT 0,
    vat_cents       bigint NOT NULL DEFAULT 0,
    gross_cents     bigint NOT NULL DEFAULT 0,
    notes           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);
CREATE UNIQUE INDEX documents_number_key ON documents (company_id, number) WHERE number IS NOT NULL;
CREATE INDEX documents_live ON documents (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX documents_deleted_at ON documents (deleted_at);
CREATE INDEX documents_kind_status ON documents (company_id, kind, status);
CREATE INDEX documents_patient ON documents (patient_id);

CREATE TABLE document_lines (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id       uuid NOT NULL REFERENCES documents (id),
    position          integer NOT NULL,
    description       text NOT NULL,
    product_id        uuid REFERENCES product_services (id),
    quantity          bigint NOT NULL CHECK (quantity > 0),
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents >= 0),
    vat_rate_bp       bigint NOT NULL CHECK (vat_rate_bp BETWEEN 0 AND 10000),
    net_cents         bigint NOT NULL DEFAULT 0,
    vat_cents         bigint NOT NULL DEFAULT 0,
    gross_cents       bigint NOT NULL DEFAULT 0
);
CREATE INDEX document_lines_document ON document_lines (document_id, position);

-- Per-clinic, per-year invoice counters: incremented inside the issuing
-- transaction, so numbers are gapless.
CREATE TABLE invoice_counters (
    year  integer PRIMARY KEY,
    last  bigint NOT NULL
);

-- Line amounts: net = quantity × unit price; VAT rounded half up.
CREATE FUNCTION document_line_amounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.net_cents := NEW.quantity * NEW.unit_price_cents;
    NEW.vat_cents := (NEW.net_cents * NEW.vat_rate_bp + 5000) / 10000;
    NEW.gross_cents := NEW.net_cents + NEW.vat_cents;
    RETURN NEW;
END;
$$;
CREATE TRIGGER document_lines_amounts BEFORE INSERT OR UPDATE ON document_lines
    FOR EACH ROW EXECUTE FUNCTION document_line_amounts();

-- Document totals follow their lines.
CREATE FUNCTION document_totals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    doc uuid := coalesce(NEW.document_id, OLD.document_id);
BEGIN
    UPDATE documents d SET
        net_cents = coalesce((SELECT sum(net_cents) FROM document_lines WHERE document_id = doc), 0),
        vat_cents = coalesce((SELECT sum(vat_cents) FROM document_lines WHERE document_id = doc), 0),
        gross_cents = coalesce((SELECT sum(gross_cents) FROM document_lines WHERE document_id = doc), 0)
    WHERE d.id = doc;
    RETURN NULL;
END;
$$;
CREATE TRIGGER document_lines_totals AFTER INSERT OR UPDATE OR DELETE ON document_lines
    FOR EACH ROW EXECUTE FUNCTION document_totals();

-- Only drafts change freely. An issued document may only move on in status
-- (accepted, paid, cancelled); its content, lines and number are frozen.
CREATE FUNCTION document_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'draft' AND (
        NEW.kind IS DISTINCT FROM OLD.kind OR NEW.patient_id IS DISTINCT FROM OLD.patient_id
        OR NEW.number IS DISTINCT FROM OLD.number OR NEW.notes IS DISTINCT FROM OLD.notes
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
CREATE TRIGGER documents_frozen BEFORE UPDATE ON documents
    FOR EACH ROW EXECUTE FUNCTION document_frozen();

CREATE FUNCTION document_lines_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    SELECT status INTO st FROM documents WHERE id = coalesce(NEW.document_id, OLD.document_id);
    IF st IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'the lines of a % document can no longer be changed', st
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN coalesce(NEW, OLD);
END;
$$;
CREATE TRIGGER document_lines_frozen BEFORE INSERT OR UPDATE OR DELETE ON document_lines
    FOR EACH ROW EXECUTE FUNCTION document_lines_frozen();

GRANT SELECT, INSERT, UPDATE ON documents TO medicalpro_clinic_app;
GRANT SELECT, INSERT, DELETE ON document_lines TO medicalpro_clinic_app;
GRANT SELECT, INSERT, UPDATE ON invoice_counters TO medicalpro_clinic_app;
