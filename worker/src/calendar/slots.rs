//! Free slots (`GET /api/v1/availability`): the window and rules parsed from the
//! query, the practitioners' hours, exceptions and bookings read in one pipelined
//! round trip, the slots cut by `schedule`.

use super::{
    appointment_type, bad, civil_date, civil_time, clinic_zone, db, show, to_chrono, to_timestamp,
    weekday,
};
use crate::access::{read_audited, Lane};
use crate::context::Caller;
use crate::data::Action;
use crate::error::WorkerError;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveTime;
use common::resource::AVAILABILITY;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use schedule::{Change, Exception, Hours, Interval, SlotRules, TimeRange, WeeklyHours};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The longest window one availability search covers.
const MAX_WINDOW_DAYS: i64 = 62;
/// Slots answered when the search names no `limit`, and the most it may ask.
const DEFAULT_SLOTS: usize = 1000;
const MAX_SLOTS: usize = 10_000;

/// A bound of the search window: an instant, or a day of the clinic's calendar.
enum Bound {
    At(Timestamp),
    Day(Date),
}

fn parse_bound(name: &str, v: &str) -> Result<Bound, WorkerError> {
    if let Ok(t) = v.parse::<Timestamp>() {
        return Ok(Bound::At(t));
    }
    if v.len() == 10 {
        if let Ok(d) = v.parse::<Date>() {
            return Ok(Bound::Day(d));
        }
    }
    Err(bad(format!(
        "`{name}` must be an RFC 3339 date-time or a date (YYYY-MM-DD, a day of the clinic's calendar)."
    )))
}

/// What a free-slot search asks.
struct SlotSearch {
    practitioner: Option<Uuid>,
    appointment_type: Option<Uuid>,
    duration_minutes: Option<i64>,
    step_minutes: Option<i64>,
    from: Bound,
    to: Bound,
    limit: usize,
}

fn parse_search(raw: Option<&str>) -> Result<SlotSearch, WorkerError> {
    let pairs = common::query::strict_pairs(raw.unwrap_or("")).map_err(|e| bad(e.to_string()))?;
    let mut q: HashMap<String, String> = pairs.into_iter().collect();
    let uuid = |q: &mut HashMap<String, String>, name: &str| -> Result<Option<Uuid>, WorkerError> {
        q.remove(name)
            .map(|v| Uuid::parse_str(&v).map_err(|_| bad(format!("`{name}` must be a UUID."))))
            .transpose()
    };
    let minutes = |q: &mut HashMap<String, String>, name: &str, max: i64| {
        q.remove(name)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|m| (5..=max).contains(m))
                    .ok_or_else(|| {
                        bad(format!(
                            "`{name}` must be a whole number of minutes from 5 to {max}."
                        ))
                    })
            })
            .transpose()
    };
    let practitioner = uuid(&mut q, "practitioner_id")?;
    let appointment_type = uuid(&mut q, "appointment_type_id")?;
    let duration_minutes = minutes(&mut q, "duration_minutes", 1440)?;
    let step_minutes = minutes(&mut q, "step_minutes", 1440)?;
    if appointment_type.is_none() && duration_minutes.is_none() {
        return Err(bad(
            "Name the `appointment_type_id` (its duration and buffer) or a `duration_minutes`.",
        ));
    }
    let from = parse_bound(
        "from",
        &q.remove("from").ok_or_else(|| bad("`from` is required."))?,
    )?;
    let to = parse_bound(
        "to",
        &q.remove("to").ok_or_else(|| bad("`to` is required."))?,
    )?;
    let limit = match q.remove("limit") {
        None => DEFAULT_SLOTS,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_SLOTS).contains(n))
            .ok_or_else(|| bad(format!("`limit` must be from 1 to {MAX_SLOTS}.")))?,
    };
    Ok(SlotSearch {
        practitioner,
        appointment_type,
        duration_minutes,
        step_minutes,
        from,
        to,
        limit,
    })
}

