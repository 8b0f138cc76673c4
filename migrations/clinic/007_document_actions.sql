-- Issuing and converting documents, as functions so each runs in the caller's
-- transaction with its audit record. They return the id of the resulting row, or
-- NULL when the document does not exist.

CREATE FUNCTION issue_document(doc uuid, unused uuid) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    d documents;
    n bigint;
    y integer;
BEGIN
    SELECT * INTO d FROM documents WHERE id = doc AND deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF d.status <> 'draft' THEN
        RAISE EXCEPTION 'only a draft can be issued; this document is %', d.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM document_lines WHERE document_id = doc) THEN
        RAISE EXCEPTION 'a document needs at least one line to be issued'
            USING ERRCODE = 'check_violation';
    END IF;
    IF d.kind = 'invoice' THEN
        y := extract(year FROM now() AT TIME ZONE 'UTC')::integer;
        INSERT INTO invoice_counters (year, last) VALUES (y, 1)
            ON CONFLICT (year) DO UPDATE SET last = invoice_counters.last + 1
            RETURNING last INTO n;
        UPDATE documents
            SET status = 'issued', issued_at = now(), updated_at = now(),
                number = format('F-%s-%s', y, lpad(n::text, 6, '0'))
            WHERE id = doc;
    ELSE
        UPDATE documents SET status = 'issued', issued_at = now(), updated_at = now() WHERE id = doc;
    END IF;
    RETURN doc;
END;
$$;

CREATE FUNCTION convert_quote(doc uuid, new_id uuid) RETURNS uuid LANGUAGE plpgsql AS $$
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
