-- Multi-factor sign-in for staff: TOTP (RFC 6238, SHA-1, 6 digits, 30 s steps).
--
-- A user's TOTP secret is stored sealed (AES-256-GCM, bound to the user's id) under
-- a key only gateways derive (HKDF-SHA256 of their `INTERNAL_SECRET`, see
-- `gateway/src/totp.rs`); workers may read no column of `users` but the token
-- version ones, so they never see even the sealed value. `mfa_pending_secret`
-- holds an enrolment until a first code proves it; `mfa_last_step` is the last
-- time step a code was accepted for, so a code works once. Recovery codes are kept
-- as SHA-256 hashes and used once.
ALTER TABLE users
    ADD COLUMN mfa_secret         bytea,
    ADD COLUMN mfa_enabled_at     timestamptz,
    ADD COLUMN mfa_pending_secret bytea,
    ADD COLUMN mfa_pending_at     timestamptz,
    ADD COLUMN mfa_last_step      bigint,
    ADD CONSTRAINT users_mfa_enabled CHECK ((mfa_secret IS NULL) = (mfa_enabled_at IS NULL));

-- A clinic admin may require every user of the clinic to sign in with a second factor.
ALTER TABLE companies ADD COLUMN mfa_required boolean NOT NULL DEFAULT false;

CREATE TABLE mfa_recovery_codes (
    user_id    uuid NOT NULL REFERENCES users (id),
    code_hash  bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- The short-lived, single-use tokens a sign-in gets when its password was right but
-- a second factor is still due: `verify` (answer with a code) or `enroll` (the
-- clinic requires MFA and the user has none yet: enrol with this token). Only
-- their SHA-256 is stored.
CREATE TABLE mfa_challenges (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id),
    purpose    text NOT NULL CHECK (purpose IN ('verify', 'enroll')),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_expires_at ON mfa_challenges (expires_at);

GRANT UPDATE (mfa_required, updated_at) ON companies TO medicalpro_gateway;
GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_recovery_codes TO medicalpro_gateway;
GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_challenges TO medicalpro_gateway;
