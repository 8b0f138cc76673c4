//! The audit shipper: moves committed outbox rows from clinic databases to the
//! central `audit_logs` through [`pgconn::audit::append`]. Shipping is idempotent —
//! rows already recorded under their outbox id are skipped under the clinic's chain
//! lock — so a crash between insert and delete only re-ships, and the clinic's
//! keyed chain stays whole. Records are recognised by their id, never by their
//! sequence number, which a restore or a relocation can hand out again. Only the
//! rows shipped are deleted from the outbox, never a range: outbox sequence numbers
//! are not in commit order.

use crate::error::WorkerError;
use crate::registry::Registry;
use common::audit::{AuditKeys, Record};
use common::metric_names as m;
use common::ClinicId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BATCH: i64 = 500;
/// How long a woken shipper gathers more records before shipping.
const COALESCE: Duration = Duration::from_millis(25);
/// Every open clinic is swept this often, in case a wake-up was missed; a sweep
/// only uses connections that are idle anyway.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A clinic with records to ship waits this long for one of its connections to be
/// idle before one is opened for shipping alone (under a full connection budget,
/// that costs another clinic an idle connection).
const OPEN_AFTER: Duration = Duration::from_secs(10);

/// Ships every pending outbox row of one clinic over `source`, a connection to its
/// database.
async fn ship_from(
    registry: &Registry,
    keys: &AuditKeys,
    clinic: ClinicId,
    source: &deadpool_postgres::Object,
) -> Result<u64, WorkerError> {
    let mut shipped = 0u64;
    loop {
        let select = source
            .prepare_cached(
                "SELECT id, user_id, action, resource, resource_id, client_ip, request_id, outcome, occurred_at, resource_ids \
                 FROM audit_outbox ORDER BY seq LIMIT $1",
            )
            .await
            .map_err(WorkerError::from_db)?;
        let rows = source
            .query(&select, &[&BATCH])
            .await
            .map_err(WorkerError::from_db)?;
        if rows.is_empty() {
            break;
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let records: Vec<Record> = rows
            .iter()
            .map(|r| Record {
                source_id: Some(r.get(0)),
                user_id: r.get(1),
                action: r.get(2),
                resource: r.get(3),
                resource_id: r.get(4),
                client_ip: r.get(5),
                request_id: r.get(6),
                outcome: r.get(7),
                occurred_at: r.get(8),
                resource_ids: r.get(9),
            })
            .collect();
        let mut central = registry.central().get().await?;
        let tx = central.transaction().await.map_err(WorkerError::from_db)?;
        pgconn::audit::append(&*tx, keys, clinic, &records)
            .await
            .map_err(WorkerError::from_db)?;
        tx.commit().await.map_err(WorkerError::from_db)?;
        // Exactly the shipped rows: sequence numbers are taken before commit, so a
        // row with a lower number can commit after this batch was read.
        let delete = source
            .prepare_cached("DELETE FROM audit_outbox WHERE id = ANY($1)")
            .await
            .map_err(WorkerError::from_db)?;
        source
            .execute(&delete, &[&ids])
            .await
            .map_err(WorkerError::from_db)?;
        shipped += ids.len() as u64;
        metrics::counter!(m::AUDIT_SHIPPED).increment(ids.len() as u64);
        if (rows.len() as i64) < BATCH {
            break;
        }
    }
    Ok(shipped)
}

/// Runs until cancelled: ships clinics as requests wake it, and sweeps open ones.
pub async fn run_shipper(
    registry: Arc<Registry>,
    keys: AuditKeys,
    mut wake: mpsc::UnboundedReceiver<ClinicId>,
    shutdown: CancellationToken,
) {
    // Clinics known to have records to ship, since when.
    let mut dirty: HashMap<ClinicId, Instant> = HashMap::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        let mut swept = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            woken = wake.recv() => match woken {
                Some(clinic) => {
                    dirty.entry(clinic).or_insert_with(Instant::now);
                    // Records arrive with every request: gather a batch's worth
                    // (COALESCE) so shipping costs a few statements per batch, not
                    // per record.
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(COALESCE) => {}
                    }
                    while let Ok(more) = wake.try_recv() {
                        dirty.entry(more).or_insert_with(Instant::now);
                    }
                }
                None => break,
            },
            _ = sweep.tick() => swept = registry.open_clinics(),
            // Clinics still waiting (no idle connection, or a failure): retry soon.
            _ = tokio::time::sleep(Duration::from_millis(500)), if !dirty.is_empty() => {}
        }
        ship_dirty(&registry, &keys, &mut dirty, &swept, false).await;
    }
    // Ship what is left before the process exits.
    while let Ok(more) = wake.try_recv() {
        dirty.entry(more).or_insert_with(Instant::now);
    }
    ship_dirty(&registry, &keys, &mut dirty, &[], true).await;
}

