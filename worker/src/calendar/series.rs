//! Recurring series (`POST /api/v1/appointments/series`, then
//! `/api/v1/appointment-series/{id}`): planned with `schedule::recurrence` in the
//! clinic's zone, checked whole for conflicts (double bookings, outside hours),
//! written occurrence by occurrence through the data layer in one transaction;
//! read, changed or cancelled from one occurrence on.

use super::{appointment_type, bad, civil_date, clinic_zone, db, show, to_chrono, to_timestamp};
use crate::access::{self, audited, read_audited, Lane};
use crate::budget::Conn;
use crate::context::Caller;
use crate::data::{self, Action, Actor, Write};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use crate::state::AppState;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use common::resource::{APPOINTMENTS, APPOINTMENT_SERIES};
use jiff::tz::TimeZone;
use jiff::SignedDuration;
use schedule::recurrence::{End, Frequency, Series};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// An occurrence planned: its index and times.
type Planned = (i64, DateTime<Utc>, DateTime<Utc>);

/// A live occurrence to change: id, index, times and practitioner.
type Occurrence = (Uuid, i64, DateTime<Utc>, DateTime<Utc>, Uuid);

/// How a series repeats, from the `recurrence` member of a booking.
struct Recurrence {
    frequency: &'static str,
    every: i64,
    count: Option<i64>,
    until: Option<NaiveDate>,
}

fn parse_recurrence(v: Option<Value>) -> Result<Recurrence, WorkerError> {
    let v = v.ok_or_else(|| {
        bad("`recurrence` is required: {\"frequency\": \"weekly\"|\"monthly\", \"every\": n, and \"count\": n or \"until\": \"YYYY-MM-DD\"}.")
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("`recurrence` must be an object."))?;
    for key in obj.keys() {
        if !["frequency", "every", "count", "until"].contains(&key.as_str()) {
            return Err(bad(format!("Unknown field `{key}` in `recurrence`.")));
        }
    }
    let frequency = match obj.get("frequency").and_then(Value::as_str) {
        Some("weekly") => "weekly",
        Some("monthly") => "monthly",
        _ => return Err(bad("`recurrence.frequency` must be weekly or monthly.")),
    };
    let every = match obj.get("every") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=52).contains(n))
            .ok_or_else(|| bad("`recurrence.every` must be an integer from 1 to 52."))?,
    };
    let count = match obj.get("count") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|n| (1..=i64::from(schedule::recurrence::MAX_OCCURRENCES)).contains(n))
                .ok_or_else(|| {
                    bad(format!(
                        "`recurrence.count` must be an integer from 1 to {}.",
                        schedule::recurrence::MAX_OCCURRENCES
                    ))
                })?,
        ),
    };
    let until = match obj.get("until") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .ok_or_else(|| bad("`recurrence.until` must be a date (YYYY-MM-DD)."))?,
        ),
    };
    if count.is_some() == until.is_some() {
        return Err(bad(
            "Give `recurrence.count` or `recurrence.until`, one of them.",
        ));
    }
    Ok(Recurrence {
        frequency,
        every,
        count,
        until,
    })
}

fn take_timestamp(
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<DateTime<Utc>>, WorkerError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Some(t.with_timezone(&Utc)))
            .ok_or_else(|| bad(format!("`{name}` must be an RFC 3339 date-time."))),
    }
}

fn take_uuid(obj: &Map<String, Value>, name: &str) -> Result<Option<Uuid>, WorkerError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .map(Some)
            .ok_or_else(|| bad(format!("`{name}` must be a UUID."))),
    }
}

