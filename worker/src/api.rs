//! The HTTP handlers of the clinic API: one set for every resource, each a thin
//! shell around the generic data layer that also records failed accesses.

use crate::context::{Caller, Forward};
use crate::data::{self, Action, Actor, ListQuery};
use crate::error::WorkerError;
use crate::fhir;
use crate::keys::ClinicKeyCache;
use crate::server::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::resource::{self, Resource};
use common::ClinicId;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

fn resource(name: &str) -> Result<&'static Resource, WorkerError> {
    resource::find(name).ok_or(WorkerError::UnknownResource)
}

fn parse_id(raw: &str) -> Result<Uuid, WorkerError> {
    Uuid::parse_str(raw)
        .map_err(|_| WorkerError::BadRequest("The id in the path must be a UUID.".into()))
}

/// The audited actor of a caller's statements.
pub(crate) fn actor(caller: &Caller) -> Actor {
    Actor {
        clinic: caller.clinic,
        user: *caller.user.as_uuid(),
        role: caller.role,
        client_ip: caller.client_ip,
        request_id: caller.request_id.to_string(),
    }
}

/// Reads a body up to the configured limit.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, WorkerError> {
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| WorkerError::PayloadTooLarge(state.max_body_bytes))
}

fn content_length(req: &Request) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Records a failed access in the outbox over `client` (best effort for refusals;
/// an unrecordable failure is logged). `NotFound` was recorded by its statement.
async fn record_failure(
    client: &deadpool_postgres::Object,
    caller: &Caller,
    r: &'static Resource,
    action: Action,
    resource_id: Option<Uuid>,
    e: &WorkerError,
) {
    let outcome = match e {
        WorkerError::NotFound => return,
        WorkerError::BadRequest(_)
        | WorkerError::Conflict(_)
        | WorkerError::PayloadTooLarge(_)
        | WorkerError::Forbidden(_) => "rejected",
        _ => "error",
    };
    let record = data::record_access(client, &actor(caller), r, action, resource_id, outcome).await;
    if let Err(audit_error) = record {
        tracing::error!(error = %audit_error, "could not record a failed access");
    }
}

/// Runs one audited access whose statement records it (writes, actions). A
/// failure is recorded in the outbox too, and the shipper is woken.
async fn audited<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    r: &'static Resource,
    action: Action,
    resource_id: Option<Uuid>,
    op: F,
) -> Result<T, WorkerError>
where
    F: FnOnce(deadpool_postgres::Object, Actor, Arc<ClinicKeyCache>) -> Fut,
    Fut: std::future::Future<Output = (deadpool_postgres::Object, Result<T, WorkerError>)>,
{
    let (client, keys) = state.registry.session(caller.clinic).await?;
    let (client, result) = op(client, actor(caller), keys).await;
    if let Err(e) = &result {
        record_failure(&client, caller, r, action, resource_id, e).await;
    }
    // Back to the pool first, so the shipper finds the connection idle.
    drop(client);
    state.wake_shipper(caller.clinic);
    result
}

/// The connection a read runs on: its own, or one shared with other point reads in
/// flight ([`crate::registry::Registry::point_reader`]).
pub(crate) type ReadConn = Arc<deadpool_postgres::Object>;

/// How a read borrows its connection.
#[derive(Clone, Copy)]
enum Lane {
    /// A connection of its own (lists and searches: their time varies).
    Own,
    /// Pipelined with the clinic's other point reads (each one index probe).
    Pipelined,
}

