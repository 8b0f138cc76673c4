-- The clinic's day: its settings (legal identity, time zone, currency, numbering),
-- appointment types, practitioners' working hours and their dated exceptions,
-- recurring series, payments against invoices, and credit notes.

-- One row: what the clinic prints on its documents and which clock it lives by.
CREATE TABLE clinic_settings (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    name                 text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    address              text CHECK (length(address) <= 1000),
    registration_number  text CHECK (length(registration_number) <= 64),
    vat_number           text CHECK (length(vat_number) <= 64),
    time_zone            text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) <= 64),
    locale               text NOT NULL DEFAULT 'en' CHECK (locale ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    currency             text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    invoice_prefix       text NOT NULL DEFAULT 'F' CHECK (invoice_prefix ~ '^[A-Za-z0-9]{1,12}$'),
    credit_note_prefix   text NOT NULL DEFAULT 'AV' CHECK (credit_note_prefix ~ '^[A-Za-z0-9]{1,12}$'),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
INSERT INTO clinic_settings DEFAULT VALUES;

-- A time zone PostgreSQL does not know is refused (the worker also checks that it
-- is an IANA name).
CREATE FUNCTION clinic_settings_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM now() AT TIME ZONE NEW.time_zone;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER clinic_settings_check BEFORE INSERT OR UPDATE ON clinic_settings
    FOR EACH ROW EXECUTE FUNCTION clinic_settings_check();

CREATE FUNCTION clinic_time_zone() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT time_zone FROM clinic_settings), 'UTC')
$$;
CREATE FUNCTION clinic_currency() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT currency FROM clinic_settings), 'EUR')
$$;
-- The calendar year an instant falls in, in the clinic's zone: what an invoice or
-- credit note issued then is numbered in.
CREATE FUNCTION clinic_year(at timestamptz) RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT extract(year FROM at AT TIME ZONE clinic_time_zone())::integer
$$;

