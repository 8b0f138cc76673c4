//! The HTTP handlers of the clinic API: one set for every resource, each a thin
//! shell around the generic data layer that also records failed accesses.

use crate::access::{self, audited, parse_id, read_audited, resource, row_ids, Lane};
use crate::context::{Caller, Forward};
use crate::data::{self, Action};
use crate::error::WorkerError;
use crate::fhir;
use crate::query;
use crate::state::AppState;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::resource::{self, Resource};
use common::ClinicId;
use serde_json::json;
use uuid::Uuid;

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    list_of(&state, &caller, resource(&name)?, raw.as_deref()).await
}

/// One page of `r`'s rows as the query string `raw` asks.
async fn list_of(
    state: &AppState,
    caller: &Caller,
    r: &'static Resource,
    raw: Option<&str>,
) -> Result<Response, WorkerError> {
    let (data, next) = read_audited(
        state,
        caller,
        r,
        Action::List,
        None,
        Lane::Own,
        |(rows, _): &(Vec<serde_json::Value>, Option<data::Cursor>)| Some(row_ids(rows)),
        |client, actor, keys| async move {
            let result = match query::list_query(r, raw) {
                Ok(q) => data::list(&client, &keys, r, &actor, &q, data::Audit::Deferred).await,
                Err(e) => Err(e),
            };
            (client, result)
        },
    )
    .await?;
    let next = next.map(|cursor| cursor.encode());
    Ok(Json(json!({"data": data, "next_cursor": next})).into_response())
}

