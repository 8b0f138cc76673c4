-- Least privilege for the services. The central database is owned and migrated by
-- its owner (`medicalpro-admin migrate-central`); gateways and workers log in as
-- roles that belong to these two group roles, own nothing, and may only do what
-- their code does: no UPDATE, DELETE or TRUNCATE on the audit trail, no ALTER of
-- anything (they cannot disable its triggers or rewrite the chain). Operators make
-- the login roles with `medicalpro-admin create-service-role`. Every migration
-- that adds a table grants what the services need on it here or in its own file.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'medicalpro_gateway') THEN
        CREATE ROLE medicalpro_gateway NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'medicalpro_worker') THEN
        CREATE ROLE medicalpro_worker NOLOGIN;
    END IF;
    EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO medicalpro_gateway, medicalpro_worker', current_database());
END;
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO medicalpro_gateway, medicalpro_worker;
GRANT SELECT ON schema_migrations TO medicalpro_gateway, medicalpro_worker;

-- Both append to the audit trail (through the chain function, which moves the
-- heads as the owner) and read it.
GRANT SELECT, INSERT ON audit_logs TO medicalpro_gateway, medicalpro_worker;
GRANT USAGE ON SEQUENCE audit_logs_id_seq TO medicalpro_gateway, medicalpro_worker;
GRANT SELECT ON audit_chain_heads TO medicalpro_gateway, medicalpro_worker;

-- Gateways: sign-up, sign-in, sessions, users, placements, throttling.
GRANT SELECT, INSERT ON companies TO medicalpro_gateway;
GRANT SELECT, INSERT, UPDATE ON users TO medicalpro_gateway;
GRANT SELECT, INSERT, UPDATE ON refresh_tokens TO medicalpro_gateway;
GRANT SELECT ON regions TO medicalpro_gateway;
GRANT SELECT, INSERT, UPDATE, DELETE ON auth_throttle TO medicalpro_gateway;
GRANT SELECT, UPDATE (used_at, clinic_id) ON signup_invites TO medicalpro_gateway;

-- Workers: clinic placement and provisioning, data keys, their region's record,
-- backup ages, users' token versions (revocation).
GRANT SELECT ON companies TO medicalpro_worker;
GRANT UPDATE (status, placement_version, updated_at, db_role_password) ON companies TO medicalpro_worker;
GRANT SELECT, INSERT ON regions TO medicalpro_worker;
GRANT UPDATE (worker_url, pg_host, pg_port, updated_at) ON regions TO medicalpro_worker;
GRANT SELECT, INSERT ON clinic_data_keys TO medicalpro_worker;
GRANT SELECT ON clinic_backups TO medicalpro_worker;
GRANT SELECT (id, company_id, token_version, token_version_at) ON users TO medicalpro_worker;