impl Lane {
    async fn connect(
        self,
        state: &AppState,
        entry: &crate::registry::ClinicPool,
    ) -> Result<ReadConn, WorkerError> {
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
/// by a server restart or an idle timeout) runs once more on a fresh connection:
/// reads change nothing, and a server that is really down refuses the new
/// connection at once.
#[allow(clippy::too_many_arguments)]
async fn read_audited<T, F, Fut>(
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
    if matches!(result, Err(WorkerError::Unavailable(_))) {
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
    crate::commit::record(&state.registry, &entry, record).await?;
    state.wake_shipper(caller.clinic);
    result
}

/// The ids of listed rows (what a list showed).
pub(crate) fn row_ids(rows: &[serde_json::Value]) -> Vec<Uuid> {
    rows.iter()
        .filter_map(|row| row.get("id")?.as_str()?.parse().ok())
        .collect()
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let raw = raw.as_deref();
    let (data, next) = read_audited(
        &state,
        &caller,
        r,
        Action::List,
        None,
        Lane::Own,
        |(rows, _): &(Vec<serde_json::Value>, Option<String>)| Some(row_ids(rows)),
        |client, actor, keys| async move {
            let result = match ListQuery::parse(r, raw) {
                Ok(q) => data::list(&client, &keys, r, &actor, &q, data::Audit::Deferred).await,
                Err(e) => Err(e),
            };
            (client, result)
        },
    )
    .await?;
    Ok(Json(json!({"data": data, "next_cursor": next})).into_response())
}

async fn body(state: &AppState, req: Request) -> Result<Bytes, WorkerError> {
    if content_length(&req).is_some_and(|n| n > state.max_body_bytes) {
        return Err(WorkerError::PayloadTooLarge(state.max_body_bytes));
    }
    read_body(state, req.into_body()).await
}

/// Creates, replaces or patches through the generic write path.
async fn write(
    state: &AppState,
    caller: &Caller,
    r: &'static Resource,
    target: Option<Uuid>,
    mode: data::Write,
    req: Request,
) -> Result<serde_json::Value, WorkerError> {
    let body = body(state, req).await?;
    let action = if target.is_some() {
        Action::Update
    } else {
        Action::Create
    };
    audited(
        state,
        caller,
        r,
        action,
        target,
        |mut client, actor, keys| async move {
            let result = data::write(&mut client, &keys, r, &actor, target, mode, &body).await;
            (client, result)
        },
    )
    .await
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let created = write(&state, &caller, r, None, data::Write::Create, req).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    let found = read_audited(
        &state,
        &caller,
        r,
        Action::Read,
        Some(id),
        Lane::Pipelined,
        |_| None,
        |client, actor, keys| async move {
            let result = data::get(&client, &keys, r, &actor, id, data::Audit::Deferred).await;
            (client, result)
        },
    )
    .await?;
    Ok(Json(found).into_response())
}

pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    Ok(Json(write(&state, &caller, r, Some(id), data::Write::Replace, req).await?).into_response())
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    Ok(Json(write(&state, &caller, r, Some(id), data::Write::Patch, req).await?).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    audited(
        &state,
        &caller,
        r,
        Action::Delete,
        Some(id),
        |mut client, actor, keys| async move {
            let result = data::set_deleted(&mut client, &keys, r, &actor, id, true).await;
            (client, result)
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/{resource}/{id}/{action}`: `restore` for every resource, plus the
/// resource's own row actions (e.g. `issue`, `convert` for documents).
pub async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id, action)): Path<(String, String, String)>,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    if action == "restore" {
        let restored = audited(
            &state,
            &caller,
            r,
            Action::Restore,
            Some(id),
            |mut client, actor, keys| async move {
                let result = data::set_deleted(&mut client, &keys, r, &actor, id, false).await;
                (client, result)
            },
        )
        .await?;
        return Ok(Json(restored.unwrap_or_default()).into_response());
    }
    let spec = r.action(&action).ok_or(WorkerError::UnknownResource)?;
    // A refusal is an access attempt too: decided inside `audited` so it is recorded.
    let refusal = (spec.admin_only && caller.role != common::token::Role::Admin)
        .then(|| format!("Only a clinic admin can {} {}.", spec.name, r.name));
    let value = audited(
        &state,
        &caller,
        r,
        Action::Named(spec.name),
        Some(id),
        |mut client, actor, keys| async move {
            if let Some(refusal) = refusal {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let result = data::act(&mut client, &keys, r, spec, &actor, id).await;
            (client, result)
        },
    )
    .await?;
    let status = if spec.creates {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(value)).into_response())
}

/// `POST /internal/v1/clinics/{id}/provision`: creates or completes the clinic's
/// role and database. Only the gateway may call it.
pub async fn provision(
    State(state): State<AppState>,
    _forward: Forward,
    Path(id): Path<String>,
) -> Result<Response, WorkerError> {
    let clinic: ClinicId = id
        .parse()
        .map_err(|_| WorkerError::BadRequest("The clinic id must be a UUID.".into()))?;
    state.provisioner.provision(clinic).await?;
    // The new admin is signed in with the answer and works at once: open the
    // clinic's pool (keys loaded, one connection within the budget) meanwhile.
    let registry = state.registry.clone();
    tokio::spawn(async move {
        let warmed = async {
            let entry = registry.pool(clinic).await?;
            registry.connection(&entry).await.map(drop)
        };
        if let Err(e) = warmed.await {
            tracing::warn!(%clinic, error = %e, "could not open a new clinic's pool ahead");
        }
    });
    Ok(Json(json!({"clinic_id": clinic, "status": "active"})).into_response())
}

/// `GET /api/v1/patients/{id}/export[?format=json|fhir]`: everything held about one
/// patient, for a data subject's access request (clinic admins only), as the data
/// layer's JSON or as a FHIR R4 Bundle (see [`crate::fhir`]).
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id, action)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    if name != resource::PATIENTS.name || action != "export" {
        return Err(WorkerError::UnknownResource);
    }
    let id = parse_id(&id)?;
    let format = fhir::Format::from_query(raw.as_deref())?;
    let refused = caller.role != common::token::Role::Admin;
    let r = &resource::PATIENTS;
    let exported = audited(
        &state,
        &caller,
        r,
        Action::Named("export"),
        Some(id),
        |client, actor, keys| async move {
            if refused {
                let refusal = "Only a clinic admin can export a patient's data.";
                return (client, Err(WorkerError::Forbidden(refusal.into())));
            }
            let result = data::export_patient(&client, &keys, &actor, id).await;
            (client, result)
        },
    )
    .await?;
    match format {
        fhir::Format::Json => Ok(Json(exported).into_response()),
        fhir::Format::Fhir => {
            let bundle = fhir::bundle(&exported, caller.clinic, chrono::Utc::now())?;
            let body = serde_json::to_vec(&bundle)
                .map_err(|e| WorkerError::Internal(format!("encoding a FHIR bundle: {e}")))?;
            Ok(([(header::CONTENT_TYPE, fhir::MEDIA_TYPE)], body).into_response())
        }
    }
}

pub async fn not_found() -> WorkerError {
    WorkerError::UnknownResource
}