/// One object as an answer, with its `ETag` (see [`data::etag`]).
pub(crate) fn tagged(status: StatusCode, value: serde_json::Value) -> Response {
    let tag = data::etag(&value).and_then(|t| header::HeaderValue::try_from(t).ok());
    let mut response = (status, Json(value)).into_response();
    if let Some(tag) = tag {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// The request's `If-Match`, if it has one (an unreadable one matches nothing).
pub(crate) fn if_match(headers: &axum::http::HeaderMap) -> Option<data::IfMatch> {
    let raw = headers.get(header::IF_MATCH)?;
    Some(
        raw.to_str()
            .map(data::IfMatch::parse)
            .unwrap_or(data::IfMatch::Versions(Vec::new())),
    )
}

/// Creates, replaces or patches through the generic write path; a replace or patch
/// only if the row's version is one `if_match` names.
async fn write(
    state: &AppState,
    caller: &Caller,
    r: &'static Resource,
    target: Option<Uuid>,
    mode: data::Write,
    body: axum::body::Bytes,
    if_match: Option<data::IfMatch>,
) -> Result<serde_json::Value, WorkerError> {
    let action = if target.is_some() {
        Action::Update
    } else {
        Action::Create
    };
    // A refusal is an access attempt too: decided inside `audited` so it is recorded.
    let refused = access::refusal(caller, r, false);
    audited(
        state,
        caller,
        r,
        action,
        target,
        |mut client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let result = data::write(
                &mut client,
                &keys,
                r,
                &actor,
                target,
                mode,
                &body,
                if_match.as_ref(),
            )
            .await;
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
    let body = access::body(&state, req).await?;
    let created = write(&state, &caller, r, None, data::Write::Create, body, None).await?;
    Ok(tagged(StatusCode::CREATED, created))
}

pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    if r.name == resource::DOCUMENTS.name && crate::printing::wants_pdf(&headers) {
        return crate::printing::document(&state, &caller, id).await;
    }
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
    Ok(tagged(StatusCode::OK, found))
}

/// `PUT` (every writable field: those left out take their default or null) and
/// `PATCH` (only the fields sent) of one row: one handler, the method picks the mode.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    let mode = if req.method() == Method::PATCH {
        data::Write::Patch
    } else {
        data::Write::Replace
    };
    let expected = if_match(req.headers());
    let body = access::body(&state, req).await?;
    let updated = write(&state, &caller, r, Some(id), mode, body, expected).await?;
    Ok(tagged(StatusCode::OK, updated))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    let expected = if_match(&headers);
    let refused = access::refusal(&caller, r, true);
    audited(
        &state,
        &caller,
        r,
        Action::Delete,
        Some(id),
        |mut client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let result =
                data::set_deleted(&mut client, &keys, r, &actor, id, true, expected.as_ref()).await;
            (client, result)
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/{resource}/{id}/{action}`: `restore` for every resource, plus the
/// resource's own row actions (e.g. `issue`, `convert` for documents).
async fn act(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id, action)): Path<(String, String, String)>,
) -> Result<Response, WorkerError> {
    let r = resource(&name)?;
    let id = parse_id(&id)?;
    if action == RESTORE {
        let refused = access::refusal(&caller, r, true);
        let restored = audited(
            &state,
            &caller,
            r,
            Action::Restore,
            Some(id),
            |mut client, actor, keys| async move {
                if let Some(refusal) = refused {
                    return (client, Err(WorkerError::Forbidden(refusal)));
                }
                let result =
                    data::set_deleted(&mut client, &keys, r, &actor, id, false, None).await;
                (client, result)
            },
        )
        .await?;
        return Ok(tagged(StatusCode::OK, restored.unwrap_or_default()));
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
    Ok(tagged(status, value))
}

/// The row action every resource has.
const RESTORE: &str = "restore";

/// `/api/v1/{resource}/{id}/{action}`: `POST` runs the action ([`act`]); any other
/// method is `405` with `allow: POST` when the resource has that action, else `404`
/// (the sub-resources that are read, a patient's export and an invoice's payments,
/// have routes of their own).
pub async fn row_action(
    state: State<AppState>,
    method: Method,
    caller: Caller,
    path: Path<(String, String, String)>,
) -> Result<Response, WorkerError> {
    if method == Method::POST {
        return act(state, caller, path).await;
    }
    let Path((name, _, action)) = path;
    let r = resource(&name)?;
    if action != RESTORE && r.action(&action).is_none() {
        return Err(WorkerError::UnknownResource);
    }
    Ok(method_not_allowed("POST"))
}

/// A `405` problem whose `allow` header lists `allow`.
fn method_not_allowed(allow: &'static str) -> Response {
    let problem = common::problem::Problem::new(405, "method-not-allowed", "Method not allowed")
        .with_detail(format!(
            "This endpoint answers {allow} only; see /api/v1/openapi.json."
        ));
    let mut response = httpkit::problem::response(&problem);
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

/// `POST /api/v1/documents/{id}/payments`: records a payment against the invoice,
/// the body of a `payments` create with the invoice taken from the path (a
/// `document_id` in the body must name the same invoice).
pub async fn record_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(invoice): Path<String>,
    req: Request,
) -> Result<Response, WorkerError> {
    let invoice = parse_id(&invoice)?;
    let (state, caller) = (&state, &caller);
    let body = access::body(state, req).await?;
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| WorkerError::BadRequest("The body must be a JSON object.".into()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| WorkerError::BadRequest("The body must be a JSON object.".into()))?;
    match object.get("document_id").and_then(|v| v.as_str()) {
        Some(given) if given != invoice.to_string() => {
            return Err(WorkerError::BadRequest(
                "`document_id` must be the invoice in the path (or be left out).".into(),
            ))
        }
        _ => {}
    }
    object.insert("document_id".into(), invoice.to_string().into());
    let body = serde_json::to_vec(&value)
        .map_err(|e| WorkerError::Internal(format!("encoding a payment: {e}")))?;
    let created = write(
        state,
        caller,
        &resource::PAYMENTS,
        None,
        data::Write::Create,
        body.into(),
        None,
    )
    .await?;
    Ok(tagged(StatusCode::CREATED, created))
}

/// `GET /api/v1/documents/{id}/payments`: the invoice's payments, a list of
/// `payments` filtered by the invoice.
pub async fn list_payments(
    State(state): State<AppState>,
    caller: Caller,
    Path(invoice): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    let invoice = parse_id(&invoice)?;
    let (state, caller, raw) = (&state, &caller, raw.as_deref());
    // A `document_id` in the query too is refused as a repeated parameter.
    let mut query = format!("document_id={invoice}");
    if let Some(raw) = raw.filter(|q| !q.is_empty()) {
        query.push('&');
        query.push_str(raw);
    }
    list_of(state, caller, &resource::PAYMENTS, Some(&query)).await
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
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
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
