-- Appointments: a patient, a practitioner, a time range. A practitioner is never
-- double-booked: an exclusion constraint on the time range, so the database refuses
-- overlaps even under concurrent bookings. Items keep the price at booking time.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE appointments (
    id               uuid PRIMARY KEY,
    company_id       uuid NOT NULL,
    patient_id       uuid NOT NULL REFERENCES patients (id),
    practitioner_id  uuid NOT NULL REFERENCES practitioners (id),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'booked'
                     CHECK (status IN ('booked', 'confirmed', 'cancelled', 'no_show', 'done')),
    notes            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CONSTRAINT appointments_ends_after_start CHECK (ends_at > starts_at),
    CONSTRAINT appointments_no_double_booking EXCLUDE USING gist (
        company_id WITH =,
        practitioner_id WITH =,
        tstzrange(starts_at, ends_at) WITH &&
    ) WHERE (deleted_at IS NULL AND status NOT IN ('cancelled', 'no_show'))
);
CREATE INDEX appointments_live ON appointments (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX appointments_deleted_at ON appointments (deleted_at);
CREATE INDEX appointments_practitioner_time ON appointments (practitioner_id, starts_at);
CREATE INDEX appointments_patient_time ON appointments (patient_id, starts_at);
CREATE INDEX appointments_starts_at ON appointments (company_id, starts_at);

CREATE TABLE appointment_items (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    appointment_id    uuid NOT NULL REFERENCES appointments (id),
    position          integer NOT NULL,
    product_id        uuid NOT NULL REFERENCES product_services (id),
    quantity          bigint NOT NULL DEFAULT 1 CHECK (quantity > 0),
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents >= 0),
    vat_rate_bp       bigint NOT NULL
);
CREATE INDEX appointment_items_appointment ON appointment_items (appointment_id, position);

-- The price and VAT rate are those of the product when the item is booked.
CREATE FUNCTION appointment_item_price() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.unit_price_cents, p.vat_rate_bp INTO NEW.unit_price_cents, NEW.vat_rate_bp
    FROM product_services p WHERE p.id = NEW.product_id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER appointment_items_price BEFORE INSERT ON appointment_items
    FOR EACH ROW EXECUTE FUNCTION appointment_item_price();

GRANT SELECT, INSERT, UPDATE ON appointments TO medicalpro_clinic_app;
GRANT SELECT, INSERT, DELETE ON appointment_items TO medicalpro_clinic_app;