/// The window as instants: a day bound is its start (`from`) or the end of that
/// day (`to`, inclusive), in the clinic's zone.
fn window(tz: &TimeZone, s: &SlotSearch) -> Result<(Timestamp, Timestamp), WorkerError> {
    let range = |e: jiff::Error| bad(format!("the window is out of range: {e}"));
    let from = match s.from {
        Bound::At(t) => t,
        Bound::Day(d) => tz
            .to_timestamp(d.to_datetime(Time::midnight()))
            .map_err(range)?,
    };
    let to = match s.to {
        Bound::At(t) => t,
        Bound::Day(d) => tz
            .to_timestamp(d.tomorrow().map_err(range)?.to_datetime(Time::midnight()))
            .map_err(range)?,
    };
    if to <= from {
        return Err(bad("`to` must come after `from`."));
    }
    if to.duration_since(from) > SignedDuration::from_hours(24 * MAX_WINDOW_DAYS) {
        return Err(bad(format!(
            "One search covers at most {MAX_WINDOW_DAYS} days; search the next part with a later `from`."
        )));
    }
    Ok((from, to))
}

/// Everything stored that the slots of a window depend on.
struct Calendar {
    practitioners: Vec<Uuid>,
    hours: HashMap<Uuid, Hours>,
    busy: HashMap<Uuid, Vec<Interval>>,
}

async fn load_calendar(
    client: &impl deadpool_postgres::GenericClient,
    practitioner: Option<Uuid>,
    from: Timestamp,
    to: Timestamp,
) -> Result<Calendar, WorkerError> {
    // A day either side covers every zone's offset.
    let day = SignedDuration::from_hours(24);
    let (wide_from, wide_to) = (to_chrono(from - day)?, to_chrono(to + day)?);
    let (first_day, last_day) = (wide_from.date_naive(), wide_to.date_naive());
    let (just_one, dated, timed) = (
        [&practitioner as &(dyn tokio_postgres::types::ToSql + Sync)],
        [
            &practitioner as &(dyn tokio_postgres::types::ToSql + Sync),
            &first_day,
            &last_day,
        ],
        [
            &practitioner as &(dyn tokio_postgres::types::ToSql + Sync),
            &wide_from,
            &wide_to,
        ],
    );
    let practitioners = client.query(
        "SELECT id FROM practitioners WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id = $1) ORDER BY id",
        &just_one,
    );
    let weekly = client.query(
        "SELECT practitioner_id, weekday, start_time, end_time FROM working_hours \
         WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR practitioner_id = $1)",
        &just_one,
    );
    let exceptions = client.query(
        "SELECT practitioner_id, date, change, start_time, end_time FROM hours_exceptions \
         WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR practitioner_id = $1) AND date BETWEEN $2 AND $3",
        &dated,
    );
    let busy = client.query(
        "SELECT a.practitioner_id, a.starts_at, a.ends_at + make_interval(mins => coalesce(t.buffer_after_minutes, 0)::integer) \
         FROM appointments a LEFT JOIN appointment_types t ON t.id = a.appointment_type_id \
         WHERE a.deleted_at IS NULL AND a.status NOT IN ('cancelled', 'no_show') \
           AND ($1::uuid IS NULL OR a.practitioner_id = $1) AND a.starts_at < $3 AND a.ends_at > $2",
        &timed,
    );
    // One round trip: the four statements are pipelined on the connection.
    let (practitioners, weekly, exceptions, busy) =
        futures_util::try_join!(practitioners, weekly, exceptions, busy).map_err(db)?;
    let mut calendar = Calendar {
        practitioners: practitioners.iter().map(|r| r.get(0)).collect(),
        hours: HashMap::new(),
        busy: HashMap::new(),
    };
    for row in &weekly {
        let p: Uuid = row.get(0);
        let Some(day) = weekday(row.get(1)) else {
            continue;
        };
        let hours = TimeRange::new(civil_time(row.get(2))?, civil_time(row.get(3))?)
            .map_err(|e| WorkerError::Internal(format!("stored working hours: {e}")))?;
        calendar
            .hours
            .entry(p)
            .or_default()
            .weekly
            .push(WeeklyHours {
                weekday: day,
                hours,
            });
    }
    for row in &exceptions {
        let p: Uuid = row.get(0);
        let change = match row.get::<_, &str>(2) {
            "open" => Change::Open,
            _ => Change::Closed,
        };
        let times: (Option<NaiveTime>, Option<NaiveTime>) = (row.get(3), row.get(4));
        let hours = match times {
            (Some(start), Some(end)) => Some(
                TimeRange::new(civil_time(start)?, civil_time(end)?)
                    .map_err(|e| WorkerError::Internal(format!("a stored exception: {e}")))?,
            ),
            _ => None,
        };
        calendar
            .hours
            .entry(p)
            .or_default()
            .exceptions
            .push(Exception {
                date: civil_date(row.get(1))?,
                change,
                hours,
            });
    }
    for row in &busy {
        let p: Uuid = row.get(0);
        calendar.busy.entry(p).or_default().push(Interval::new(
            to_timestamp(row.get(1))?,
            to_timestamp(row.get(2))?,
        ));
    }
    Ok(calendar)
}

