//! The slot-search and booking figures. One clinic in `Europe/Paris` with 20
//! practitioners working 08:00–19:00 on weekdays and a month ahead of bookings
//! (eight 30-minute appointments a working day each, inserted straight into the
//! clinic database, some with a type whose 10-minute buffer the search keeps):
//! - `slots`: `GET /api/v1/availability` for all 20 practitioners over that month
//!   (a 30-minute follow-up with its buffer, every 15 minutes), one request at a
//!   time, in turn with a point read of a patient (the reference); p50 of each;
//! - `booking`: `POST /api/v1/appointments` naming the type (its end derived, the
//!   working hours and the double-booking guard checked) in slots the search
//!   found, one at a time; p50 against the same point read.

use crate::bulk;
use crate::load::{self, LoadClient, Stats, Target};
use crate::report::{self, Line};
use crate::settings::{Figure, Settings};
use crate::setup;
use anyhow::{bail, Context};
use devstack::{Http, Stack};
use http::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The slot search's p50 must be at most this, in milliseconds.
const GOAL_MS: f64 = 20.0;
const PRACTITIONERS: usize = 20;
/// Unmeasured requests of each kind first.
const WARMUP: usize = 3;

pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// The Monday four weeks from now, as a date (the month searched starts there).
fn first_monday() -> chrono::NaiveDate {
    use chrono::Datelike;
    let mut day = chrono::Utc::now().date_naive() + chrono::Duration::days(28);
    while day.weekday() != chrono::Weekday::Mon {
        day += chrono::Duration::days(1);
    }
    day
}

