-- The clinics that have webhook subscriptions, so that a worker finds the
-- deliveries waiting in its region after a restart without opening every clinic
-- database. Kept by the worker as subscriptions come and go.
CREATE TABLE webhook_clinics (
    clinic_id  uuid PRIMARY KEY REFERENCES companies (id),
    updated_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_clinics TO medicalpro_worker;

-- A subscription delivers only while the admin who made it (or last took it
-- over) is an active admin of the clinic: the worker reads their role.
GRANT SELECT (role, disabled_at) ON users TO medicalpro_worker;
