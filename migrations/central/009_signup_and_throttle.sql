-- Shared attempt counters for sign-in and sign-up throttling: every gateway counts
-- in the same rows, an attempt is counted before its password is checked, and a
-- counter starts again once its window has passed. Keys name what is counted, e.g.
-- `login:acct-ip:<e-mail>|<address>` or `signup:ip:<address>` (IPv6 by /64).
CREATE TABLE auth_throttle (
    key         text PRIMARY KEY CHECK (length(key) <= 600),
    window_end  timestamptz NOT NULL,
    hits        integer NOT NULL CHECK (hits >= 0)
);
CREATE INDEX auth_throttle_window_end ON auth_throttle (window_end);

-- Single-use sign-up codes (`medicalpro-admin invite`) for `REGISTRATION=invite`:
-- only the code's hash is stored; a code may be bound to one e-mail and region.
CREATE TABLE signup_invites (
    code_hash   bytea PRIMARY KEY,
    email       text CHECK (email IS NULL OR length(email) BETWEEN 3 AND 254),
    region      text REFERENCES regions (name),
    note        text CHECK (note IS NULL OR length(note) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    clinic_id   uuid REFERENCES companies (id)
);
