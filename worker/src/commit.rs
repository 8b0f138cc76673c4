//! Group commit of read audit records. A read (or a list, or an export page) no
//! longer writes its audit record in its own statement: once it has read what it
//! will answer, it queues the record in its clinic's [`AuditQueue`] and waits
//! until the transaction holding that record has committed in the clinic's outbox;
//! only then does the caller answer. Whatever queued while one batch was being
//! written goes into the next, so a quiet clinic writes a batch of one at once
//! (no wait is added), and a busy one shares each durable commit among every read
//! that arrived meanwhile. Writes keep committing their record with the change
//! itself (`data::audited`).

use crate::budget::Conn;
use crate::error::WorkerError;
use deadpool_postgres::Object;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use tokio::sync::oneshot;
use uuid::Uuid;

/// One audit record for the clinic's outbox.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub user_id: Uuid,
    pub action: &'static str,
    pub resource: &'static str,
    pub resource_id: Option<Uuid>,
    /// The rows a list or an export page showed.
    pub resource_ids: Option<Vec<Uuid>>,
    pub client_ip: IpAddr,
    pub request_id: String,
    pub outcome: &'static str,
}

struct Pending {
    /// The record's outbox id, chosen here: time-ordered (the central trail's
    /// (clinic, source id) index grows at its end, not at random places), and the
    /// same on a retry, so a batch already committed is recognised, not doubled.
    id: Uuid,
    record: OutboxRecord,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    /// A task is writing batches (and takes whatever is pending when it is done).
    draining: bool,
}

/// The records of one clinic waiting for their commit.
#[derive(Default)]
pub struct AuditQueue {
    state: Mutex<State>,
}

/// What a clinic's group commit needs: the clinic's queue and a way to borrow its
/// connections (the registry provides it; the queue knows nothing of pools).
pub trait Outbox: Clone + Send + Sync + 'static {
    /// The clinic's queue of records waiting for their commit.
    fn queue(&self) -> &AuditQueue;
    /// Borrows a connection to the clinic's database.
    fn connection(&self) -> impl Future<Output = Result<Conn, WorkerError>> + Send;
    /// Borrows a connection that answered a round trip (the retry after
    /// connection trouble).
    fn working_connection(&self) -> impl Future<Output = Result<Conn, WorkerError>> + Send;
}

/// The rows written by one batch, at most (a larger queue waits for the next).
const MAX_BATCH: usize = 1000;

/// Queues `record` in `outbox`'s clinic queue and returns once it is durable in
/// the clinic's outbox (or the batch failed: nothing may then be answered).
pub async fn record(outbox: &impl Outbox, record: OutboxRecord) -> Result<(), WorkerError> {
    let (done, committed) = oneshot::channel();
    let start = {
        let mut state = outbox
            .queue()
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.pending.push(Pending {
            id: Uuid::now_v7(),
            record,
            done,
        });
        !std::mem::replace(&mut state.draining, true)
    };
    if start {
        tokio::spawn(drain(outbox.clone()));
    }
    match committed.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WorkerError::Unavailable(format!(
            "the audit record could not be committed: {e}"
        ))),
        Err(_) => Err(WorkerError::Internal(
            "the audit commit was abandoned".into(),
        )),
    }
}

/// Writes batches until the queue is empty, over one connection of the clinic.
async fn drain(outbox: impl Outbox) {
    let mut client = None;
    loop {
        let batch: Vec<Pending> = {
            let mut state = outbox
                .queue()
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if state.pending.is_empty() {
                state.draining = false;
                return;
            }
            let n = state.pending.len().min(MAX_BATCH);
            state.pending.drain(..n).collect()
        };
        let mut result = write_batch(&outbox, &mut client, &batch).await;
        if let Err(WorkerError::Unavailable(_)) = result {
            // Connection trouble: the pooled connection may have been closed under
            // it (pools hand them out unchecked). Once more on a fresh connection,
            // with the same ids: if the trouble struck after the commit, the ids
            // are taken, and the batch is known to be recorded.
            client = outbox.working_connection().await.ok();
            result = match write_batch(&outbox, &mut client, &batch).await {
                Err(WorkerError::Conflict(_)) => Ok(()),
                other => other,
            };
        }
        if result.is_err() {
            // A broken connection is not used again.
            client = None;
        }
        let shared = result.map_err(|e| e.to_string());
        for p in batch {
            let _ = p.done.send(shared.clone());
        }
    }
}

/// Writes `batch` over `client`, borrowing a connection first if there is none.
async fn write_batch(
    outbox: &impl Outbox,
    client: &mut Option<Conn>,
    batch: &[Pending],
) -> Result<(), WorkerError> {
    let c = match client {
        Some(c) => c,
        None => client.insert(outbox.connection().await?),
    };
    insert(c, batch).await
}

async fn insert(client: &Object, batch: &[Pending]) -> Result<(), WorkerError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO audit_outbox (id, user_id, action, resource, resource_id, resource_ids, client_ip, request_id, outcome) \
             SELECT u.id, u.user_id, u.action, u.resource, u.resource_id, u.ids::uuid[], u.ip, u.request_id, u.outcome \
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::inet[], $8::text[], $9::text[]) \
                 AS u(id, user_id, action, resource, resource_id, ids, ip, request_id, outcome)",
        )
        .await
        .map_err(WorkerError::from_db)?;
    let record_ids: Vec<Uuid> = batch.iter().map(|p| p.id).collect();
    let mut users = Vec::with_capacity(batch.len());
    let mut actions = Vec::with_capacity(batch.len());
    let mut resources = Vec::with_capacity(batch.len());
    let mut ids = Vec::with_capacity(batch.len());
    let mut shown = Vec::with_capacity(batch.len());
    let mut ips = Vec::with_capacity(batch.len());
    let mut request_ids = Vec::with_capacity(batch.len());
    let mut outcomes = Vec::with_capacity(batch.len());
    for p in batch {
        let r = &p.record;
        users.push(r.user_id);
        actions.push(r.action);
        resources.push(r.resource);
        ids.push(r.resource_id);
        shown.push(r.resource_ids.as_ref().map(|ids| {
            let items: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", items.join(","))
        }));
        ips.push(r.client_ip);
        request_ids.push(r.request_id.as_str());
        outcomes.push(r.outcome);
    }
    client
        .execute(
            &stmt,
            &[
                &record_ids,
                &users,
                &actions,
                &resources,
                &ids,
                &shown,
                &ips,
                &request_ids,
                &outcomes,
            ],
        )
        .await
        .map_err(WorkerError::from_db)?;
    Ok(())
}
