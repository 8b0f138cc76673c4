-- Consent templates, versioned per name: each row is one version, numbered by the
-- database. A version that a consent refers to can no longer change.

CREATE TABLE consent_templates (
    id          uuid PRIMARY KEY,
    company_id  uuid NOT NULL,
    name        text NOT NULL,
    version     bigint NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    UNIQUE (company_id, name, version)
);
CREATE INDEX consent_templates_live ON consent_templates (company_id, id) WHERE deleted_at IS NULL;
CREATE INDEX consent_templates_deleted_at ON consent_templates (deleted_at);
CREATE INDEX consent_templates_name_trgm ON consent_templates USING gin (name gin_trgm_ops);

CREATE FUNCTION consent_template_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('consent_template:' || NEW.name));
    SELECT coalesce(max(version), 0) + 1 INTO NEW.version
        FROM consent_templates WHERE company_id = NEW.company_id AND name = NEW.name;
    RETURN NEW;
END;
$$;
CREATE TRIGGER consent_templates_version BEFORE INSERT ON consent_templates
    FOR EACH ROW EXECUTE FUNCTION consent_template_version();

CREATE FUNCTION consent_template_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version;
    IF (NEW.body IS DISTINCT FROM OLD.body OR NEW.name IS DISTINCT FROM OLD.name
        OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at)
       AND EXISTS (SELECT 1 FROM consents WHERE template_id = OLD.id) THEN
        RAISE EXCEPTION 'version % of "%" is in use by consents; create a new version instead', OLD.version, OLD.name
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER consent_templates_frozen BEFORE UPDATE ON consent_templates
    FOR EACH ROW EXECUTE FUNCTION consent_template_frozen();

GRANT SELECT, INSERT, UPDATE ON consent_templates TO medicalpro_clinic_app;
