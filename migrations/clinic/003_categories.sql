-- Categories of products and services.

CREATE TABLE categories (
    id           uuid PRIMARY KEY,
    company_id   uuid NOT NULL,
    name         text NOT NULL,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE UNIQUE INDEX categories_name_key ON categories (company_id, lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX categories_live ON categories (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX categories_deleted_at ON categories (deleted_at);
CREATE INDEX categories_name_trgm ON categories USING gin (name gin_trgm_ops);

GRANT SELECT, INSERT, UPDATE ON categories TO medicalpro_clinic_app;
