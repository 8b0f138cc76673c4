-- The audit chain becomes keyed. Rows are appended by the services and the admin
-- tool (one Rust function, under a per-clinic advisory lock), which compute each
-- row's `hash` as HMAC-SHA-256 under the audit key named in `mac_key` — a key the
-- database never sees, so whoever owns the database cannot edit, reorder or forge
-- rows without `medicalpro-admin verify-audit` noticing. The triggers no longer
-- compute hashes: they check that each statement's rows extend their clinic's
-- chain and move the chain head once per statement (as the table owner, so the
-- services need no right on the heads beyond reading them). Rows from before this migration keep their unkeyed
-- digests (`mac_key` NULL) and are verified as before.
--
-- Shipped records are recognised by the id they had in the clinic's outbox
-- (`source_id`), no longer by its sequence number, which a restore or a relocation
-- can hand out again. A list or search records the ids of the rows it showed.
ALTER TABLE audit_logs
    ADD COLUMN source_id    uuid,
    ADD COLUMN resource_ids uuid[],
    ADD COLUMN mac_key      text;
-- (Rows without a source id never conflict: NULLs are distinct.)
CREATE UNIQUE INDEX audit_logs_source_id ON audit_logs (clinic_id, source_id);

-- Each row carries its chain fields (checked per row, cheaply)…
CREATE OR REPLACE FUNCTION audit_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.mac_key IS NULL OR NEW.hash IS NULL OR NEW.chain_seq IS NULL OR NEW.prev_hash IS NULL THEN
        RAISE EXCEPTION 'audit rows carry their keyed chain fields (chain_seq, prev_hash, hash, mac_key)'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

-- …and every statement's rows must extend their clinics' chains: positions
-- following the head without a gap, each row naming its predecessor's hash. The
-- head moves once per statement, as the table owner.
CREATE FUNCTION audit_chain_extend() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    c record;
    head audit_chain_heads;
    broken bigint;
BEGIN
    FOR c IN SELECT clinic_id, min(chain_seq) AS first, max(chain_seq) AS last, count(*) AS n
             FROM new_rows GROUP BY clinic_id LOOP
        INSERT INTO audit_chain_heads (clinic_id, last_seq, last_hash)
            VALUES (c.clinic_id, 0, '\x'::bytea)
            ON CONFLICT (clinic_id) DO NOTHING;
        SELECT * INTO head FROM audit_chain_heads WHERE clinic_id = c.clinic_id FOR UPDATE;
        SELECT count(*) INTO broken FROM (
            SELECT chain_seq, prev_hash, lag(hash) OVER (ORDER BY chain_seq) AS before
            FROM new_rows WHERE clinic_id = c.clinic_id
        ) x
        WHERE (chain_seq = c.first AND prev_hash IS DISTINCT FROM head.last_hash)
           OR (chain_seq <> c.first AND prev_hash IS DISTINCT FROM before);
        IF c.first <> head.last_seq + 1 OR c.last - c.first + 1 <> c.n OR broken > 0 THEN
            RAISE EXCEPTION 'audit rows % to % of clinic % do not extend its chain (head at %)',
                c.first, c.last, c.clinic_id, head.last_seq
                USING ERRCODE = 'serialization_failure';
        END IF;
        UPDATE audit_chain_heads
            SET last_seq = c.last,
                last_hash = (SELECT hash FROM new_rows WHERE clinic_id = c.clinic_id AND chain_seq = c.last)
            WHERE clinic_id = c.clinic_id;
    END LOOP;
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_logs_chain_extend AFTER INSERT ON audit_logs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_extend();
