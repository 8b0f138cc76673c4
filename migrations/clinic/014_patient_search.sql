-- Patient search that scales with the clinic: `q` is matched against one
-- lowercased column of the names ("last first"), and results come by relevance —
-- names starting with `q` first, then those containing it — each in that
-- column's order. An index of the column under the "C" collation gives both:
-- names starting with `q` are one range of it, and a common term is found by
-- walking it (index entries only); the trigram index finds rare terms.
ALTER TABLE patients
    ADD COLUMN search_name text GENERATED ALWAYS AS (lower(last_name || ' ' || first_name)) STORED;
CREATE INDEX patients_search_trgm ON patients USING gin (search_name gin_trgm_ops);
CREATE INDEX patients_search_order ON patients (company_id, (search_name COLLATE "C"), id)
    WHERE deleted_at IS NULL;
