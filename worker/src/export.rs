//! `GET /api/v1/export`: a whole clinic's data, streamed as NDJSON, one line
//! `{"resource": "<name>", "data": {…}}` per live row of every resource (soft-deleted
//! rows are not exported, as the API does not show them), then the metadata of
//! every live attachment (`"resource": "attachments"`). An attachment's content is
//! not in the export: it is one download per file (`GET /api/v1/attachments/{id}`),
//! which keeps every line small and the snapshot short.
//!
//! Clinic admins only. The access is recorded (`export` on resource `clinic`) and
//! committed before the first byte leaves; refusals are recorded as `rejected`. The
//! rows are read through the generic data layer in keyset pages of
//! [`data::MAX_LIMIT`] (each page read is audited as a `list`, like any other), all
//! inside one REPEATABLE READ transaction, so the export is one consistent snapshot
//! and never more than a page is held in memory. The body is produced as the client
//! reads it. A failure midway aborts the body (the client sees a truncated chunked
//! response, never a short "complete" one) and is recorded as `error`; a client
//! that goes away leaves no connection mid-transaction in the pool.
//!
//! Exports hold a connection and a snapshot for as long as they run, so they are
//! bounded ([`crate::export_gate::ExportGate`]): at most `EXPORTS_PER_CLINIC` per clinic and
//! `EXPORTS_MAX` per worker at once (past either, `429` + `retry-after`), and a
//! client that reads nothing for `EXPORT_IDLE_SECS` is cut off — its transaction
//! rolled back, its connection closed, the export recorded as `abandoned`.

use crate::access;
use crate::budget::Conn;
use crate::context::Caller;
use crate::data::{self, Action, Actor, ListQuery};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use common::metric_names as m;
use common::resource::{Resource, ATTACHMENTS, RESOURCES};
use common::token::Role;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc::error::SendTimeoutError;

/// The media type of the stream.
pub const MEDIA_TYPE: &str = "application/x-ndjson";

/// What the audit trail names the resource of a whole-clinic export: the clinic.
const CLINIC: &Resource = &common::resource::CLINIC_SETTINGS;

const EXPORT: Action = Action::Named("export");

