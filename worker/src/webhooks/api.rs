//! The clinic admins' webhook endpoints:
//! `GET/POST /api/v1/webhook-subscriptions`, `GET/PATCH/DELETE …/{id}`,
//! `POST …/{id}/replay` (deliver again every event after a cursor),
//! `GET …/{id}/deliveries` (each delivery's state: attempts, last status and
//! error) and `GET /api/v1/webhook-events` (the clinic's events, whose `seq` is
//! the replay cursor). Every access is audited like any other.

use crate::access::{self, audited, parse_id};
use crate::budget::Conn;
use crate::context::Caller;
use crate::data::{self, Action};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use crate::state::AppState;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use common::crypto::FieldContext;
use common::resource::{Resource, WEBHOOK_EVENT_TYPES, WEBHOOK_SUBSCRIPTIONS};
use common::token::Role;
use common::ClinicId;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_postgres::Row;
use uuid::Uuid;

const R: &Resource = &WEBHOOK_SUBSCRIPTIONS;
/// Subscriptions one clinic may have.
pub const MAX_SUBSCRIPTIONS: i64 = 20;
/// The column a subscription's secret is sealed under (its associated data).
pub const SECRET_COLUMN: &str = "secret";
/// The most events or deliveries one page lists.
const MAX_PAGE: i64 = 100;

const COLUMNS: &str = "s.id, s.url, s.description, s.event_types, s.role, s.enabled, \
     s.disabled_at, s.disabled_reason, s.failing_since, s.last_error, s.last_success_at, \
     s.created_at, s.updated_at, \
     (SELECT count(*) FROM webhook_deliveries d WHERE d.subscription_id = s.id AND d.delivered_at IS NULL)";

fn db(e: tokio_postgres::Error) -> WorkerError {
    WorkerError::from_db(e)
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| pgconn::rows::timestamp(t).into())
}

fn subscription_json(row: &Row) -> Result<Value, WorkerError> {
    Ok(json!({
        "id": row.try_get::<_, Uuid>(0).map_err(db)?,
        "url": row.try_get::<_, String>(1).map_err(db)?,
        "description": row.try_get::<_, Option<String>>(2).map_err(db)?,
        "event_types": row.try_get::<_, Vec<String>>(3).map_err(db)?,
        "role": row.try_get::<_, String>(4).map_err(db)?,
        "enabled": row.try_get::<_, bool>(5).map_err(db)?,
        "disabled_at": time(row.try_get(6).map_err(db)?),
        "disabled_reason": row.try_get::<_, Option<String>>(7).map_err(db)?,
        "failing_since": time(row.try_get(8).map_err(db)?),
        "last_error": row.try_get::<_, Option<String>>(9).map_err(db)?,
        "last_success_at": time(row.try_get(10).map_err(db)?),
        "created_at": time(row.try_get(11).map_err(db)?),
        "updated_at": time(row.try_get(12).map_err(db)?),
        "pending_deliveries": row.try_get::<_, i64>(13).map_err(db)?,
    }))
}

/// A miss is an access too: recorded as `not_found` (whatever found nothing was
/// rolled back with its transaction).
async fn recorded<T>(
    client: &Conn,
    actor: &data::Actor,
    action: Action,
    id: Uuid,
    result: Result<T, WorkerError>,
) -> Result<T, WorkerError> {
    if matches!(result, Err(WorkerError::NotFound)) {
        data::record_access(&**client, actor, R, action, Some(id), "not_found").await?;
    }
    result
}

/// One access to the clinic's webhooks through [`audited`]: refused (and
/// recorded) for anyone but an admin, and a miss of subscription `id` recorded
/// as `not_found`.
async fn admins<T, F, Fut>(
    state: &AppState,
    caller: &Caller,
    action: Action,
    id: Option<Uuid>,
    op: F,
) -> Result<T, WorkerError>
where
    F: FnOnce(Conn, data::Actor, Arc<ClinicKeyCache>) -> Fut,
    Fut: std::future::Future<Output = (Conn, Result<T, WorkerError>)>,
{
    let refused = refusal(caller);
    audited(
        state,
        caller,
        R,
        action,
        id,
        |client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let (client, result) = op(client, actor, keys).await;
            let result = match id {
                Some(id) => recorded(&client, &access::actor(caller), action, id, result).await,
                None => result,
            };
            (client, result)
        },
    )
    .await
}