/// What a clinic's outbox still holds: rows, and the age of the oldest in seconds.
async fn pending(source: &deadpool_postgres::Object) -> Option<(i64, f64)> {
    let row = source
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(occurred_at)), 0)::float8 \
             FROM audit_outbox",
            &[],
        )
        .await
        .ok()?;
    Some((row.try_get(0).ok()?, row.try_get(1).ok()?))
}

/// Errors after which a clinic is not retried here: it is not (or no longer) this
/// worker's to serve.
fn not_ours(e: &WorkerError) -> bool {
    matches!(
        e,
        WorkerError::ClinicUnknown | WorkerError::ClinicInactive(_) | WorkerError::Misrouted(_)
    )
}

/// Ships the dirty clinics; those that failed stay dirty. Then sets the backlog
/// gauges from the failed clinics: their count, and — when their database still
/// answers — the rows their outboxes hold and the age of the oldest.
async fn ship_dirty(
    registry: &Registry,
    keys: &AuditKeys,
    dirty: &mut HashMap<ClinicId, Instant>,
    swept: &[ClinicId],
    finally: bool,
) {
    let mut failed: HashMap<ClinicId, Instant> = HashMap::new();
    let mut waiting = HashMap::new();
    let (mut rows, mut oldest) = (0i64, 0f64);
    let known: Vec<(ClinicId, Option<Instant>)> = dirty
        .drain()
        .map(|(c, since)| (c, Some(since)))
        .chain(swept.iter().map(|c| (*c, None)))
        .collect();
    for (clinic, since) in known {
        if since.is_none() && failed.contains_key(&clinic) {
            continue;
        }
        // Swept clinics only over an idle connection; known ones also open one
        // once they waited long enough (or the process is stopping).
        let open = finally || since.is_some_and(|t| t.elapsed() >= OPEN_AFTER);
        let source = match registry.background_client(clinic, open).await {
            Ok(Some(source)) => source,
            Ok(None) => {
                if let Some(since) = since {
                    waiting.insert(clinic, since);
                }
                continue;
            }
            Err(e) if not_ours(&e) => continue,
            Err(e) => {
                tracing::warn!(%clinic, error = %e, "audit shipping failed; will retry");
                failed.insert(clinic, since.unwrap_or_else(Instant::now));
                continue;
            }
        };
        match ship_from(registry, keys, clinic, &source).await {
            Ok(_) => {}
            Err(e) if not_ours(&e) => {}
            Err(e) => {
                tracing::warn!(%clinic, error = %e, "audit shipping failed; will retry");
                failed.insert(clinic, since.unwrap_or_else(Instant::now));
                if let Some((n, age)) = pending(&source).await {
                    rows += n;
                    oldest = oldest.max(age);
                }
            }
        }
    }
    metrics::gauge!(m::AUDIT_BACKLOG).set(rows as f64);
    metrics::gauge!(m::AUDIT_BACKLOG_CLINICS).set(failed.len() as f64);
    metrics::gauge!(m::AUDIT_BACKLOG_AGE).set(oldest);
    dirty.extend(waiting);
    dirty.extend(failed);
}
