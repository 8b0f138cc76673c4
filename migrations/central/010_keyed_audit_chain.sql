-- The audit chain becomes keyed. Rows are appended by the services and the admin
-- tool (one Rust function, under a per-clinic advisory lock), which compute each
-- row's `hash` as HMAC-SHA-256 under the audit key named in `mac_key` — a key the
-- database never sees, so whoever owns the database cannot edit, reorder or forge
-- rows without `medicalpro-admin verify-audit` noticing. The trigger no longer
-- computes hashes: it only checks that each row extends its clinic's chain and
-- moves the chain head (as the table owner, so the services need no right on the
-- heads beyond reading them). Rows from before this migration keep their unkeyed
-- digests (`mac_key` NULL) and are verified as before.
--
-- Shipped records are recognised by the id they had in the clinic's outbox
-- (`source_id`), no longer by its sequence number, which a restore or a relocation
-- can hand out again. A list or search records the ids of the rows it showed.
ALTER TABLE audit_logs
    ADD COLUMN source_id    uuid,
    ADD COLUMN resource_ids uuid[],
    ADD COLUMN mac_key      text;
CREATE UNIQUE INDEX audit_logs_source_id ON audit_logs (clinic_id, source_id)
    WHERE source_id IS NOT NULL;

CREATE OR REPLACE FUNCTION audit_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    head audit_chain_heads;
BEGIN
    IF NEW.mac_key IS NULL OR NEW.hash IS NULL OR NEW.chain_seq IS NULL THEN
        RAISE EXCEPTION 'audit rows carry their keyed chain fields (chain_seq, prev_hash, hash, mac_key)'
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO audit_chain_heads (clinic_id, last_seq, last_hash)
        VALUES (NEW.clinic_id, 0, '\x'::bytea)
        ON CONFLICT (clinic_id) DO NOTHING;
    SELECT * INTO head FROM audit_chain_heads WHERE clinic_id = NEW.clinic_id FOR UPDATE;
    IF NEW.chain_seq <> head.last_seq + 1 OR NEW.prev_hash IS DISTINCT FROM head.last_hash THEN
        RAISE EXCEPTION 'audit row % of clinic % does not extend its chain (head at %)',
            NEW.chain_seq, NEW.clinic_id, head.last_seq
            USING ERRCODE = 'serialization_failure';
    END IF;
    UPDATE audit_chain_heads SET last_seq = NEW.chain_seq, last_hash = NEW.hash
        WHERE clinic_id = NEW.clinic_id;
    RETURN NEW;
END;
$$;
