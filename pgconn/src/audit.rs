//! The one way into the central audit trail. Gateways (sign-ins, user changes, the
//! trail's own reads), workers (records shipped from clinic outboxes) and the
//! admin tool (operator actions) all append through [`append`]: under a per-clinic
//! advisory lock it reads the clinic's chain head, skips records already recorded
//! (by their outbox id), hashes each new row with the audit key
//! ([`common::audit::AuditKeys`]) and inserts them in order; the table's trigger
//! checks that each row extends the chain. Called inside the caller's transaction,
//! a change and its audit record commit together.

use common::audit::{AuditKeys, Record};
use common::ClinicId;
use std::collections::HashSet;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

/// Serialises appends to one clinic's chain until the transaction ends.
const LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('audit-chain:' || $1::uuid::text, 0))";

/// Appends `records` to `clinic`'s chain within `tx` (a transaction: the chain lock
/// lasts until it ends); records whose `source_id` is already in the trail are
/// skipped. Returns how many rows were inserted.
pub async fn append(
    tx: &impl GenericClient,
    keys: &AuditKeys,
    clinic: ClinicId,
    records: &[Record],
) -> Result<u64, tokio_postgres::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    tx.execute(LOCK, &[clinic.as_uuid()]).await?;
    let sources: Vec<Uuid> = records.iter().filter_map(|r| r.source_id).collect();
    let recorded: HashSet<Uuid> = if sources.is_empty() {
        HashSet::new()
    } else {
        // One probe of the (clinic, source id) index per record, whatever the
        // trail's size.
        tx.query(
            "SELECT u.id FROM unnest($2::uuid[]) AS u(id) CROSS JOIN LATERAL \
             (SELECT 1 FROM audit_logs a WHERE a.clinic_id = $1 AND a.source_id = u.id LIMIT 1) found",
            &[clinic.as_uuid(), &sources],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let head = tx
        .query_opt(
            "SELECT last_seq, last_hash FROM audit_chain_heads WHERE clinic_id = $1",
            &[clinic.as_uuid()],
        )
        .await?;
    let (mut seq, mut prev): (i64, Vec<u8>) = head
        .map(|h| (h.get(0), h.get(1)))
        .unwrap_or((0, Vec::new()));
    let mut columns = Columns::default();
    let mut seen = HashSet::new();
    for r in records {
        if let Some(id) = r.source_id {
            if recorded.contains(&id) || !seen.insert(id) {
                continue;
            }
        }
        seq += 1;
        let hash = keys.seal(&prev, clinic, seq, r);
        columns.push(r, seq, std::mem::replace(&mut prev, hash.clone()), hash);
    }
    if columns.seq.is_empty() {
        return Ok(0);
    }
    let key_id = keys.current_id();
    tx.execute(
        "INSERT INTO audit_logs (clinic_id, chain_seq, prev_hash, hash, mac_key, user_id, action, resource, \
             resource_id, resource_ids, client_ip, request_id, outcome, occurred_at, source_id) \
         SELECT $1, u.seq, u.prev, u.hash, $2, u.user_id, u.action, u.resource, u.resource_id, \
             u.ids::uuid[], u.ip, u.request_id, u.outcome, u.at, u.source_id \
         FROM unnest($3::bigint[], $4::bytea[], $5::bytea[], $6::uuid[], $7::text[], $8::text[], $9::uuid[], \
             $10::text[], $11::inet[], $12::text[], $13::text[], $14::timestamptz[], $15::uuid[]) \
             AS u(seq, prev, hash, user_id, action, resource, resource_id, ids, ip, request_id, outcome, at, source_id) \
         ORDER BY u.seq",
        &[
            clinic.as_uuid(),
            &key_id,
            &columns.seq,
            &columns.prev,
            &columns.hash,
            &columns.user_id,
            &columns.action,
            &columns.resource,
            &columns.resource_id,
            &columns.resource_ids,
            &columns.client_ip,
            &columns.request_id,
            &columns.outcome,
            &columns.occurred_at,
            &columns.source_id,
        ],
    )
    .await
}

/// Appends one record in a transaction of its own.
pub async fn record(
    client: &Client,
    keys: &AuditKeys,
    clinic: ClinicId,
    record: &Record,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let appended = append(client, keys, clinic, std::slice::from_ref(record)).await;
    match appended {
        Ok(_) => client.batch_execute("COMMIT").await,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// The rows to insert, column by column (for `unnest`).
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    prev: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    user_id: Vec<Option<Uuid>>,
    action: Vec<String>,
    resource: Vec<String>,
    resource_id: Vec<Option<Uuid>>,
    /// `uuid[]` literals (PostgreSQL arrays cannot nest ragged rows).
    resource_ids: Vec<Option<String>>,
    client_ip: Vec<Option<std::net::IpAddr>>,
    request_id: Vec<Option<String>>,
    outcome: Vec<String>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    source_id: Vec<Option<Uuid>>,
}

impl Columns {
    fn push(&mut self, r: &Record, seq: i64, prev: Vec<u8>, hash: Vec<u8>) {
        self.seq.push(seq);
        self.prev.push(prev);
        self.hash.push(hash);
        self.user_id.push(r.user_id);
        self.action.push(r.action.clone());
        self.resource.push(r.resource.clone());
        self.resource_id.push(r.resource_id);
        self.resource_ids.push(r.resource_ids.as_ref().map(|ids| {
            let items: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", items.join(","))
        }));
        self.client_ip.push(r.client_ip);
        self.request_id.push(r.request_id.clone());
        self.outcome.push(r.outcome.clone());
        self.occurred_at.push(r.occurred_at);
        self.source_id.push(r.source_id);
    }
}
