-- API clients for integrations: role-scoped, revocable client credentials of a
-- clinic (OAuth 2.0 client credentials grant, RFC 6749 §4.4). The secret is 256
-- random bits shown once at creation; only its SHA-256 is stored (a secret that
-- long cannot be guessed, so a slow password hash would add nothing but cost).
--
-- An API client is the subject of the access tokens it gets (`sub` = its `id`),
-- with a token version of its own announced on `medicalpro_users` like a user's:
-- revoking a client raises its version, and every gateway and worker refuses its
-- tokens within a second. The audit trail's `user_id` of its accesses is the
-- client's `id`, which names no user: the trail tells it apart by this table.
CREATE TABLE api_clients (
    id               uuid PRIMARY KEY,
    company_id       uuid NOT NULL REFERENCES companies (id),
    client_id        text NOT NULL UNIQUE,
    secret_hash      bytea NOT NULL,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role             text NOT NULL CHECK (role IN ('admin', 'practitioner', 'staff')),
    created_by       uuid REFERENCES users (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    token_version    bigint NOT NULL DEFAULT 1 CHECK (token_version > 0),
    token_version_at timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE INDEX api_clients_company ON api_clients (company_id);
CREATE INDEX api_clients_token_version_at ON api_clients (token_version_at) WHERE token_version > 1;

CREATE TRIGGER api_clients_tokens_notify
    AFTER UPDATE OF token_version ON api_clients
    FOR EACH ROW EXECUTE FUNCTION notify_user_tokens();

GRANT SELECT, INSERT, UPDATE (revoked_at, token_version, token_version_at) ON api_clients TO medicalpro_gateway;
GRANT SELECT (id, company_id, token_version, token_version_at) ON api_clients TO medicalpro_worker;
