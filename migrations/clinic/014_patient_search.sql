-- Patient search that scales with the clinic: `q` is matched against one
-- lowercased column of the names under a trigram index (rare and absent terms
-- are index look-ups, not walks through every patient), and results come in name
-- order from an index that also carries the search column (common terms are
-- found by walking it, filtering index entries only).
ALTER TABLE patients
    ADD COLUMN search_name text GENERATED ALWAYS AS (lower(last_name || ' ' || first_name)) STORED;
CREATE INDEX patients_search_trgm ON patients USING gin (search_name gin_trgm_ops);
CREATE INDEX patients_name_order ON patients (company_id, last_name, first_name, id)
    INCLUDE (search_name) WHERE deleted_at IS NULL;
