-- The central database: where every clinic lives, who may log in, what happened.

CREATE TABLE regions (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    worker_url  text NOT NULL,
    pg_host     text NOT NULL,
    pg_port     integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE companies (
    id                uuid PRIMARY KEY,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    region            text NOT NULL REFERENCES regions (name),
    db_name           text NOT NULL UNIQUE,
    db_role           text NOT NULL UNIQUE,
    -- Sealed with the master key (AES-256-GCM); never stored in plaintext.
    db_role_password  bytea,
    status            text NOT NULL DEFAULT 'provisioning'
                      CHECK (status IN ('provisioning', 'active', 'suspended')),
    placement_version bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX companies_region_status ON companies (region, status);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    company_id    uuid NOT NULL REFERENCES companies (id),
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'practitioner', 'staff')),
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_company ON users (company_id);

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE audit_logs (
    id           bigserial PRIMARY KEY,
    clinic_id    uuid NOT NULL,
    user_id      uuid,
    action       text NOT NULL,
    resource     text NOT NULL,
    resource_id  uuid,
    client_ip    inet,
    request_id   text,
    outcome      text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- The outbox sequence in the clinic database, so shipping twice records once.
    source_seq   bigint,
    UNIQUE (clinic_id, source_seq)
);
CREATE INDEX audit_logs_clinic_time ON audit_logs (clinic_id, occurred_at);

-- Every change of placement or status is announced so gateway caches drop the entry.
CREATE FUNCTION notify_placement_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('medicalpro_placement', NEW.id::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER companies_placement_notify
    AFTER INSERT OR UPDATE OF region, status, placement_version ON companies
    FOR EACH ROW EXECUTE FUNCTION notify_placement_change();
