//! The placement-cache figure: central-database statements per warm request. Each
//! clinic is requested once (its placement is cached), then `requests` reads go
//! through the gateway over those clinics in turn, well inside the cache's TTL,
//! while `pg_stat_statements` on the central server counts every statement. The
//! workers' own background statements are told apart by their text
//! ([`central::Origin`]); the rest is the gateway's. The gateway's cache counters
//! (hits, misses) are read alongside as a cross-check.

use crate::breakdown;
use crate::central::{self, Origin, Statements};
use crate::load::{self, Limit, LoadClient, Targets, Workload};
use crate::report::{self, Line};
use crate::settings::{Figure, Settings};
use anyhow::{bail, Context};
use common::metric_names as m;
use devstack::Stack;
use std::sync::Arc;
use std::time::Instant;

/// The figure's lines and notes.
pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

/// The gateway's placement cache counters by result.
async fn cache_counters(client: &LoadClient, stack: &Stack) -> anyhow::Result<(f64, f64)> {
    let text = breakdown::metrics_text(client, stack.gateway.admin_addr).await?;
    Ok((
        breakdown::value(&text, m::PLACEMENT_CACHE, &[("result", "hit")]),
        breakdown::value(&text, m::PLACEMENT_CACHE, &[("result", "miss")]),
    ))
}

/// Measures over `targets` (one authenticated read per clinic).
pub async fn measure(
    settings: &Settings,
    stack: &Stack,
    client: &LoadClient,
    targets: Targets,
) -> anyhow::Result<Outcome> {
    let clinics = targets.len();
    let requests = settings.placement_requests;
    let central = stack
        .central
        .connect(devstack::stack::CENTRAL_DB)
        .await
        .context("connecting to the central database")?;
    eprintln!("bench: placement: {clinics} clinic(s) warmed, then {requests} requests over them…");
    for i in 0..clinics {
        let (status, body) = load::send(client, targets.request(i)?).await?;
        if !status.is_success() {
            bail!(
                "placement: warming clinic {i} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    let before = Statements::snapshot(&central).await?;
    let (hits_before, misses_before) = cache_counters(client, stack).await?;
    let started = Instant::now();
    let workload: Arc<dyn Workload> = Arc::new(targets);
    let stats = load::run(
        client,
        &workload,
        settings.concurrency,
        Limit::Requests(requests),
    )
    .await;
    let took = started.elapsed();
    let after = Statements::snapshot(&central).await?;
    let (hits_after, misses_after) = cache_counters(client, stack).await?;

    let delta = after.since(&before);
    let origins = central::by_origin(&delta);
    let count = |o: Origin| origins.iter().find(|(x, _)| *x == o).map_or(0, |(_, n)| *n);
    let gateway = count(Origin::Gateway);
    let all: i64 = origins.iter().map(|(_, n)| n).sum();
    let sent = (stats.ok + stats.errors).max(1);
    let per = |n: i64| n as f64 * 10_000.0 / sent as f64;
    let mut line = Line::new(
        Figure::Placement,
        format!("central statements per 10 000 warm requests ({clinics} clinics)"),
        format!(
            "{} by the gateway ({} in all)",
            report::num(per(gateway), 1),
            report::num(per(all), 1)
        ),
        "no cache: 10 000 (one per request)",
        report::ratio(gateway as f64, sent as f64),
    )
    .zero();
    if stats.errors > 0 {
        line.goal = Some(("= 0, 0 errors".into(), false));
    }
    let mut notes = vec![format!(
        "placement: {} requests in {:.1} s ({} errors); central statements during them by origin: {}",
        sent,
        took.as_secs_f64(),
        stats.errors,
        origins
            .iter()
            .map(|(o, n)| format!("{} {n}", o.label()))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    notes.push(format!(
        "placement: gateway cache counters during them: {} hits, {} misses",
        hits_after - hits_before,
        misses_after - misses_before
    ));
    for (n, text) in delta.iter().take(6) {
        let short: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = short.chars().take(100).collect();
        notes.push(format!(
            "placement:   {n:>6} x [{}] {short}",
            Origin::of(text).label()
        ));
    }
    if took.as_secs() >= 50 {
        notes.push("placement: the run took longer than 50 s; entries older than the cache TTL (60 s) are re-asked by design".into());
    }
    Ok(Outcome {
        lines: vec![line],
        notes,
    })
}
