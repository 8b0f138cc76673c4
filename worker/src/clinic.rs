//! The clinic's own settings, `GET` (everyone in the clinic) and `PUT` (admins)
//! `/api/v1/clinic`: its name and legal identity as printed on documents, its IANA
//! time zone (working hours, "today", the invoice year), locale, currency and
//! numbering prefixes. One row in the clinic's database, read and written through
//! the data layer's singleton path, audited like any resource.

use crate::access::{self, audited, read_audited, Lane};
use crate::context::Caller;
use crate::data::{self, Action};
use crate::error::WorkerError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use common::resource::{Resource, CLINIC_SETTINGS};

const SETTINGS: &Resource = &CLINIC_SETTINGS;

/// The clinic's time zone from a settings body, if it names one PostgreSQL might
/// accept but that is no IANA zone (`EST5EDT`-style names, offsets, typos).
fn check_time_zone(body: &[u8]) -> Result<(), WorkerError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| WorkerError::BadRequest(format!("The body is not valid JSON: {e}.")))?;
    match value.get("time_zone") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(name)) if schedule::zone(name).is_some() => Ok(()),
        Some(_) => Err(WorkerError::BadRequest(
            "`time_zone` must be an IANA time zone name such as `Europe/Paris` or `America/New_York`."
                .into(),
        )),
    }
}

/// `GET /api/v1/clinic`.
pub async fn get(State(state): State<AppState>, caller: Caller) -> Result<Response, WorkerError> {
    let settings = read_audited(
        &state,
        &caller,
        SETTINGS,
        Action::Read,
        None,
        Lane::Own,
        |_| None,
        |client, actor, _keys| async move {
            let result = data::singleton::get(&**client, SETTINGS, &actor).await;
            (client, result)
        },
    )
    .await?;
    Ok(crate::api::tagged(StatusCode::OK, settings))
}

/// `PUT /api/v1/clinic`: every field (those left out take their default); with
/// `If-Match`, only if the settings are still at a version it names (else `412`,
/// nothing changed).
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, WorkerError> {
    let expected = crate::api::if_match(req.headers());
    let body = access::body(&state, req).await?;
    let refused = access::refusal(&caller, SETTINGS, false);
    let checked = check_time_zone(&body);
    let settings = audited(
        &state,
        &caller,
        SETTINGS,
        Action::Update,
        None,
        |client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            if let Err(e) = checked {
                return (client, Err(e));
            }
            let result = data::singleton::replace(
                &*client,
                &keys,
                SETTINGS,
                &actor,
                &body,
                expected.as_ref(),
            )
            .await;
            (client, result)
        },
    )
    .await?;
    Ok(crate::api::tagged(StatusCode::OK, settings))
}
