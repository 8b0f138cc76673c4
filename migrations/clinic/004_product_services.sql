-- Products and services, priced in integer cents, in many categories.

CREATE TABLE product_services (
    id                uuid PRIMARY KEY,
    company_id        uuid NOT NULL,
    name              text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('product', 'service')),
    description       text,
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents >= 0),
    vat_rate_bp       bigint NOT NULL CHECK (vat_rate_bp BETWEEN 0 AND 10000),
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
CREATE INDEX product_services_live ON product_services (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX product_services_deleted_at ON product_services (deleted_at);
CREATE INDEX product_services_name_trgm ON product_services USING gin (name gin_trgm_ops);
CREATE INDEX product_services_kind ON product_services (company_id, kind);

CREATE TABLE product_categories (
    product_id   uuid NOT NULL REFERENCES product_services (id),
    category_id  uuid NOT NULL REFERENCES categories (id),
    PRIMARY KEY (product_id, category_id)
);
CREATE INDEX product_categories_category ON product_categories (category_id);

GRANT SELECT, INSERT, UPDATE ON product_services TO medicalpro_clinic_app;
GRANT SELECT, INSERT, DELETE ON product_categories TO medicalpro_clinic_app;