/// The occurrences of a planned series that cannot be booked: each with its
/// index, times and why (`double_booking` with the appointment in the way, or
/// `outside_hours`). `ignore` are appointments being moved themselves.
async fn conflicts(
    tx: &impl deadpool_postgres::GenericClient,
    tz: &TimeZone,
    practitioner: Uuid,
    planned: &[Planned],
    outside_hours: bool,
    ignore: &[Uuid],
) -> Result<Vec<Value>, WorkerError> {
    let index: Vec<i64> = planned.iter().map(|p| p.0).collect();
    let starts: Vec<DateTime<Utc>> = planned.iter().map(|p| p.1).collect();
    let ends: Vec<DateTime<Utc>> = planned.iter().map(|p| p.2).collect();
    let rows = tx
        .query(
            "WITH tz AS (SELECT clinic_time_zone() AS name), \
                  ruled AS (SELECT EXISTS (SELECT 1 FROM working_hours WHERE practitioner_id = $1 AND deleted_at IS NULL) \
                                OR EXISTS (SELECT 1 FROM hours_exceptions WHERE practitioner_id = $1 AND deleted_at IS NULL) AS yes) \
             SELECT o.i, o.s, o.e, \
                    (SELECT a.id FROM appointments a WHERE a.practitioner_id = $1 AND a.deleted_at IS NULL \
                       AND a.status NOT IN ('cancelled', 'no_show') AND a.id <> ALL($6::uuid[]) \
                       AND tstzrange(a.starts_at, a.ends_at) && tstzrange(o.s, o.e) ORDER BY a.starts_at LIMIT 1), \
                    $5 OR NOT (SELECT yes FROM ruled) OR practitioner_hours($1, (o.s AT TIME ZONE (SELECT name FROM tz))::date - 1, \
                        (o.e AT TIME ZONE (SELECT name FROM tz))::date) \
                        @> tsrange(o.s AT TIME ZONE (SELECT name FROM tz), o.e AT TIME ZONE (SELECT name FROM tz)) \
             FROM unnest($2::bigint[], $3::timestamptz[], $4::timestamptz[]) AS o(i, s, e) ORDER BY o.i",
            &[&practitioner, &index, &starts, &ends, &outside_hours, &ignore],
        )
        .await
        .map_err(db)?;
    let mut found = Vec::new();
    for row in &rows {
        let (i, s, e): Planned = (row.get(0), row.get(1), row.get(2));
        let clash: Option<Uuid> = row.get(3);
        let within: bool = row.get(4);
        let when = |t: DateTime<Utc>| to_timestamp(t).map(|t| show(tz, t));
        if let Some(other) = clash {
            found.push(
                json!({"series_index": i, "starts_at": when(s)?, "ends_at": when(e)?,
                "reason": "double_booking", "appointment_id": other}),
            );
        } else if !within {
            found.push(
                json!({"series_index": i, "starts_at": when(s)?, "ends_at": when(e)?,
                "reason": "outside_hours"}),
            );
        }
    }
    Ok(found)
}

fn refused_whole(conflicts: Vec<Value>, of: usize, what: &str) -> WorkerError {
    WorkerError::Conflicts(
        format!(
            "{} of the {of} occurrences cannot be {what} (listed in `conflicts`); nothing was changed. \
             Move them, book those outside working hours with \"outside_hours\": true, or shorten the series.",
            conflicts.len()
        ),
        Value::Array(conflicts),
    )
}

/// `POST /api/v1/appointments/series`: an appointment body (its `starts_at` the
/// first occurrence) plus `recurrence`; books every occurrence or none.
pub async fn book_series(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, WorkerError> {
    let body = access::body(&state, req).await?;
    let mut template: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(obj)) => obj,
        _ => return Err(bad("The body must be a JSON object.")),
    };
    let recurrence = parse_recurrence(template.remove("recurrence"))?;
    let refused = access::refusal(&caller, &APPOINTMENTS, false);
    let booked = audited(
        &state,
        &caller,
        &APPOINTMENT_SERIES,
        Action::Create,
        None,
        |mut client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let result = book(&mut client, &keys, &actor, template, &recurrence).await;
            (client, result)
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(booked)).into_response())
}