pub async fn measure(
    settings: &Settings,
    stack: &Stack,
    client: &LoadClient,
) -> anyhow::Result<Outcome> {
    let gateway = stack.gateway_url();
    let http = Http::new(&gateway);
    let account = setup::register(&http, "Bench Calendar Clinic").await?;
    let token = account.token.clone();
    let settings_reply = http
        .json(
            http::Method::PUT,
            "/api/v1/clinic",
            Some(&token),
            Some(&json!({"name": "Bench Calendar Clinic", "time_zone": "Europe/Paris"})),
        )
        .await
        .context("slots: clinic settings")?;
    if settings_reply.status != StatusCode::OK {
        bail!("slots: settings answered {}", settings_reply.text());
    }
    let patient = setup::create(&http, &token, "patients", &setup::ada()).await?;
    let kind = setup::create(
        &http,
        &token,
        "appointment-types",
        &json!({"name": "Follow-up", "duration_minutes": 30, "buffer_after_minutes": 10}),
    )
    .await?;
    let mut practitioners = Vec::with_capacity(PRACTITIONERS);
    for i in 0..PRACTITIONERS {
        let p = setup::create(
            &http,
            &token,
            "practitioners",
            &json!({"first_name": format!("Doc{i}"), "last_name": "Bench"}),
        )
        .await?;
        for weekday in ["monday", "tuesday", "wednesday", "thursday", "friday"] {
            setup::create(
                &http,
                &token,
                "working-hours",
                &json!({"practitioner_id": p, "weekday": weekday, "start_time": "08:00", "end_time": "19:00"}),
            )
            .await?;
        }
        practitioners.push(p);
    }
    // A month of bookings, straight into the clinic database.
    let db = bulk::lookup(stack, &[account.clinic_id])
        .await?
        .pop()
        .context("slots: the clinic's database")?;
    let region = stack
        .region(&account.region)
        .with_context(|| format!("no region {}", account.region))?;
    let admin = region
        .server
        .connect(&db.db_name)
        .await
        .context("slots: connecting to the clinic database")?;
    let first = first_monday();
    let last = first + chrono::Duration::days(30);
    let started = Instant::now();
    let booked = admin
        .execute(
            "INSERT INTO appointments (id, company_id, patient_id, practitioner_id, starts_at, ends_at, appointment_type_id) \
             SELECT gen_random_uuid(), $1, $2, p, \
                    ((d + make_time(9 + h, ((p_i * 7) % 30)::integer, 0)) AT TIME ZONE 'Europe/Paris'), \
                    ((d + make_time(9 + h, ((p_i * 7) % 30)::integer, 0)) AT TIME ZONE 'Europe/Paris') + interval '30 minutes', \
                    CASE WHEN h % 2 = 0 THEN $3::uuid END \
             FROM unnest($4::uuid[]) WITH ORDINALITY AS pr(p, p_i), \
                  generate_series($5::date, $6::date, interval '1 day') AS d, \
                  generate_series(0, 7) AS h \
             WHERE extract(isodow FROM d) < 6",
            &[&account.clinic_id, &patient, &kind, &practitioners, &first, &last],
        )
        .await
        .context("slots: inserting a month of bookings")?;
    admin.batch_execute("ANALYZE").await?;
    let insert_took = started.elapsed();

    let search = Target::bearer(
        &format!(
            "{gateway}/api/v1/availability?appointment_type_id={kind}&from={first}&to={last}&limit=10000"
        ),
        &token,
    )?;
    let point = Target::bearer(&format!("{gateway}/api/v1/patients/{patient}"), &token)?;
    let (status, body) = load::fetch(client, &search)
        .await
        .context("slots: search")?;
    if status != StatusCode::OK {
        bail!(
            "slots: search answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let answer: Value = serde_json::from_slice(&body)?;
    let free: Vec<(String, String)> = answer["data"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .filter_map(|s| {
                    Some((
                        s["practitioner_id"].as_str()?.to_owned(),
                        s["starts_at"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let truncated = answer["truncated"] == true;

    eprintln!(
        "bench: slots: {} searches of a month for {PRACTITIONERS} practitioners, one at a time…",
        settings.search_requests
    );
    let mut search_stats = Stats::default();
    let mut point_stats = Stats::default();
    for i in 0..WARMUP + settings.search_requests {
        for (target, stat) in [(&search, &mut search_stats), (&point, &mut point_stats)] {
            let started = Instant::now();
            let outcome = load::fetch(client, target).await;
            let took = started.elapsed();
            if i < WARMUP {
                continue;
            }
            record(stat, took, outcome.map(|(s, _)| s));
        }
    }

    // Bookings in slots the search found: one per practitioner and day (every
    // 45th free slot is far enough from the last one that no buffer is in the way).
    let bookings = settings.search_requests.min(free.len() / 45).max(1);
    let mut book_stats = Stats::default();
    for (practitioner, starts_at) in free.iter().step_by(45).take(bookings) {
        let body = json!({"patient_id": patient, "practitioner_id": practitioner,
            "starts_at": starts_at, "appointment_type_id": kind});
        let started = Instant::now();
        let reply = http.post("/api/v1/appointments", Some(&token), &body).await;
        let took = started.elapsed();
        record(
            &mut book_stats,
            took,
            reply.map(|r| r.status).map_err(|e| anyhow::anyhow!("{e}")),
        );
    }

    let ref_p50 = point_stats.percentile_ms(50.0).unwrap_or(0.0);
    let p50 = search_stats.percentile_ms(50.0);
    let book_p50 = book_stats.percentile_ms(50.0);
    let lines = vec![
        Line::new(
            Figure::Slots,
            format!(
                "GET /availability, a month, {PRACTITIONERS} practitioners, 30 min + 10 min buffer"
            ),
            format!(
                "p50 {} ms, p99 {} ms ({} slots{}), {} errors",
                ms(p50),
                ms(search_stats.percentile_ms(99.0)),
                free.len(),
                if truncated { ", truncated" } else { "" },
                search_stats.errors
            ),
            format!("GET patient by id p50 {ref_p50:.2} ms"),
            p50.and_then(|v| report::ratio(v, ref_p50)),
        )
        .judged(
            format!("p50 <= {GOAL_MS:.0} ms"),
            p50.is_some_and(|v| v <= GOAL_MS) && search_stats.errors == 0,
        ),
        Line::new(
            Figure::Slots,
            "POST /appointments with a type, in a free slot (hours and double booking checked)"
                .to_owned(),
            format!(
                "p50 {} ms, p99 {} ms, {} of {bookings} booked, {} errors",
                ms(book_p50),
                ms(book_stats.percentile_ms(99.0)),
                book_stats.ok,
                book_stats.errors
            ),
            format!("GET patient by id p50 {ref_p50:.2} ms"),
            book_p50.and_then(|v| report::ratio(v, ref_p50)),
        ),
    ];
    let notes = vec![format!(
        "slots: {booked} bookings of {PRACTITIONERS} practitioners from {first} to {last} inserted with SQL in {:.1} s (then ANALYZE); {} sequential searches after {WARMUP} unmeasured, in turn with the point read (p99 {} ms); {bookings} bookings one at a time in the slots found",
        insert_took.as_secs_f64(),
        settings.search_requests,
        ms(point_stats.percentile_ms(99.0)),
    )];
    Ok(Outcome { lines, notes })
}

fn record(stat: &mut Stats, took: Duration, outcome: anyhow::Result<StatusCode>) {
    stat.elapsed += took;
    match outcome {
        Ok(status) if status.is_success() => {
            stat.ok += 1;
            stat.latencies_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
        _ => stat.errors += 1,
    }
}
