//! What the handlers share: how one access of a caller runs with its audit record.
//! A write's statement records itself ([`audited`]); a read is group-committed
//! before it answers ([`read_audited`]); a failure is recorded either way. Also the
//! small parsers of a request (resource, id, body) every handler uses.

use crate::budget::Conn;
use crate::context::Caller;
use crate::data::{self, Action, Actor};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use crate::registry::ClinicPool;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header;
use common::resource::{self, Resource};
use std::sync::Arc;
use uuid::Uuid;

/// The resource named in the path.
pub fn resource(name: &str) -> Result<&'static Resource, WorkerError> {
    resource::find(name).ok_or(WorkerError::UnknownResource)
}

/// The row id in the path.
pub fn parse_id(raw: &str) -> Result<Uuid, WorkerError> {
    Uuid::parse_str(raw)
        .map_err(|_| WorkerError::BadRequest("The id in the path must be a UUID.".into()))
}

/// Why the caller may not write (`write`) or delete (`delete`) rows of `r`, if it
/// may not: each resource names the roles that may ([`common::resource::Access`]).
pub fn refusal(caller: &Caller, r: &Resource, delete: bool) -> Option<String> {
    let (roles, verb) = if delete {
        (r.access.delete, "delete or restore")
    } else {
        (r.access.write, "change")
    };
    if roles.contains(&caller.role) {
        return None;
    }
    let who: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
    Some(match who.as_slice() {
        [] => format!("Nobody may {verb} {} through the API.", r.name),
        _ => format!(
            "Only {} may {verb} {}; you are signed in as {}.",
            who.join(" or "),
            r.name,
            caller.role.as_str()
        ),
    })
}

/// The audited actor of a caller's statements.
pub fn actor(caller: &Caller) -> Actor {
    Actor {
        clinic: caller.clinic,
        user: *caller.user.as_uuid(),
        role: caller.role,
        client_ip: caller.client_ip,
        request_id: caller.request_id.to_string(),
    }
}

/// Reads a body up to `limit` bytes.
async fn read_body(limit: usize, body: Body) -> Result<Bytes, WorkerError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| WorkerError::PayloadTooLarge(limit))
}

fn content_length(req: &Request) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Records a failed access in the outbox over `client` (best effort for refusals;
/// an unrecordable failure is logged). `NotFound` and `PreconditionFailed` were
/// recorded by their statement.
async fn record_failure(
    client: &Conn,
    caller: &Caller,
    r: &'static Resource,
    action: Action,
    resource_id: Option<Uuid>,
    e: &WorkerError,
) {
    let outcome = match e {
        WorkerError::NotFound | WorkerError::PreconditionFailed => return,
        WorkerError::BadRequest(_)
        | WorkerError::Conflict(_)
        | WorkerError::Conflicts(..)
        | WorkerError::PayloadTooLarge(_)
        | WorkerError::ImportRefused(..)
        | WorkerError::TooManyRows(_)
        | WorkerError::UnsupportedMediaType(_)
        | WorkerError::Forbidden(_) => "rejected",
        _ => "error",
    };
    let record =
        data::record_access(&**client, &actor(caller), r, action, resource_id, outcome).await;
    if let Err(audit_error) = record {
        tracing::error!(error = %audit_error, "could not record a failed access");
    }
}

/// Runs one audited access whose statement records it (writes, actions). A
/// failure is recorded in the outbox too, and the shipper is woken.
pub async fn audited<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    r: &'static Resource,
    action: Action,
    resource_id: Option<Uuid>,
    op: F,
) -> Result<T, WorkerError>
where
    F: FnOnce(Conn, Actor, Arc<ClinicKeyCache>) -> Fut,
    Fut: std::future::Future<Output = (Conn, Result<T, WorkerError>)>,
{
    let (client, keys) = state.registry.session(caller.clinic).await?;
    let (client, result) = op(client, actor(caller), keys).await;
    if let Err(e) = &result {
        record_failure(&client, caller, r, action, resource_id, e).await;
    }
    // Back to the pool first, so the shipper finds the connection idle.
    drop(client);
    state.wake_shipper(caller.clinic);
    if result.is_ok() {
        state.hooks.wake(caller.clinic);
    }
    result
}

