-- Import from another system: a patient's id there, unique per clinic where set
-- (deleted patients included, so a re-import never brings a deleted one back).
ALTER TABLE patients ADD COLUMN IF NOT EXISTS external_id text;
CREATE UNIQUE INDEX IF NOT EXISTS patients_external_id
    ON patients (company_id, external_id) WHERE external_id IS NOT NULL;