async fn book(
    client: &mut Conn,
    keys: &ClinicKeyCache,
    actor: &Actor,
    mut template: Map<String, Value>,
    recurrence: &Recurrence,
) -> Result<Value, WorkerError> {
    let starts =
        take_timestamp(&template, "starts_at")?.ok_or_else(|| bad("`starts_at` is required."))?;
    let practitioner = take_uuid(&template, "practitioner_id")?
        .ok_or_else(|| bad("`practitioner_id` is required."))?;
    let outside_hours = template.get("outside_hours").and_then(Value::as_bool) == Some(true);
    let tx = client.transaction().await.map_err(db)?;
    let tz = clinic_zone(&tx).await?;
    let minutes =
        match (
            take_timestamp(&template, "ends_at")?,
            take_uuid(&template, "appointment_type_id")?,
        ) {
            (Some(ends), _) if ends > starts => (ends - starts).num_minutes(),
            (Some(_), _) => return Err(bad("`ends_at` must come after `starts_at`.")),
            (None, Some(t)) => appointment_type(&tx, t).await?.0,
            (None, None) => return Err(bad(
                "Give `ends_at` or the `appointment_type_id` whose duration the appointments last.",
            )),
        };
    let first = tz.to_datetime(to_timestamp(starts)?);
    let end = match (recurrence.count, recurrence.until) {
        (Some(n), _) => End::Count(u32::try_from(n).unwrap_or(1)),
        (None, Some(d)) => End::Until(civil_date(d)?),
        (None, None) => End::Count(1),
    };
    let every = u32::try_from(recurrence.every).unwrap_or(1);
    let series = Series {
        first,
        duration: SignedDuration::from_mins(minutes),
        frequency: if recurrence.frequency == "weekly" {
            Frequency::Weeks(every)
        } else {
            Frequency::Months(every)
        },
        end,
    };
    let occurrences = series.occurrences(&tz).map_err(|e| bad(e.to_string()))?;
    let planned: Vec<Planned> = occurrences
        .iter()
        .map(|(i, slot)| Ok((i64::from(*i), to_chrono(slot.start)?, to_chrono(slot.end)?)))
        .collect::<Result<_, WorkerError>>()?;
    let found = conflicts(&tx, &tz, practitioner, &planned, outside_hours, &[]).await?;
    if !found.is_empty() {
        return Err(refused_whole(found, planned.len(), "booked"));
    }
    let series_id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO appointment_series (id, company_id, frequency, every, count, until) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&series_id, actor.clinic.as_uuid(), &recurrence.frequency, &recurrence.every, &recurrence.count, &recurrence.until],
    )
    .await
    .map_err(db)?;
    let mut booked = Vec::with_capacity(planned.len());
    for (i, starts_at, ends_at) in &planned {
        template.insert("starts_at".into(), starts_at.to_rfc3339().into());
        template.insert("ends_at".into(), ends_at.to_rfc3339().into());
        let body = serde_json::to_vec(&template)
            .map_err(|e| WorkerError::Internal(format!("encoding an occurrence: {e}")))?;
        let id = Uuid::now_v7();
        let mut row = data::write_in(&tx, keys, &APPOINTMENTS, actor, id, Write::Create, &body)
            .await?
            .ok_or_else(|| WorkerError::Internal("a new occurrence was not written".into()))?;
        tx.execute(
            "UPDATE appointments SET series_id = $1, series_index = $2 WHERE id = $3",
            &[&series_id, i, &id],
        )
        .await
        .map_err(db)?;
        if let Some(obj) = row.as_object_mut() {
            obj.insert("series_id".into(), series_id.to_string().into());
            obj.insert("series_index".into(), (*i).into());
        }
        booked.push(row);
    }
    data::record_access(
        &tx,
        actor,
        &APPOINTMENT_SERIES,
        Action::Create,
        Some(series_id),
        "success",
    )
    .await?;
    tx.commit().await.map_err(db)?;
    Ok(json!({
        "id": series_id,
        "frequency": recurrence.frequency,
        "every": recurrence.every,
        "count": recurrence.count,
        "until": recurrence.until.map(|d| d.to_string()),
        "time_zone": tz.iana_name().unwrap_or("UTC"),
        "appointments": booked,
    }))
}