/// Why `caller` may not manage webhooks, if they may not.
fn refusal(caller: &Caller) -> Option<String> {
    (caller.role != Role::Admin).then(|| {
        format!(
            "Only admin may manage webhooks; you are signed in as {}.",
            caller.role.as_str()
        )
    })
}

fn event_types(raw: Vec<String>) -> Result<Vec<String>, WorkerError> {
    if raw.is_empty() {
        return Err(WorkerError::BadRequest(
            "`event_types` must name at least one event type.".into(),
        ));
    }
    let mut types = Vec::with_capacity(raw.len());
    for t in raw {
        if !WEBHOOK_EVENT_TYPES.contains(&t.as_str()) {
            let shown: String = t.chars().filter(|c| !c.is_control()).take(64).collect();
            return Err(WorkerError::BadRequest(format!(
                "`{shown}` is not an event type; known ones: {}.",
                WEBHOOK_EVENT_TYPES.join(", ")
            )));
        }
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Ok(types)
}

fn description(raw: Option<String>) -> Result<Option<String>, WorkerError> {
    match raw {
        Some(d) if d.chars().count() > 500 || d.contains('\0') => Err(WorkerError::BadRequest(
            "`description` must be at most 500 characters.".into(),
        )),
        other => Ok(other),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WorkerError> {
    serde_json::from_slice(bytes)
        .map_err(|e| WorkerError::BadRequest(format!("The body is not a valid subscription: {e}.")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    url: String,
    event_types: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionChange {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    after: i64,
}

/// Keeps the central list of subscribed clinics in step with the clinic's
/// subscriptions (after a create or a delete).
async fn register_clinic(
    state: &AppState,
    clinic: ClinicId,
    subscribed: bool,
) -> Result<(), WorkerError> {
    let central = state.registry.central().get().await?;
    let text = if subscribed {
        "INSERT INTO webhook_clinics (clinic_id) VALUES ($1) ON CONFLICT (clinic_id) DO UPDATE SET updated_at = now()"
    } else {
        "DELETE FROM webhook_clinics WHERE clinic_id = $1"
    };
    central
        .execute(text, &[clinic.as_uuid()])
        .await
        .map_err(db)?;
    if subscribed {
        state.hooks.subscribe(clinic);
    } else {
        state.hooks.forget(clinic);
    }
    Ok(())
}

/// `GET /api/v1/webhook-subscriptions`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, WorkerError> {
    let data = admins(
        &state,
        &caller,
        Action::List,
        None,
        |client, actor, _keys| async move {
            let result = async {
                let rows = client
                    .query(
                        &format!("SELECT {COLUMNS} FROM webhook_subscriptions s ORDER BY s.created_at, s.id"),
                        &[],
                    )
                    .await
                    .map_err(db)?;
                let data = rows.iter().map(subscription_json).collect::<Result<Vec<_>, _>>()?;
                data::record_access(&*client, &actor, R, Action::List, None, "success").await?;
                Ok(data)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    Ok(Json(json!({"data": data, "next_cursor": null})).into_response())
}

/// `POST /api/v1/webhook-subscriptions`: the secret is in this answer only.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, WorkerError> {
    let bytes = access::body(&state, req).await?;
    let allow_private = state.webhooks.allow_private;
    let id = Uuid::now_v7();
    let made = admins(
        &state,
        &caller,
        Action::Create,
        Some(id),
        |mut client, actor, keys| async move {
            let result = async {
                let body: NewSubscription = parse_body(&bytes)?;
                let url = super::target::check(body.url.trim(), allow_private)
                    .map_err(WorkerError::BadRequest)?;
                let types = event_types(body.event_types)?;
                let role = match body.role.as_deref() {
                    None => Role::Staff,
                    Some(r) => Role::parse(r).ok_or_else(|| {
                        WorkerError::BadRequest("`role` must be admin, practitioner or staff.".into())
                    })?,
                };
                let description = description(body.description)?;
                let mut raw = [0u8; 32];
                rand::rng().fill_bytes(&mut raw);
                let secret = format!("whsec_{}", STANDARD.encode(raw));
                let sealed = keys.current().seal_field(
                    &FieldContext {
                        clinic: actor.clinic,
                        table: R.table,
                        row: &id,
                        column: SECRET_COLUMN,
                    },
                    &raw,
                );
                let tx = client.transaction().await.map_err(db)?;
                // Creates one at a time, so the cap holds under concurrency.
                tx.batch_execute("LOCK TABLE webhook_subscriptions IN SHARE ROW EXCLUSIVE MODE")
                    .await
                    .map_err(db)?;
                let count: i64 = tx
                    .query_one("SELECT count(*) FROM webhook_subscriptions", &[])
                    .await
                    .map_err(db)?
                    .get(0);
                if count >= MAX_SUBSCRIPTIONS {
                    return Err(WorkerError::Conflict(format!(
                        "A clinic has at most {MAX_SUBSCRIPTIONS} webhook subscriptions; delete one first."
                    )));
                }
                tx.execute(
                    "INSERT INTO webhook_subscriptions (id, company_id, url, description, event_types, role, secret_enc, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &id,
                        actor.clinic.as_uuid(),
                        &url.to_string(),
                        &description,
                        &types,
                        &role.as_str(),
                        &sealed,
                        &actor.user,
                    ],
                )
                .await
                .map_err(db)?;
                data::record_access(&tx, &actor, R, Action::Create, Some(id), "success").await?;
                let row = tx
                    .query_one(
                        &format!("SELECT {COLUMNS} FROM webhook_subscriptions s WHERE s.id = $1"),
                        &[&id],
                    )
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                let mut out = subscription_json(&row)?;
                out["secret"] = secret.into();
                Ok(out)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    register_clinic(&state, caller.clinic, true).await?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// `GET /api/v1/webhook-subscriptions/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, WorkerError> {
    let id = parse_id(&raw)?;
    let found = admins(
        &state,
        &caller,
        Action::Read,
        Some(id),
        |client, actor, _keys| async move {
            let result = async {
                let row = client
                    .query_opt(
                        &format!("SELECT {COLUMNS} FROM webhook_subscriptions s WHERE s.id = $1"),
                        &[&id],
                    )
                    .await
                    .map_err(db)?
                    .ok_or(WorkerError::NotFound)?;
                data::record_access(&*client, &actor, R, Action::Read, Some(id), "success").await?;
                subscription_json(&row)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    Ok(Json(found).into_response())
}

/// `PATCH /api/v1/webhook-subscriptions/{id}`: `url`, `event_types`,
/// `description`, `enabled`. Enabling a disabled subscription clears its failure
/// and retries its pending deliveries at once, in order.
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    req: Request,
) -> Result<Response, WorkerError> {
    let id = parse_id(&raw)?;
    let bytes = access::body(&state, req).await?;
    let allow_private = state.webhooks.allow_private;
    let changed = admins(
        &state,
        &caller,
        Action::Update,
        Some(id),
        |mut client, actor, _keys| async move {
            let result = async {
                let body: SubscriptionChange = parse_body(&bytes)?;
                let url = match body.url {
                    Some(u) => Some(
                        super::target::check(u.trim(), allow_private)
                            .map_err(WorkerError::BadRequest)?
                            .to_string(),
                    ),
                    None => None,
                };
                let types = body.event_types.map(event_types).transpose()?;
                let description = description(body.description)?;
                let tx = client.transaction().await.map_err(db)?;
                let updated = tx
                    .execute(
                        "UPDATE webhook_subscriptions SET \
                            url = coalesce($2, url), \
                            event_types = coalesce($3, event_types), \
                            description = coalesce($4, description), \
                            enabled = coalesce($5, enabled), \
                            disabled_at = CASE WHEN $5 THEN NULL WHEN $5 = false THEN coalesce(disabled_at, now()) ELSE disabled_at END, \
                            disabled_reason = CASE WHEN $5 THEN NULL WHEN $5 = false AND enabled THEN 'Disabled by an admin.' ELSE disabled_reason END, \
                            created_by = CASE WHEN $5 OR $2::text IS NOT NULL THEN $6 ELSE created_by END, \
                            failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END, \
                            updated_at = now() \
                         WHERE id = $1",
                        &[&id, &url, &types, &description, &body.enabled, &actor.user],
                    )
                    .await
                    .map_err(db)?;
                if updated == 0 {
                    return Err(WorkerError::NotFound);
                }
                if body.enabled == Some(true) {
                    tx.execute(
                        "UPDATE webhook_deliveries SET next_attempt_at = now() \
                         WHERE subscription_id = $1 AND delivered_at IS NULL",
                        &[&id],
                    )
                    .await
                    .map_err(db)?;
                }
                data::record_access(&tx, &actor, R, Action::Update, Some(id), "success").await?;
                let row = tx
                    .query_one(
                        &format!("SELECT {COLUMNS} FROM webhook_subscriptions s WHERE s.id = $1"),
                        &[&id],
                    )
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                subscription_json(&row)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    state.hooks.subscribe(caller.clinic);
    Ok(Json(changed).into_response())
}

/// `DELETE /api/v1/webhook-subscriptions/{id}`: the subscription and its
/// pending deliveries are gone.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, WorkerError> {
    let id = parse_id(&raw)?;
    let left = admins(
        &state,
        &caller,
        Action::Delete,
        Some(id),
        |mut client, actor, _keys| async move {
            let result = async {
                let tx = client.transaction().await.map_err(db)?;
                let deleted = tx
                    .execute("DELETE FROM webhook_subscriptions WHERE id = $1", &[&id])
                    .await
                    .map_err(db)?;
                if deleted == 0 {
                    return Err(WorkerError::NotFound);
                }
                data::record_access(&tx, &actor, R, Action::Delete, Some(id), "success").await?;
                let left: i64 = tx
                    .query_one("SELECT count(*) FROM webhook_subscriptions", &[])
                    .await
                    .map_err(db)?
                    .get(0);
                tx.commit().await.map_err(db)?;
                Ok(left)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    if left == 0 {
        register_clinic(&state, caller.clinic, false).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/webhook-subscriptions/{id}/replay` `{"after": seq}`: every event
/// after `seq` that the subscription wants is delivered again, in order, with
/// its original `webhook-id` (receivers that keep ids see them as repeats).
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    req: Request,
) -> Result<Response, WorkerError> {
    let id = parse_id(&raw)?;
    let bytes = access::body(&state, req).await?;
    let queued = admins(
        &state,
        &caller,
        Action::Named("replay"),
        Some(id),
        |mut client, actor, _keys| async move {
            let result = async {
                let body: Replay = parse_body(&bytes)?;
                if body.after < 0 {
                    return Err(WorkerError::BadRequest(
                        "`after` is an event's `seq` (0: from the first event kept).".into(),
                    ));
                }
                let tx = client.transaction().await.map_err(db)?;
                let found = tx
                    .execute("SELECT 1 FROM webhook_subscriptions WHERE id = $1 FOR UPDATE", &[&id])
                    .await
                    .map_err(db)?;
                if found == 0 {
                    return Err(WorkerError::NotFound);
                }
                let queued = tx
                    .execute(
                        "INSERT INTO webhook_deliveries (subscription_id, event_seq) \
                         SELECT s.id, e.seq FROM webhook_events e JOIN webhook_subscriptions s ON e.type = ANY (s.event_types) \
                         WHERE s.id = $1 AND e.seq > $2 \
                         ON CONFLICT (subscription_id, event_seq) DO UPDATE SET delivered_at = NULL, attempts = 0, \
                             next_attempt_at = now(), last_status = NULL, last_error = NULL",
                        &[&id, &body.after],
                    )
                    .await
                    .map_err(db)?;
                data::record_access(&tx, &actor, R, Action::Named("replay"), Some(id), "success").await?;
                tx.commit().await.map_err(db)?;
                Ok(queued)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    state.hooks.subscribe(caller.clinic);
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": queued}))).into_response())
}

/// `after` and `limit` of a page of events or deliveries.
fn page(raw: Option<&str>) -> Result<(i64, i64), WorkerError> {
    let mut after = 0i64;
    let mut limit = 20i64;
    for (k, v) in common::query::strict_pairs(raw.unwrap_or(""))
        .map_err(|e| WorkerError::BadRequest(e.to_string()))?
    {
        let n = v.parse::<i64>().ok();
        match (k.as_str(), n) {
            ("after" | "cursor", Some(n)) if n >= 0 => after = n,
            ("limit", Some(n)) if (1..=MAX_PAGE).contains(&n) => limit = n,
            ("after" | "cursor", _) => {
                return Err(WorkerError::BadRequest(
                    "`after` is an event's `seq`, a whole number.".into(),
                ))
            }
            ("limit", _) => {
                return Err(WorkerError::BadRequest(format!(
                    "`limit` must be 1 to {MAX_PAGE}."
                )))
            }
            (other, _) => {
                let shown: String = other.chars().filter(|c| !c.is_control()).take(64).collect();
                return Err(WorkerError::BadRequest(format!(
                    "`{shown}` is not a parameter here; use `after` and `limit`."
                )));
            }
        }
    }
    Ok((after, limit))
}

fn next_cursor(rows: &[Value], limit: i64) -> Value {
    if rows.len() as i64 == limit {
        rows.last()
            .and_then(|r| r["seq"].as_i64())
            .map_or(Value::Null, |s| s.to_string().into())
    } else {
        Value::Null
    }
}

/// `GET /api/v1/webhook-events?after=&limit=`: the clinic's events kept, in order.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    let (after, limit) = page(raw.as_deref())?;
    let rows = admins(
        &state,
        &caller,
        Action::Named("events"),
        None,
        |client, actor, _keys| async move {
            let result = async {
                let rows = client
                    .query(
                        "SELECT seq, id, type, resource, resource_id, occurred_at FROM webhook_events \
                         WHERE seq > $1 ORDER BY seq LIMIT $2",
                        &[&after, &limit],
                    )
                    .await
                    .map_err(db)?;
                let data = rows
                    .iter()
                    .map(|r| {
                        Ok(json!({
                            "seq": r.try_get::<_, i64>(0).map_err(db)?,
                            "id": r.try_get::<_, Uuid>(1).map_err(db)?,
                            "type": r.try_get::<_, String>(2).map_err(db)?,
                            "resource": r.try_get::<_, String>(3).map_err(db)?,
                            "resource_id": r.try_get::<_, Uuid>(4).map_err(db)?,
                            "occurred_at": time(r.try_get(5).map_err(db)?),
                        }))
                    })
                    .collect::<Result<Vec<_>, WorkerError>>()?;
                data::record_access(&*client, &actor, R, Action::Named("events"), None, "success")
                    .await?;
                Ok(data)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    let next = next_cursor(&rows, limit);
    Ok(Json(json!({"data": rows, "next_cursor": next})).into_response())
}

/// `GET /api/v1/webhook-subscriptions/{id}/deliveries?after=&limit=`: each
/// delivery of the subscription in event order, with its state.
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    let id = parse_id(&raw_id)?;
    let (after, limit) = page(raw.as_deref())?;
    let rows = admins(
        &state,
        &caller,
        Action::Named("deliveries"),
        Some(id),
        |client, actor, _keys| async move {
            let result = async {
                let exists = client
                    .query_opt("SELECT 1 FROM webhook_subscriptions WHERE id = $1", &[&id])
                    .await
                    .map_err(db)?;
                if exists.is_none() {
                    return Err(WorkerError::NotFound);
                }
                let rows = client
                    .query(
                        "SELECT d.event_seq, e.id, e.type, d.attempts, d.last_status, d.last_error, \
                                d.next_attempt_at, d.delivered_at \
                         FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
                         WHERE d.subscription_id = $1 AND d.event_seq > $2 ORDER BY d.event_seq LIMIT $3",
                        &[&id, &after, &limit],
                    )
                    .await
                    .map_err(db)?;
                let data = rows
                    .iter()
                    .map(|r| {
                        let delivered: Option<DateTime<Utc>> = r.try_get(7).map_err(db)?;
                        Ok(json!({
                            "seq": r.try_get::<_, i64>(0).map_err(db)?,
                            "event_id": r.try_get::<_, Uuid>(1).map_err(db)?,
                            "type": r.try_get::<_, String>(2).map_err(db)?,
                            "attempts": r.try_get::<_, i32>(3).map_err(db)?,
                            "last_status": r.try_get::<_, Option<i32>>(4).map_err(db)?,
                            "last_error": r.try_get::<_, Option<String>>(5).map_err(db)?,
                            "next_attempt_at": if delivered.is_some() { Value::Null } else { time(r.try_get(6).map_err(db)?) },
                            "delivered_at": time(delivered),
                        }))
                    })
                    .collect::<Result<Vec<_>, WorkerError>>()?;
                data::record_access(&*client, &actor, R, Action::Named("deliveries"), Some(id), "success")
                    .await?;
                Ok(data)
            }
            .await;
            (client, result)
        },
    )
    .await?;
    let next = next_cursor(&rows, limit);
    Ok(Json(json!({"data": rows, "next_cursor": next})).into_response())
}
