-- Password resets by e-mail: a single-use, short-lived token sent to the account's
-- address. Only its SHA-256 hash is stored; confirming sets `used_at` (a token works
-- once), and every other open token of the user is closed with it.
CREATE TABLE password_resets (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

CREATE INDEX password_resets_user ON password_resets (user_id) WHERE used_at IS NULL;

GRANT SELECT, INSERT, UPDATE ON password_resets TO medicalpro_gateway;
