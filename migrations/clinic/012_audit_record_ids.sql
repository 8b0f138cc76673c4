-- Every outbox record gets an id of its own: the central trail recognises a record
-- shipped twice by it, never by the sequence number, which a restore or a
-- relocation can hand out again. A list or search records the ids it showed.
ALTER TABLE audit_outbox
    ADD COLUMN id           uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN resource_ids uuid[];
CREATE UNIQUE INDEX audit_outbox_id ON audit_outbox (id);