/// `GET /api/v1/availability?practitioner_id=&appointment_type_id=&from=&to=`:
/// the free slots of one practitioner (or all) for an appointment type (or a
/// `duration_minutes`), in the window `[from, to)`, never in the past, sorted by
/// start, each `{practitioner_id, starts_at, ends_at}` in the clinic's offset.
pub async fn availability(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    let search = Arc::new(parse_search(raw.as_deref())?);
    let answer = read_audited(
        &state,
        &caller,
        &AVAILABILITY,
        Action::List,
        search.practitioner,
        Lane::Own,
        |_| None,
        |client, _actor, _keys| {
            let search = search.clone();
            async move {
                let result = free_slots(&**client, &search).await;
                (client, result)
            }
        },
    )
    .await?;
    Ok(Json(answer).into_response())
}

async fn free_slots(
    client: &impl deadpool_postgres::GenericClient,
    search: &SlotSearch,
) -> Result<Value, WorkerError> {
    let tz = clinic_zone(client).await?;
    let (from, to) = window(&tz, search)?;
    let (duration, buffer) = match (search.appointment_type, search.duration_minutes) {
        (_, Some(minutes)) => {
            let buffer = match search.appointment_type {
                Some(t) => appointment_type(client, t).await?.1,
                None => 0,
            };
            (minutes, buffer)
        }
        (Some(t), None) => appointment_type(client, t).await?,
        (None, None) => return Err(bad("Name an appointment type or a duration.")),
    };
    let step = search.step_minutes.unwrap_or(15);
    let calendar = load_calendar(client, search.practitioner, from, to).await?;
    if let Some(p) = search.practitioner {
        if calendar.practitioners.is_empty() {
            return Err(bad(format!(
                "`practitioner_id` {p} does not refer to an existing practitioner of your clinic."
            )));
        }
    }
    let rules = SlotRules {
        duration: SignedDuration::from_mins(duration),
        buffer_after: SignedDuration::from_mins(buffer),
        step: SignedDuration::from_mins(step),
        not_before: Some(Timestamp::now()),
    };
    let none = Hours::default();
    let mut slots: Vec<(Timestamp, Uuid, Timestamp)> = Vec::new();
    for p in &calendar.practitioners {
        let hours = calendar.hours.get(p).unwrap_or(&none);
        let open = hours
            .open_between(&tz, from, to)
            .map_err(|e| WorkerError::Internal(format!("working hours: {e}")))?;
        let busy = calendar.busy.get(p).map(Vec::as_slice).unwrap_or(&[]);
        let free = schedule::free_slots(&open, busy, &rules).map_err(|e| bad(e.to_string()))?;
        slots.extend(free.into_iter().map(|s| (s.start, *p, s.end)));
    }
    slots.sort_unstable();
    let truncated = slots.len() > search.limit;
    slots.truncate(search.limit);
    let data: Vec<Value> = slots
        .iter()
        .map(|(start, p, end)| {
            json!({"practitioner_id": p, "starts_at": show(&tz, *start), "ends_at": show(&tz, *end)})
        })
        .collect();
    Ok(json!({
        "time_zone": tz.iana_name().unwrap_or("UTC"),
        "from": show(&tz, from),
        "to": show(&tz, to),
        "duration_minutes": duration,
        "buffer_after_minutes": buffer,
        "step_minutes": step,
        "data": data,
        "truncated": truncated,
    }))
}
