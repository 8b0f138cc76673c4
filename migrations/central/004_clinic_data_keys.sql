-- Per-clinic data keys (envelope encryption). Each version is the clinic's field key
-- and blind-index key, sealed ("wrapped") with the master key: the header of
-- `wrapped` names the master key id, so re-wrapping under a new master key finds
-- what is left to do. The highest version seals new values; older versions stay
-- to open values not yet re-encrypted. A version is retired once no value uses it
-- and may then be deleted, which makes anything still sealed with it unreadable.
CREATE TABLE clinic_data_keys (
    clinic_id   uuid NOT NULL REFERENCES companies (id),
    version     integer NOT NULL CHECK (version > 0),
    wrapped     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz,
    PRIMARY KEY (clinic_id, version)
);
