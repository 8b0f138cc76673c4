-- Sync: a list with `updated_since` walks a clinic's rows in the order of their
-- changes, (updated_at, id), soft-deleted ones included when tombstones are asked
-- for; one index per table serves both the range and the keyset cursor.
CREATE INDEX IF NOT EXISTS patients_changes ON patients (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS practitioners_changes ON practitioners (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS categories_changes ON categories (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS product_services_changes ON product_services (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS appointments_changes ON appointments (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS documents_changes ON documents (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS consent_templates_changes ON consent_templates (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS consents_changes ON consents (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS appointment_types_changes ON appointment_types (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS working_hours_changes ON working_hours (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS hours_exceptions_changes ON hours_exceptions (company_id, updated_at, id);
CREATE INDEX IF NOT EXISTS payments_changes ON payments (company_id, updated_at, id);
