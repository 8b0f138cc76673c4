//! The search figure: `GET /api/v1/patients?q=…&limit=20` through the gateway in
//! one clinic of `BENCH_SEARCH_PATIENTS` (100 000) patients — one created through
//! the API, the rest bulk-inserted straight into its database ([`crate::bulk`]) —
//! for a common term (`dur`: 3 in 32 last names), a rare one (the one
//! `Garcia<n>` that no other name extends) and one that matches nothing (`zzz`).
//! Requests go one at a time, the terms and a point read of the API-created
//! patient (the reference) taking turns, so each sees the same machine; p50 of
//! each.

use crate::bulk;
use crate::load::{self, LoadClient, Stats, Target};
use crate::report::{self, Line};
use crate::settings::{Figure, Settings};
use crate::setup;
use anyhow::{bail, Context};
use devstack::{Http, Stack};
use http::StatusCode;
use std::time::Instant;

/// Every term's p50 must be at most this, in milliseconds.
const GOAL_MS: f64 = 10.0;
/// Unmeasured requests of each kind first.
const WARMUP: usize = 5;

/// The figure's lines and notes.
pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

/// Rows a list answer shows (`{"data": [...]}`).
fn shown(body: &[u8]) -> Option<usize> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json["data"].as_array().map(Vec::len)
}

/// Sets the clinic up and measures.
pub async fn measure(
    settings: &Settings,
    stack: &Stack,
    client: &LoadClient,
) -> anyhow::Result<Outcome> {
    let count = settings.search_patients;
    let gateway = stack.gateway_url();
    let http = Http::new(&gateway);
    let account = setup::register(&http, "Bench Search Clinic").await?;
    let patient = setup::create(&http, &account.token, "patients", &setup::ada())
        .await
        .context("search: the API-created patient")?;
    let db = bulk::lookup(stack, &[account.clinic_id])
        .await?
        .pop()
        .context("search: the clinic's database")?;
    let region = stack
        .region(&account.region)
        .with_context(|| format!("no region {}", account.region))?;
    let admin = region
        .server
        .connect(&db.db_name)
        .await
        .context("search: connecting to the clinic database")?;
    eprintln!("bench: search: inserting {count} patients into one clinic…");
    let took = bulk::patients(&admin, count).await?;
    region
        .server
        .connect("postgres")
        .await?
        .batch_execute("CHECKPOINT")
        .await
        .context("search: CHECKPOINT after the bulk insert")?;

    let rare = bulk::rare_term(count);
    let terms = ["dur".to_owned(), rare, "zzz".to_owned()];
    let mut targets = Vec::new();
    for term in &terms {
        targets.push(Target::bearer(
            &format!("{gateway}/api/v1/patients?q={term}&limit=20"),
            &account.token,
        )?);
    }
    let point = Target::bearer(
        &format!("{gateway}/api/v1/patients/{patient}"),
        &account.token,
    )?;
    targets.push(point);
    let mut found = Vec::new();
    for (target, term) in targets.iter().zip(&terms) {
        let (status, body) = load::fetch(client, target)
            .await
            .with_context(|| format!("search `{term}`"))?;
        if status != StatusCode::OK {
            bail!(
                "search `{term}` answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        found.push(shown(&body));
    }

    eprintln!(
        "bench: search: {} requests per term, one at a time…",
        settings.search_requests
    );
    let mut stats: Vec<Stats> = vec![Stats::default(); targets.len()];
    for i in 0..WARMUP + settings.search_requests {
        for (target, stat) in targets.iter().zip(stats.iter_mut()) {
            let started = Instant::now();
            let outcome = load::fetch(client, target).await;
            let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            if i < WARMUP {
                continue;
            }
            stat.elapsed += started.elapsed();
            match outcome {
                Ok((status, _)) if status.is_success() => {
                    stat.ok += 1;
                    stat.latencies_us.push(us);
                }
                _ => stat.errors += 1,
            }
        }
    }
    let Some((reference, per_term)) = stats.split_last_mut() else {
        bail!("search: no measurements");
    };
    let ref_p50 = reference.percentile_ms(50.0).unwrap_or(0.0);
    let mut lines = Vec::new();
    for ((term, stat), rows) in terms.iter().zip(per_term.iter_mut()).zip(&found) {
        let p50 = stat.percentile_ms(50.0);
        let p99 = stat.percentile_ms(99.0);
        let rows = rows.map_or_else(|| "?".into(), |n| n.to_string());
        let errors = stat.errors;
        lines.push(
            Line::new(
                Figure::Search,
                format!(
                    "GET /patients?q={term}&limit=20, {} patients",
                    report::num(count as f64, 0)
                ),
                format!(
                    "p50 {} ms, p99 {} ms ({rows} rows shown), {errors} errors",
                    p50.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                    p99.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
                ),
                format!("GET patient by id p50 {ref_p50:.2} ms"),
                p50.and_then(|v| report::ratio(v, ref_p50)),
            )
            .judged(
                format!("p50 <= {GOAL_MS:.0} ms"),
                p50.is_some_and(|v| v <= GOAL_MS) && errors == 0,
            ),
        );
    }
    let notes = vec![format!(
        "search: {} patients inserted with SQL in {:.1} s (then ANALYZE); {} sequential requests per term after {WARMUP} unmeasured, the terms and the point read in turn; point read p99 {} ms, {} errors",
        report::num(count as f64, 0),
        took.as_secs_f64(),
        settings.search_requests,
        reference
            .percentile_ms(99.0)
            .map_or_else(|| "-".into(), |v| format!("{v:.2}")),
        reference.errors,
    )];
    Ok(Outcome { lines, notes })
}
