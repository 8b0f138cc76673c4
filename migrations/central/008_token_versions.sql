-- Revocation at once: every user has a token version that its access tokens carry
-- (claim `ver`). Disabling a user, changing its role or signing it out everywhere
-- raises the version; the change is announced on `medicalpro_users` as
-- `<user id>:<version>`, and every gateway and worker refuses tokens of an older
-- version from then on. `token_version_at` tells which users changed within a
-- token lifetime: only those need remembering (older tokens have expired).
ALTER TABLE users
    ADD COLUMN token_version    bigint NOT NULL DEFAULT 1 CHECK (token_version > 0),
    ADD COLUMN token_version_at timestamptz NOT NULL DEFAULT '-infinity';
CREATE INDEX users_token_version_at ON users (token_version_at) WHERE token_version > 1;

CREATE FUNCTION notify_user_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.token_version IS DISTINCT FROM OLD.token_version THEN
        PERFORM pg_notify('medicalpro_users', NEW.id::text || ':' || NEW.token_version::text);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER users_tokens_notify
    AFTER UPDATE OF token_version ON users
    FOR EACH ROW EXECUTE FUNCTION notify_user_tokens();