-- Appointment types: how long, how much time kept free after, what is billed.
CREATE TABLE appointment_types (
    id                    uuid PRIMARY KEY,
    company_id            uuid NOT NULL,
    name                  text NOT NULL,
    duration_minutes      bigint NOT NULL CHECK (duration_minutes BETWEEN 5 AND 1440),
    buffer_after_minutes  bigint NOT NULL DEFAULT 0 CHECK (buffer_after_minutes BETWEEN 0 AND 240),
    default_product_id    uuid REFERENCES product_services (id),
    colour                text CHECK (colour ~ '^#[0-9A-Fa-f]{6}$'),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
CREATE UNIQUE INDEX appointment_types_name ON appointment_types (company_id, lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX appointment_types_live ON appointment_types (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX appointment_types_deleted_at ON appointment_types (deleted_at);

-- Weekly working intervals, several a day, in the clinic's civil time. An end of
-- 00:00 is the midnight that ends the day.
CREATE TABLE working_hours (
    id               uuid PRIMARY KEY,
    company_id       uuid NOT NULL,
    practitioner_id  uuid NOT NULL REFERENCES practitioners (id),
    weekday          text NOT NULL CHECK (weekday IN ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday')),
    start_time       time NOT NULL,
    end_time         time NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CONSTRAINT working_hours_end_after_start CHECK (end_time > start_time OR end_time = '00:00')
);
CREATE INDEX working_hours_practitioner ON working_hours (practitioner_id) WHERE deleted_at IS NULL;
CREATE INDEX working_hours_live ON working_hours (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX working_hours_deleted_at ON working_hours (deleted_at);

-- Dated exceptions: `closed` (leave, a holiday: the whole day, or the hours given)
-- or `open` (extra hours).
CREATE TABLE hours_exceptions (
    id               uuid PRIMARY KEY,
    company_id       uuid NOT NULL,
    practitioner_id  uuid NOT NULL REFERENCES practitioners (id),
    date             date NOT NULL,
    change           text NOT NULL CHECK (change IN ('closed', 'open')),
    start_time       time,
    end_time         time,
    reason           text CHECK (length(reason) <= 200),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CONSTRAINT hours_exceptions_both_times CHECK ((start_time IS NULL) = (end_time IS NULL)),
    CONSTRAINT hours_exceptions_open_has_times CHECK (change = 'closed' OR start_time IS NOT NULL),
    CONSTRAINT hours_exceptions_end_after_start CHECK (end_time > start_time OR end_time = '00:00')
);
CREATE INDEX hours_exceptions_practitioner ON hours_exceptions (practitioner_id, date) WHERE deleted_at IS NULL;
CREATE INDEX hours_exceptions_live ON hours_exceptions (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX hours_exceptions_deleted_at ON hours_exceptions (deleted_at);

-- A practitioner's working time between two civil dates, as civil (clinic-time)
-- ranges: the weekly hours of each day unless it is closed whole, plus extra
-- hours, minus closed hours.
CREATE FUNCTION practitioner_hours(p uuid, first date, last date) RETURNS tsmultirange
LANGUAGE plpgsql STABLE AS $$
DECLARE
    d date := first;
    total tsmultirange := '{}';
    day tsmultirange;
    names text[] := ARRAY['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'];
BEGIN
    WHILE d <= last LOOP
        day := '{}';
        IF NOT EXISTS (SELECT 1 FROM hours_exceptions e WHERE e.practitioner_id = p AND e.date = d
                       AND e.deleted_at IS NULL AND e.change = 'closed' AND e.start_time IS NULL) THEN
            SELECT coalesce(range_agg(tsrange(d + w.start_time,
                       CASE WHEN w.end_time = '00:00' THEN d + 1 ELSE d + w.end_time END)), '{}')
                INTO day
                FROM working_hours w
                WHERE w.practitioner_id = p AND w.deleted_at IS NULL
                  AND w.weekday = names[extract(isodow FROM d)::integer];
        END IF;
        day := day + (SELECT coalesce(range_agg(tsrange(d + e.start_time,
                   CASE WHEN e.end_time = '00:00' THEN d + 1 ELSE d + e.end_time END)), '{}')
                 FROM hours_exceptions e
                 WHERE e.practitioner_id = p AND e.date = d AND e.deleted_at IS NULL AND e.change = 'open');
        day := day - (SELECT coalesce(range_agg(tsrange(d + e.start_time,
                   CASE WHEN e.end_time = '00:00' THEN d + 1 ELSE d + e.end_time END)), '{}')
                 FROM hours_exceptions e
                 WHERE e.practitioner_id = p AND e.date = d AND e.deleted_at IS NULL
                   AND e.change = 'closed' AND e.start_time IS NOT NULL);
        total := total + day;
        d := d + 1;
    END LOOP;
    RETURN total;
END;
$$;

-- Appointments may name their type (which then gives the end time), may be booked
-- outside working hours on purpose, and may belong to a recurring series.
CREATE TABLE appointment_series (
    id            uuid PRIMARY KEY,
    company_id    uuid NOT NULL,
    frequency     text NOT NULL CHECK (frequency IN ('weekly', 'monthly')),
    every         bigint NOT NULL CHECK (every BETWEEN 1 AND 52),
    count         bigint CHECK (count BETWEEN 1 AND 260),
    until         date,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT appointment_series_one_end CHECK ((count IS NULL) <> (until IS NULL))
);

ALTER TABLE appointments
    ADD COLUMN appointment_type_id uuid REFERENCES appointment_types (id),
    ADD COLUMN outside_hours boolean NOT NULL DEFAULT false,
    ADD COLUMN series_id uuid REFERENCES appointment_series (id),
    ADD COLUMN series_index bigint;
CREATE INDEX appointments_series ON appointments (series_id, series_index) WHERE series_id IS NOT NULL;

-- An appointment that names its type and no end lasts the type's duration.
CREATE FUNCTION appointment_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    minutes bigint;
BEGIN
    IF NEW.ends_at IS NULL AND NEW.appointment_type_id IS NOT NULL THEN
        SELECT duration_minutes INTO minutes FROM appointment_types
            WHERE id = NEW.appointment_type_id AND deleted_at IS NULL;
        IF minutes IS NOT NULL THEN
            NEW.ends_at := NEW.starts_at + make_interval(mins => minutes::integer);
        END IF;
    END IF;
    IF NEW.ends_at IS NULL THEN
        RAISE EXCEPTION 'ends_at is required unless the appointment names its appointment_type_id'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER appointments_defaults BEFORE INSERT OR UPDATE ON appointments
    FOR EACH ROW EXECUTE FUNCTION appointment_defaults();

-- Bookings stay inside the practitioner's working hours (in the clinic's zone)
-- unless marked `outside_hours`. A practitioner without any hours set has no such
-- rule yet. An appointment whose time and practitioner do not change is not
-- checked again (hours may have changed since it was booked).
CREATE FUNCTION appointment_within_hours() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tz text := clinic_time_zone();
    ls timestamp;
    le timestamp;
BEGIN
    IF NEW.outside_hours OR NEW.deleted_at IS NOT NULL OR NEW.status IN ('cancelled', 'no_show') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.starts_at = OLD.starts_at AND NEW.ends_at = OLD.ends_at
       AND NEW.practitioner_id = OLD.practitioner_id AND NOT OLD.outside_hours
       AND OLD.status NOT IN ('cancelled', 'no_show') THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM working_hours WHERE practitioner_id = NEW.practitioner_id AND deleted_at IS NULL)
       AND NOT EXISTS (SELECT 1 FROM hours_exceptions WHERE practitioner_id = NEW.practitioner_id AND deleted_at IS NULL) THEN
        RETURN NEW;
    END IF;
    ls := NEW.starts_at AT TIME ZONE tz;
    le := NEW.ends_at AT TIME ZONE tz;
    IF NOT practitioner_hours(NEW.practitioner_id, ls::date - 1, le::date) @> tsrange(ls, le) THEN
        RAISE EXCEPTION 'the appointment (% to % in %) is outside the practitioner''s working hours; send "outside_hours": true to book it anyway',
            to_char(ls, 'YYYY-MM-DD HH24:MI'), to_char(le, 'YYYY-MM-DD HH24:MI'), tz
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER appointments_within_hours BEFORE INSERT OR UPDATE ON appointments
    FOR EACH ROW EXECUTE FUNCTION appointment_within_hours();

-- Documents: credit notes beside quotes and invoices, the clinic's currency, and
-- what was paid and credited on an invoice.
ALTER TABLE documents DROP CONSTRAINT documents_kind_check;
ALTER TABLE documents ADD CONSTRAINT documents_kind_check CHECK (kind IN ('quote', 'invoice', 'credit_note'));
ALTER TABLE documents
    ADD COLUMN currency text NOT NULL DEFAULT clinic_currency(),
    ADD COLUMN credits uuid REFERENCES documents (id),
    ADD COLUMN paid_cents bigint NOT NULL DEFAULT 0,
    ADD COLUMN credited_cents bigint NOT NULL DEFAULT 0,
    ADD COLUMN balance_cents bigint GENERATED ALWAYS AS (
        CASE WHEN kind = 'invoice' AND status <> 'draft' THEN gross_cents - paid_cents - credited_cents ELSE 0 END
    ) STORED;
ALTER TABLE documents ADD CONSTRAINT documents_credit_note_credits
    CHECK ((kind = 'credit_note') = (credits IS NOT NULL));
CREATE INDEX documents_credits ON documents (credits) WHERE credits IS NOT NULL;

CREATE TABLE credit_note_counters (
    year  integer PRIMARY KEY,
    last  bigint NOT NULL
);

-- A document's currency never changes; an issued one stays frozen as before.
CREATE OR REPLACE FUNCTION document_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    erasing boolean := coalesce(current_setting('medicalpro.erasing', true), '') = 'on';
BEGIN
    IF NEW.currency IS DISTINCT FROM OLD.currency OR NEW.credits IS DISTINCT FROM OLD.credits THEN
        RAISE EXCEPTION 'a document''s currency and the invoice it credits never change'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status <> 'draft' AND (
        NEW.kind IS DISTINCT FROM OLD.kind OR NEW.patient_id IS DISTINCT FROM OLD.patient_id
        OR NEW.number IS DISTINCT FROM OLD.number
        OR (NOT erasing AND (NEW.notes IS DISTINCT FROM OLD.notes OR NEW.notes_enc IS DISTINCT FROM OLD.notes_enc))
        OR NEW.issued_at IS DISTINCT FROM OLD.issued_at
        OR NEW.net_cents IS DISTINCT FROM OLD.net_cents OR NEW.gross_cents IS DISTINCT FROM OLD.gross_cents
        OR (NEW.deleted_at IS DISTINCT FROM OLD.deleted_at AND OLD.kind IN ('invoice', 'credit_note'))
    ) THEN
        RAISE EXCEPTION 'document % is % and can no longer be changed', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;

-- Issuing: invoices and credit notes get the next number of their own gapless
-- series for the clinic's current year (in its zone). A credit note may not
-- credit more than its invoice has left; the invoice is `cancelled` once fully
-- credited, `paid` once nothing is left to pay.
CREATE OR REPLACE FUNCTION issue_document(doc uuid, unused uuid) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    d documents;
    inv documents;
    s clinic_settings;
    n bigint;
    y integer := clinic_year(now());
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
    SELECT * INTO s FROM clinic_settings;
    IF d.kind = 'invoice' THEN
        INSERT INTO invoice_counters (year, last) VALUES (y, 1)
            ON CONFLICT (year) DO UPDATE SET last = invoice_counters.last + 1
            RETURNING last INTO n;
        UPDATE documents
            SET status = 'issued', issued_at = now(), updated_at = now(),
                number = format('%s-%s-%s', s.invoice_prefix, y, lpad(n::text, 6, '0'))
            WHERE id = doc;
    ELSIF d.kind = 'credit_note' THEN
        SELECT * INTO inv FROM documents WHERE id = d.credits FOR UPDATE;
        IF inv.status NOT IN ('issued', 'paid') THEN
            RAISE EXCEPTION 'the invoice this note credits is %; only an issued invoice can be credited', inv.status
                USING ERRCODE = 'restrict_violation';
        END IF;
        IF d.gross_cents > inv.gross_cents - inv.credited_cents THEN
            RAISE EXCEPTION 'this credit note (% cents) is more than what is left to credit on invoice % (% cents)',
                d.gross_cents, inv.number, inv.gross_cents - inv.credited_cents
                USING ERRCODE = 'restrict_violation';
        END IF;
        INSERT INTO credit_note_counters (year, last) VALUES (y, 1)
            ON CONFLICT (year) DO UPDATE SET last = credit_note_counters.last + 1
            RETURNING last INTO n;
        UPDATE documents
            SET status = 'issued', issued_at = now(), updated_at = now(),
                number = format('%s-%s-%s', s.credit_note_prefix, y, lpad(n::text, 6, '0'))
            WHERE id = doc;
        UPDATE documents
            SET credited_cents = credited_cents + d.gross_cents, updated_at = now(),
                status = CASE
                    WHEN credited_cents + d.gross_cents = gross_cents THEN 'cancelled'
                    WHEN gross_cents - paid_cents - credited_cents - d.gross_cents <= 0 THEN 'paid'
                    ELSE status END
            WHERE id = inv.id;
    ELSE
        UPDATE documents SET status = 'issued', issued_at = now(), updated_at = now() WHERE id = doc;
    END IF;
    RETURN doc;
END;
$$;

-- A draft credit note for an issued invoice, with the invoice's lines: edit or
-- remove lines for a partial credit, then issue it.
CREATE FUNCTION credit_invoice(doc uuid, new_id uuid) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    d documents;
BEGIN
    SELECT * INTO d FROM documents WHERE id = doc AND deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF d.kind <> 'invoice' OR d.status NOT IN ('issued', 'paid') THEN
        RAISE EXCEPTION 'only an issued invoice can be credited; this is a % %', d.status, replace(d.kind, '_', ' ')
            USING ERRCODE = 'restrict_violation';
    END IF;
    INSERT INTO documents (id, company_id, kind, patient_id, credits, currency)
        VALUES (new_id, d.company_id, 'credit_note', d.patient_id, doc, d.currency);
    INSERT INTO document_lines (document_id, position, description, product_id, quantity, unit_price_cents, vat_rate_bp)
        SELECT new_id, position, description, product_id, quantity, unit_price_cents, vat_rate_bp
        FROM document_lines WHERE document_id = doc;
    RETURN new_id;
END;
$$;

-- Cancelling an issued invoice: an issued credit note for all that is left to
-- credit (the invoice is never edited); the invoice becomes `cancelled`.
CREATE FUNCTION cancel_invoice(doc uuid, new_id uuid) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    d documents;
BEGIN
    SELECT * INTO d FROM documents WHERE id = doc AND deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF d.kind <> 'invoice' OR d.status NOT IN ('issued', 'paid') THEN
        RAISE EXCEPTION 'only an issued invoice can be cancelled; this is a % %', d.status, replace(d.kind, '_', ' ')
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF d.credited_cents > 0 THEN
        RAISE EXCEPTION 'invoice % is already partly credited; credit the rest with a credit note', d.number
            USING ERRCODE = 'restrict_violation';
    END IF;
    PERFORM credit_invoice(doc, new_id);
    PERFORM issue_document(new_id, NULL);
    RETURN new_id;
END;
$$;

-- Payments received against an issued invoice. Recorded under the invoice's row
-- lock, so concurrent payments never take the balance below zero.
CREATE TABLE payments (
    id            uuid PRIMARY KEY,
    company_id    uuid NOT NULL,
    document_id   uuid NOT NULL REFERENCES documents (id),
    amount_cents  bigint NOT NULL CHECK (amount_cents BETWEEN 1 AND 100000000000),
    method        text NOT NULL CHECK (method IN ('cash', 'card', 'transfer', 'cheque', 'insurance', 'other')),
    paid_on       date NOT NULL,
    reference     text CHECK (length(reference) <= 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX payments_document ON payments (document_id, id);
CREATE INDEX payments_live ON payments (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX payments_deleted_at ON payments (deleted_at);

CREATE FUNCTION payment_applies() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d documents;
BEGIN
    SELECT * INTO d FROM documents WHERE id = NEW.document_id AND deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such invoice' USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF d.kind <> 'invoice' OR d.status NOT IN ('issued', 'paid') THEN
        RAISE EXCEPTION 'payments are recorded against issued invoices; this is a % %', d.status, replace(d.kind, '_', ' ')
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.amount_cents > d.gross_cents - d.paid_cents - d.credited_cents THEN
        RAISE EXCEPTION 'overpayment refused: % cents received, but the balance of invoice % is % cents',
            NEW.amount_cents, d.number, greatest(d.gross_cents - d.paid_cents - d.credited_cents, 0)
            USING ERRCODE = 'restrict_violation';
    END IF;
    NEW.company_id := d.company_id;
    UPDATE documents
        SET paid_cents = paid_cents + NEW.amount_cents, updated_at = now(),
            status = CASE WHEN gross_cents - paid_cents - NEW.amount_cents - credited_cents = 0 THEN 'paid' ELSE status END
        WHERE id = d.id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER payments_apply BEFORE INSERT ON payments
    FOR EACH ROW EXECUTE FUNCTION payment_applies();

-- A recorded payment is a fact: it never changes. A mistaken one is voided (by
-- soft delete), which gives its amount back to the balance; restoring a voided
-- payment applies it again, under the same rule as recording it (no overpayment).
CREATE FUNCTION payment_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d documents;
BEGIN
    IF (NEW.document_id, NEW.amount_cents, NEW.method, NEW.paid_on, NEW.reference)
       IS DISTINCT FROM (OLD.document_id, OLD.amount_cents, OLD.method, OLD.paid_on, OLD.reference) THEN
        RAISE EXCEPTION 'a recorded payment cannot be changed; void it and record a new one'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        UPDATE documents
            SET paid_cents = paid_cents - OLD.amount_cents, updated_at = now(),
                status = CASE WHEN status = 'paid' AND gross_cents - paid_cents + OLD.amount_cents - credited_cents > 0
                              THEN 'issued' ELSE status END
            WHERE id = OLD.document_id;
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        SELECT * INTO d FROM documents WHERE id = OLD.document_id FOR UPDATE;
        IF d.status NOT IN ('issued', 'paid') OR OLD.amount_cents > d.gross_cents - d.paid_cents - d.credited_cents THEN
            RAISE EXCEPTION 'this payment cannot be restored: % cents would be more than the balance of invoice % (% cents)',
                OLD.amount_cents, d.number, greatest(d.gross_cents - d.paid_cents - d.credited_cents, 0)
                USING ERRCODE = 'restrict_violation';
        END IF;
        UPDATE documents
            SET paid_cents = paid_cents + OLD.amount_cents, updated_at = now(),
                status = CASE WHEN gross_cents - paid_cents - OLD.amount_cents - credited_cents = 0 THEN 'paid' ELSE status END
            WHERE id = d.id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER payments_frozen BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payment_frozen();

GRANT SELECT, UPDATE ON clinic_settings TO medicalpro_clinic_app;
GRANT SELECT, INSERT, UPDATE ON appointment_types, working_hours, hours_exceptions, payments TO medicalpro_clinic_app;
GRANT SELECT, INSERT, UPDATE ON appointment_series TO medicalpro_clinic_app;
GRANT SELECT, INSERT, UPDATE ON credit_note_counters TO medicalpro_clinic_app;