/// `GET /api/v1/export`.
pub async fn clinic(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, WorkerError> {
    let (client, keys) = state.registry.session(caller.clinic).await?;
    let actor = access::actor(&caller);
    let clinic_id = Some(*caller.clinic.as_uuid());
    let permit = if caller.role != Role::Admin {
        Err(WorkerError::Forbidden(
            "Only a clinic admin can export the clinic's data.".into(),
        ))
    } else {
        state.exports.try_enter(caller.clinic)
    };
    let permit = match permit {
        Ok(permit) => permit,
        Err(refusal) => {
            let recorded =
                data::record_access(&*client, &actor, CLINIC, EXPORT, clinic_id, "rejected").await;
            if let Err(e) = recorded {
                tracing::error!(error = %e, "could not record a refused clinic export");
            }
            state.wake_shipper(caller.clinic);
            return Err(refusal);
        }
    };
    data::record_access(&*client, &actor, CLINIC, EXPORT, clinic_id, "success").await?;
    state.wake_shipper(caller.clinic);
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(WorkerError::from_db)?;
    let idle = state.exports.idle();
    let mut pages = Pages {
        snapshot: Snapshot(Some(client)),
        keys,
        state,
        actor,
        resource: 0,
        after: None,
    };
    // The pages are read by a task of their own, one chunk ahead of the client: a
    // client that stops reading is noticed (the chunk waits unread) and cut off.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, WorkerError>>(1);
    tokio::spawn(async move {
        let _permit = permit;
        while let Some(chunk) = pages.next_chunk().await {
            let failed = chunk.is_err();
            match tx.send_timeout(chunk, idle).await {
                Ok(()) if failed => break,
                Ok(()) => {}
                Err(SendTimeoutError::Timeout(_)) => {
                    metrics::counter!(m::CLIENTS_CUT_OFF, "component" => "worker", "reason" => "export_idle")
                        .increment(1);
                    pages.stop("abandoned").await;
                    break;
                }
                // The client went away: the snapshot's connection is closed on drop.
                Err(SendTimeoutError::Closed(_)) => break,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, MEDIA_TYPE)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The export's connection while its transaction is open.
struct Snapshot(Option<Conn>);

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Dropped mid-transaction (the client went away): take the connection out
            // of the pool and close it, which rolls the transaction back, rather than
            // lend it to the next request inside this one's transaction.
            client.discard();
        }
    }
}

/// Where the export stands: the resource being read and where its next page starts.
struct Pages {
    snapshot: Snapshot,
    keys: Arc<ClinicKeyCache>,
    state: AppState,
    actor: Actor,
    resource: usize,
    after: Option<data::Cursor>,
}

impl Pages {
    /// The next non-empty page as NDJSON lines; `None` once everything was sent
    /// (or after a failure was reported).
    async fn next_chunk(&mut self) -> Option<Result<Bytes, WorkerError>> {
        loop {
            let client = self.snapshot.0.as_ref()?;
            let Some(r) = exported(self.resource) else {
                let committed = client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(WorkerError::from_db);
                return match committed {
                    Ok(()) => {
                        // Back to the pool, outside any transaction.
                        drop(self.snapshot.0.take());
                        self.state.wake_shipper(self.actor.clinic);
                        None
                    }
                    Err(e) => Some(Err(self.fail(e).await)),
                };
            };
            let query = ListQuery {
                limit: data::MAX_LIMIT,
                after: self.after.clone(),
                ..ListQuery::default()
            };
            let page = data::list(
                client,
                &self.keys,
                r,
                &self.actor,
                &query,
                data::Audit::Deferred,
            )
            .await;
            let (rows, next) = match page {
                Ok(page) => page,
                Err(e) => return Some(Err(self.fail(e).await)),
            };
            // The page's record is durable before the page is sent.
            if !rows.is_empty() {
                if let Err(e) = self.record_page(r, &rows).await {
                    return Some(Err(self.fail(e).await));
                }
            }
            self.after = next;
            if self.after.is_none() {
                self.resource += 1;
            }
            if rows.is_empty() {
                continue;
            }
            return Some(match lines(r, rows) {
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(self.fail(e).await),
            });
        }
    }

    /// Group-commits the record of one page (a list of `r` showing `rows`).
    async fn record_page(&self, r: &Resource, rows: &[Value]) -> Result<(), WorkerError> {
        let entry = self.state.registry.pool(self.actor.clinic).await?;
        let record = crate::commit::OutboxRecord {
            user_id: self.actor.user,
            action: Action::List.as_str(),
            resource: r.name,
            resource_id: None,
            resource_ids: Some(access::row_ids(rows)),
            client_ip: self.actor.client_ip,
            request_id: self.actor.request_id.clone(),
            outcome: "success",
        };
        crate::commit::record(&self.state.registry.outbox(&entry), record).await
    }

    /// Ends the export after `e`: rolls back, records the failure, logs it once.
    async fn fail(&mut self, e: WorkerError) -> WorkerError {
        tracing::error!(error = %e, kind = e.kind(), "clinic export failed midway");
        self.stop("error").await;
        e
    }

    /// Ends the export early: rolls back and records it with `outcome`.
    async fn stop(&mut self, outcome: &str) {
        let clinic = self.actor.clinic;
        let usable = match self.snapshot.0.take() {
            Some(client) if client.batch_execute("ROLLBACK").await.is_ok() => Some(client),
            Some(client) => {
                // Broken, or stuck in the transaction: never lend it again.
                client.discard();
                None
            }
            None => None,
        };
        let client = match usable {
            Some(client) => Ok(client),
            None => self.state.registry.client(clinic).await,
        };
        let recorded = match client {
            Ok(client) => {
                let id = Some(*clinic.as_uuid());
                data::record_access(&*client, &self.actor, CLINIC, EXPORT, id, outcome).await
            }
            Err(e) => Err(e),
        };
        if let Err(audit_error) = recorded {
            tracing::error!(error = %audit_error, "could not record the end of a clinic export");
        }
        self.state.wake_shipper(clinic);
    }
}

/// The `i`th kind of row exported: every resource, then attachments' metadata.
fn exported(i: usize) -> Option<&'static Resource> {
    RESOURCES
        .get(i)
        .copied()
        .or_else(|| (i == RESOURCES.len()).then_some(&ATTACHMENTS))
}

/// One NDJSON line per row.
fn lines(r: &Resource, rows: Vec<Value>) -> Result<Bytes, WorkerError> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        serde_json::to_writer(&mut out, &json!({"resource": r.name, "data": row}))
            .map_err(|e| WorkerError::Internal(format!("encoding an export line: {e}")))?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use common::resource::PATIENTS;

    #[test]
    fn a_page_becomes_one_line_per_row() {
        let rows = vec![
            json!({"id": "a", "first_name": "Ada\nL"}),
            json!({"id": "b"}),
        ];
        let bytes = lines(&PATIENTS, rows).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let parsed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(text.ends_with('\n'));
        assert_eq!(parsed.len(), 2, "a newline inside a value stays escaped");
        assert_eq!(
            parsed[0],
            json!({"resource": "patients", "data": {"id": "a", "first_name": "Ada\nL"}})
        );
    }

    #[test]
    fn the_audit_name_is_no_served_resource() {
        assert!(common::resource::find(CLINIC.name).is_none());
    }
}