/// One series and its occurrences (live ones, by index): ids, times, status.
async fn load_series(
    client: &impl deadpool_postgres::GenericClient,
    id: Uuid,
) -> Result<Option<Value>, WorkerError> {
    let Some(series) = client
        .query_opt(
            "SELECT frequency, every, count, until, created_at FROM appointment_series WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let tz = clinic_zone(client).await?;
    let rows = client
        .query(
            "SELECT id, series_index, starts_at, ends_at, status, practitioner_id FROM appointments \
             WHERE series_id = $1 AND deleted_at IS NULL ORDER BY series_index",
            &[&id],
        )
        .await
        .map_err(db)?;
    let mut occurrences = Vec::with_capacity(rows.len());
    for r in &rows {
        occurrences.push(json!({
            "id": r.get::<_, Uuid>(0),
            "series_index": r.get::<_, i64>(1),
            "starts_at": show(&tz, to_timestamp(r.get(2))?),
            "ends_at": show(&tz, to_timestamp(r.get(3))?),
            "status": r.get::<_, String>(4),
            "practitioner_id": r.get::<_, Uuid>(5),
        }));
    }
    let until: Option<NaiveDate> = series.get(3);
    let created: DateTime<Utc> = series.get(4);
    Ok(Some(json!({
        "id": id,
        "frequency": series.get::<_, String>(0),
        "every": series.get::<_, i64>(1),
        "count": series.get::<_, Option<i64>>(2),
        "until": until.map(|d| d.to_string()),
        "created_at": created.to_rfc3339(),
        "time_zone": tz.iana_name().unwrap_or("UTC"),
        "appointments": occurrences,
    })))
}

fn series_id(raw: &str) -> Result<Uuid, WorkerError> {
    access::parse_id(raw)
}

/// `GET /api/v1/appointment-series/{id}`.
pub async fn get_series(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, WorkerError> {
    let id = series_id(&id)?;
    let found = read_audited(
        &state,
        &caller,
        &APPOINTMENT_SERIES,
        Action::Read,
        Some(id),
        Lane::Own,
        |_| None,
        |client, _actor, _keys| async move {
            let result = load_series(&**client, id).await;
            (client, result)
        },
    )
    .await?;
    found
        .map(|v| Json(v).into_response())
        .ok_or(WorkerError::NotFound)
}

/// Which occurrences a change applies to: from `from_index` on (default: all),
/// only those still to come (booked or confirmed).
fn from_index(obj: &Map<String, Value>) -> Result<i64, WorkerError> {
    match obj.get("from_index") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_i64()
            .filter(|n| (0..=1000).contains(n))
            .ok_or_else(|| bad("`from_index` must be an occurrence index (from 0).")),
    }
}

/// The live, still-to-come occurrences of a series from an index on.
async fn selected(
    tx: &impl deadpool_postgres::GenericClient,
    series: Uuid,
    from: i64,
) -> Result<Vec<Occurrence>, WorkerError> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM appointment_series WHERE id = $1 FOR UPDATE",
            &[&series],
        )
        .await
        .map_err(db)?;
    if exists.is_none() {
        return Err(WorkerError::NotFound);
    }
    let rows = tx
        .query(
            "SELECT id, series_index, starts_at, ends_at, practitioner_id FROM appointments \
             WHERE series_id = $1 AND series_index >= $2 AND deleted_at IS NULL AND status IN ('booked', 'confirmed') \
             ORDER BY series_index FOR UPDATE",
            &[&series, &from],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

/// `PATCH /api/v1/appointment-series/{id}`: changes the occurrences from
/// `from_index` on (this and following; all without it): `shift_minutes` moves
/// them, `duration_minutes` resizes them, `practitioner_id`, `appointment_type_id`,
/// `status` and `outside_hours` are set on each. All or nothing.
pub async fn change_series(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WorkerError> {
    let id = series_id(&id)?;
    let body = access::body(&state, req).await?;
    let change: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(obj)) => obj,
        _ => return Err(bad("The body must be a JSON object.")),
    };
    for key in change.keys() {
        if ![
            "from_index",
            "shift_minutes",
            "duration_minutes",
            "practitioner_id",
            "appointment_type_id",
            "status",
            "outside_hours",
        ]
        .contains(&key.as_str())
        {
            return Err(bad(format!(
                "Unknown field `{key}`: a series changes by from_index, shift_minutes, duration_minutes, practitioner_id, appointment_type_id, status and outside_hours; change one occurrence with PATCH /api/v1/appointments/{{id}}."
            )));
        }
    }
    let refused = access::refusal(&caller, &APPOINTMENTS, false);
    let changed = audited(
        &state,
        &caller,
        &APPOINTMENT_SERIES,
        Action::Update,
        Some(id),
        |mut client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let result = change_occurrences(&mut client, &keys, &actor, id, change).await;
            (client, result)
        },
    )
    .await?;
    Ok(Json(changed).into_response())
}

