//! The front desk's calendar: free slots (`GET /api/v1/availability`) and recurring
//! series of appointments (`POST /api/v1/appointments/series`, then
//! `/api/v1/appointment-series/{id}`: read, change or cancel from one occurrence on).
//!
//! The arithmetic is the `schedule` crate's (working hours and exceptions in the
//! clinic's IANA zone, DST-correct); this module reads what it needs from the
//! clinic database and writes occurrences through the generic data layer, so each
//! one is validated, hours-checked, double-booking-guarded and audited like any
//! appointment. A series is booked, changed or cancelled all or nothing, and a
//! refusal lists every occurrence that conflicts.

mod series;
mod slots;

pub use series::{book_series, cancel_series, change_series, get_series};
pub use slots::availability;

use crate::error::WorkerError;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use uuid::Uuid;

pub(super) fn bad(detail: impl Into<String>) -> WorkerError {
    WorkerError::BadRequest(detail.into())
}

pub(super) fn db(e: tokio_postgres::Error) -> WorkerError {
    WorkerError::from_db(e)
}

pub(super) fn to_timestamp(t: DateTime<Utc>) -> Result<Timestamp, WorkerError> {
    Timestamp::from_microsecond(t.timestamp_micros())
        .map_err(|e| WorkerError::Internal(format!("an instant out of range: {e}")))
}

pub(super) fn to_chrono(t: Timestamp) -> Result<DateTime<Utc>, WorkerError> {
    DateTime::from_timestamp_micros(t.as_microsecond())
        .ok_or_else(|| WorkerError::Internal("an instant out of range".into()))
}

pub(super) fn civil_time(t: NaiveTime) -> Result<Time, WorkerError> {
    use chrono::Timelike;
    Time::new(t.hour() as i8, t.minute() as i8, t.second() as i8, 0)
        .map_err(|e| WorkerError::Internal(format!("a stored time out of range: {e}")))
}

pub(super) fn civil_date(d: NaiveDate) -> Result<Date, WorkerError> {
    use chrono::Datelike;
    Date::new(d.year() as i16, d.month() as i8, d.day() as i8)
        .map_err(|e| WorkerError::Internal(format!("a stored date out of range: {e}")))
}

pub(super) fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

/// An instant as the clinic reads it: RFC 3339 with the clinic's offset then.
pub(super) fn show(tz: &TimeZone, t: Timestamp) -> String {
    t.display_with_offset(tz.to_offset(t)).to_string()
}

/// The clinic's time zone (UTC when its settings name none it can use).
pub(super) async fn clinic_zone(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<TimeZone, WorkerError> {
    let row = client
        .query_opt("SELECT time_zone FROM clinic_settings", &[])
        .await
        .map_err(db)?;
    let name: Option<String> = row.map(|r| r.get(0));
    Ok(name
        .as_deref()
        .and_then(schedule::zone)
        .unwrap_or(TimeZone::UTC))
}

/// An appointment type's duration and buffer, in minutes.
pub(super) async fn appointment_type(
    client: &impl deadpool_postgres::GenericClient,
    id: Uuid,
) -> Result<(i64, i64), WorkerError> {
    let row = client
        .query_opt(
            "SELECT duration_minutes, buffer_after_minutes FROM appointment_types WHERE id = $1 AND deleted_at IS NULL",
            &[&id],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| bad("`appointment_type_id` does not refer to an existing appointment type of your clinic."))?;
    Ok((row.get(0), row.get(1)))
}