/// The connection a read runs on: its own, or one shared with other point reads in
/// flight ([`crate::registry::Registry::point_reader`]).
pub type ReadConn = Arc<Conn>;

/// How a read borrows its connection.
#[derive(Clone, Copy)]
pub enum Lane {
    /// A connection of its own (lists and searches: their time varies).
    Own,
    /// Pipelined with the clinic's other point reads (each one index probe).
    Pipelined,
}

impl Lane {
    async fn connect(self, state: &AppState, entry: &ClinicPool) -> Result<ReadConn, WorkerError> {
        Ok(match self {
            Lane::Own => Arc::new(state.registry.connection(entry).await?),
            Lane::Pipelined => state.registry.point_reader(entry).await?,
        })
    }
}

/// Runs one read whose record is group-committed ([`crate::commit`]): the
/// statement reads, its connection goes back to the pool, then the record — with
/// the rows `shown` — commits with the clinic's other reads, and only then is the
/// answer given. Pools hand out idle connections without a round trip to check
/// them, so a read that meets connection trouble (its connection closed under it
/// by a server restart or an idle timeout) runs again on a fresh connection:
/// reads change nothing, and a server that is really down refuses the new
/// connection at once.
#[allow(clippy::too_many_arguments)]
pub async fn read_audited<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    r: &'static Resource,
    action: Action,
    resource_id: Option<Uuid>,
    lane: Lane,
    shown: fn(&T) -> Option<Vec<Uuid>>,
    op: F,
) -> Result<T, WorkerError>
where
    F: Fn(ReadConn, Actor, Arc<ClinicKeyCache>) -> Fut,
    Fut: std::future::Future<Output = (ReadConn, Result<T, WorkerError>)>,
{
    let entry = state.registry.pool(caller.clinic).await?;
    let client = lane.connect(state, &entry).await?;
    let (mut client, mut result) = op(client, actor(caller), entry.keys.clone()).await;
    // Twice at most: a restart that closes every backend can close the first
    // fresh one too, while it is being opened.
    for _ in 0..2 {
        if !matches!(result, Err(WorkerError::Unavailable(_))) {
            break;
        }
        // A closed connection is not recycled: dropping it forgets it.
        drop(client);
        let fresh = Arc::new(state.registry.working_connection(&entry).await?);
        (client, result) = op(fresh, actor(caller), entry.keys.clone()).await;
    }
    let outcome = match &result {
        Ok(_) => "success",
        Err(WorkerError::NotFound) => "not_found",
        Err(e) => {
            record_failure(&client, caller, r, action, resource_id, e).await;
            drop(client);
            state.wake_shipper(caller.clinic);
            return result;
        }
    };
    drop(client);
    let record = crate::commit::OutboxRecord {
        user_id: *caller.user.as_uuid(),
        action: action.as_str(),
        resource: r.name,
        resource_id,
        resource_ids: result.as_ref().ok().and_then(shown),
        client_ip: caller.client_ip,
        request_id: caller.request_id.to_string(),
        outcome,
    };
    crate::commit::record(&state.registry.outbox(&entry), record).await?;
    state.wake_shipper(caller.clinic);
    result
}

/// The ids of listed rows (what a list showed).
pub fn row_ids(rows: &[serde_json::Value]) -> Vec<Uuid> {
    rows.iter()
        .filter_map(|row| row.get("id")?.as_str()?.parse().ok())
        .collect()
}

/// The request's body, refused past the configured limit (by its declared length
/// first, then as it is read).
pub async fn body(state: &AppState, req: Request) -> Result<Bytes, WorkerError> {
    body_within(state.max_body_bytes, req).await
}

/// The request's body, refused past `limit` bytes (an import's larger bound).
pub async fn body_within(limit: usize, req: Request) -> Result<Bytes, WorkerError> {
    if content_length(&req).is_some_and(|n| n > limit) {
        return Err(WorkerError::PayloadTooLarge(limit));
    }
    read_body(limit, req.into_body()).await
}