async fn change_occurrences(
    client: &mut Conn,
    keys: &ClinicKeyCache,
    actor: &Actor,
    series: Uuid,
    change: Map<String, Value>,
) -> Result<Value, WorkerError> {
    let from = from_index(&change)?;
    let shift = match change.get("shift_minutes") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|m| m.abs() <= 60 * 24 * 366)
            .ok_or_else(|| {
                bad("`shift_minutes` must be an integer (minutes, negative moves earlier).")
            })?,
    };
    let duration = match change.get("duration_minutes") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|m| (5..=1440).contains(m))
                .ok_or_else(|| bad("`duration_minutes` must be from 5 to 1440."))?,
        ),
    };
    let new_practitioner = take_uuid(&change, "practitioner_id")?;
    let outside_hours = change.get("outside_hours").and_then(Value::as_bool) == Some(true);
    let tx = client.transaction().await.map_err(db)?;
    let tz = clinic_zone(&tx).await?;
    let targets = selected(&tx, series, from).await?;
    let mut planned_by: HashMap<Uuid, Vec<Planned>> = HashMap::new();
    let mut plan = Vec::with_capacity(targets.len());
    for (id, i, s, e, p) in &targets {
        let starts = *s + chrono::Duration::minutes(shift);
        let ends = match duration {
            Some(m) => starts + chrono::Duration::minutes(m),
            None => *e + chrono::Duration::minutes(shift),
        };
        let practitioner = new_practitioner.unwrap_or(*p);
        planned_by
            .entry(practitioner)
            .or_default()
            .push((*i, starts, ends));
        plan.push((*id, starts, ends));
    }
    let moving: Vec<Uuid> = targets.iter().map(|t| t.0).collect();
    let mut found = Vec::new();
    for (practitioner, planned) in &planned_by {
        found.extend(conflicts(&tx, &tz, *practitioner, planned, outside_hours, &moving).await?);
    }
    if !found.is_empty() {
        return Err(refused_whole(found, plan.len(), "changed so"));
    }
    for (id, starts, ends) in &plan {
        let mut patch = Map::new();
        patch.insert("starts_at".into(), starts.to_rfc3339().into());
        patch.insert("ends_at".into(), ends.to_rfc3339().into());
        for key in [
            "practitioner_id",
            "appointment_type_id",
            "status",
            "outside_hours",
        ] {
            if let Some(v) = change.get(key) {
                patch.insert(key.into(), v.clone());
            }
        }
        let body = serde_json::to_vec(&patch)
            .map_err(|e| WorkerError::Internal(format!("encoding a change: {e}")))?;
        data::write_in(&tx, keys, &APPOINTMENTS, actor, *id, Write::Patch, &body)
            .await?
            .ok_or(WorkerError::NotFound)?;
    }
    data::record_access(
        &tx,
        actor,
        &APPOINTMENT_SERIES,
        Action::Update,
        Some(series),
        "success",
    )
    .await?;
    let answer = load_series(&tx, series)
        .await?
        .ok_or(WorkerError::NotFound)?;
    tx.commit().await.map_err(db)?;
    Ok(answer)
}

/// `POST /api/v1/appointment-series/{id}/cancel` with `{"from_index": n}` (this
/// and following) or `{}` (the whole series): cancels the occurrences still to
/// come; past and already cancelled ones stay as they are.
pub async fn cancel_series(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, WorkerError> {
    let id = series_id(&id)?;
    let body = access::body(&state, req).await?;
    let change: Map<String, Value> = if body.is_empty() {
        Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(Value::Object(obj)) => obj,
            _ => return Err(bad("The body must be a JSON object (or empty).")),
        }
    };
    if let Some(key) = change.keys().find(|k| k.as_str() != "from_index") {
        return Err(bad(format!(
            "Unknown field `{key}`: only `from_index` is accepted."
        )));
    }
    let from = from_index(&change)?;
    let refused = access::refusal(&caller, &APPOINTMENTS, false);
    let cancelled = audited(
        &state,
        &caller,
        &APPOINTMENT_SERIES,
        Action::Named("cancel"),
        Some(id),
        |mut client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let result = cancel_occurrences(&mut client, &keys, &actor, id, from).await;
            (client, result)
        },
    )
    .await?;
    Ok(Json(cancelled).into_response())
}

async fn cancel_occurrences(
    client: &mut Conn,
    keys: &ClinicKeyCache,
    actor: &Actor,
    series: Uuid,
    from: i64,
) -> Result<Value, WorkerError> {
    let tx = client.transaction().await.map_err(db)?;
    let targets = selected(&tx, series, from).await?;
    let body = br#"{"status": "cancelled"}"#;
    for (id, ..) in &targets {
        data::write_in(&tx, keys, &APPOINTMENTS, actor, *id, Write::Patch, body)
            .await?
            .ok_or(WorkerError::NotFound)?;
    }
    data::record_access(
        &tx,
        actor,
        &APPOINTMENT_SERIES,
        Action::Named("cancel"),
        Some(series),
        "success",
    )
    .await?;
    let answer = load_series(&tx, series)
        .await?
        .ok_or(WorkerError::NotFound)?;
    tx.commit().await.map_err(db)?;
    Ok(answer)
}
