-- The audit trail is append-only and chained per clinic: each row carries its
-- position in its clinic's chain and the hash of the row before it, so an edited,
-- removed or reordered row breaks the chain that `medicalpro-admin verify-audit`
-- checks.

ALTER TABLE audit_logs
    ADD COLUMN chain_seq  bigint,
    ADD COLUMN prev_hash  bytea,
    ADD COLUMN hash       bytea;

CREATE TABLE audit_chain_heads (
    clinic_id  uuid PRIMARY KEY,
    last_seq   bigint NOT NULL,
    last_hash  bytea NOT NULL
);

-- The digest of one row, chained to the previous row's digest. Every field takes a
-- fixed position (NULL as empty) so no two rows share a canonical text.
CREATE FUNCTION audit_row_digest(prev bytea, r audit_logs) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(concat_ws('|',
        r.clinic_id::text,
        r.chain_seq::text,
        coalesce(r.user_id::text, ''),
        r.action,
        r.resource,
        coalesce(r.resource_id::text, ''),
        coalesce(host(r.client_ip), ''),
        coalesce(r.request_id, ''),
        r.outcome,
        extract(epoch FROM r.occurred_at)::numeric::text,
        coalesce(r.source_seq::text, '')
    ), 'UTF8'))
$$;

CREATE FUNCTION audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_chain_heads;
BEGIN
    INSERT INTO audit_chain_heads (clinic_id, last_seq, last_hash)
        VALUES (NEW.clinic_id, 0, '\x'::bytea)
        ON CONFLICT (clinic_id) DO NOTHING;
    SELECT * INTO head FROM audit_chain_heads WHERE clinic_id = NEW.clinic_id FOR UPDATE;
    NEW.chain_seq := head.last_seq + 1;
    NEW.prev_hash := head.last_hash;
    NEW.hash := audit_row_digest(head.last_hash, NEW);
    UPDATE audit_chain_heads SET last_seq = NEW.chain_seq, last_hash = NEW.hash
        WHERE clinic_id = NEW.clinic_id;
    RETURN NEW;
END;
$$;

-- Chain what is already there, in insertion order, before new rows arrive.
DO $$
DECLARE
    r audit_logs;
    head audit_chain_heads;
BEGIN
    FOR r IN SELECT * FROM audit_logs ORDER BY clinic_id, id LOOP
        INSERT INTO audit_chain_heads (clinic_id, last_seq, last_hash)
            VALUES (r.clinic_id, 0, '\x'::bytea) ON CONFLICT (clinic_id) DO NOTHING;
        SELECT * INTO head FROM audit_chain_heads WHERE clinic_id = r.clinic_id;
        r.chain_seq := head.last_seq + 1;
        r.prev_hash := head.last_hash;
        r.hash := audit_row_digest(head.last_hash, r);
        UPDATE audit_logs SET chain_seq = r.chain_seq, prev_hash = r.prev_hash, hash = r.hash WHERE id = r.id;
        UPDATE audit_chain_heads SET last_seq = r.chain_seq, last_hash = r.hash WHERE clinic_id = r.clinic_id;
    END LOOP;
END;
$$;

CREATE TRIGGER audit_logs_chain BEFORE INSERT ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_chain();
CREATE UNIQUE INDEX audit_logs_chain_key ON audit_logs (clinic_id, chain_seq);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only'
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_logs FROM PUBLIC;
