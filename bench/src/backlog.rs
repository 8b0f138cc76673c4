//! The backlog figure: the read at its full load (the throughput runs'
//! concurrency) for a minute, with the clinic's audit outbox — every read's
//! record, committed in the clinic database, waiting for the worker's shipper to
//! move it to the central `audit_logs` — counted every second in the clinic
//! database (as the superuser), and the worker's `medicalpro_audit_backlog` gauge
//! (rows its shipper's last attempt could not ship) read alongside. The run
//! starts from an empty outbox (what earlier figures left is waited for, at most
//! a minute). When the load stops, the outbox is counted every 100 ms until it is
//! empty.
//!
//! Bounded: the mean backlog of the last third of the run is at most 1.5 times
//! the mean of the first third plus one second of reads (a backlog that keeps
//! growing by more than ~3 % of the reads fails this; one that swings around a
//! level, as batches are shipped, does not). Drained: empty at most 5 s after the
//! last request answered.

use crate::breakdown;
use crate::load::{self, Limit, LoadClient, Stats, Workload};
use crate::report::{self, Line};
use crate::settings::{Figure, Settings};
use anyhow::Context;
use common::metric_names as m;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// How long the outbox may take to empty after the load.
const DRAIN_GOAL: Duration = Duration::from_secs(5);
/// How long the bench waits for it at most.
const DRAIN_WAIT: Duration = Duration::from_secs(60);

/// One sample: seconds into the run, outbox rows, the worker's gauge.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: f64,
    rows: i64,
    gauge: Option<f64>,
}

async fn outbox(clinic_db: &Client) -> anyhow::Result<i64> {
    Ok(clinic_db
        .query_one("SELECT count(*) FROM audit_outbox", &[])
        .await
        .context("counting the audit outbox")?
        .get(0))
}

/// Whether a backlog stayed bounded at `rps` reads a second (see the module's
/// documentation), and the means of its first and last thirds.
fn bounded(samples: &[i64], rps: f64) -> (bool, f64, f64) {
    let third = samples.len() / 3;
    let mean = |s: &[i64]| {
        if s.is_empty() {
            0.0
        } else {
            s.iter().sum::<i64>() as f64 / s.len() as f64
        }
    };
    let first = mean(samples.get(..third).unwrap_or_default());
    let last = mean(samples.get(samples.len() - third..).unwrap_or_default());
    (last <= 1.5 * first + rps, first, last)
}

/// The figure's line and notes.
pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

/// Runs `read` for `settings.backlog_duration` while counting the outbox of the
/// clinic database `clinic_db` is connected to.
pub async fn measure(
    settings: &Settings,
    client: &LoadClient,
    read: Arc<dyn Workload>,
    clinic_db: &Client,
    worker_admin: SocketAddr,
) -> anyhow::Result<Outcome> {
    let secs = settings.backlog_duration;
    // Start from an empty outbox: what earlier figures left is not this run's.
    let left = outbox(clinic_db).await?;
    let waited = Instant::now();
    let mut before = left;
    while before > 0 && waited.elapsed() < DRAIN_WAIT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        before = outbox(clinic_db).await?;
    }
    let waited = waited.elapsed();
    eprintln!(
        "bench: backlog: the read at full load for {:.0} s, the audit outbox counted every second…",
        secs.as_secs_f64()
    );
    let started = Instant::now();
    let load = {
        let client = client.clone();
        let concurrency = settings.concurrency;
        tokio::spawn(async move { load::run(&client, &read, concurrency, Limit::For(secs)).await })
    };
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    while !load.is_finished() {
        ticker.tick().await;
        if load.is_finished() {
            break;
        }
        let rows = outbox(clinic_db).await?;
        let gauge = breakdown::metrics_text(client, worker_admin)
            .await
            .ok()
            .map(|text| breakdown::value(&text, m::AUDIT_BACKLOG, &[]));
        samples.push(Sample {
            at: started.elapsed().as_secs_f64(),
            rows,
            gauge,
        });
    }
    let mut stats: Stats = load.await.context("the backlog's load")?;
    let stopped = Instant::now();
    let mut drained = None;
    let mut at_stop = None;
    while stopped.elapsed() < DRAIN_WAIT {
        let rows = outbox(clinic_db).await?;
        at_stop.get_or_insert(rows);
        if rows == 0 {
            drained = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rows: Vec<i64> = samples.iter().map(|s| s.rows).collect();
    let max_rows = rows.iter().copied().max().unwrap_or(0);
    let max_gauge = samples
        .iter()
        .filter_map(|s| s.gauge)
        .fold(None, |acc: Option<f64>, g| {
            Some(acc.map_or(g, |a| a.max(g)))
        });
    let rps = stats.rps();
    let (is_bounded, first, last) = bounded(&rows, rps);
    let drained_ok = drained.is_some_and(|d| d <= DRAIN_GOAL);
    let drain_text = drained.map_or_else(
        || format!("not drained after {:.0} s", DRAIN_WAIT.as_secs_f64()),
        |d| format!("drained in {:.1} s", d.as_secs_f64()),
    );
    let line = Line::new(
        Figure::Backlog,
        format!(
            "audit outbox during {:.0} s of full read load",
            secs.as_secs_f64()
        ),
        format!(
            "max {} rows ({}; first/last third mean {}/{}), {drain_text}",
            report::num(max_rows as f64, 0),
            if is_bounded { "bounded" } else { "GROWING" },
            report::num(first, 0),
            report::num(last, 0),
        ),
        format!(
            "drain limit {:.0} s; read {} req/s, {} errors",
            DRAIN_GOAL.as_secs_f64(),
            report::num(rps, 0),
            stats.errors
        ),
        drained.and_then(|d| report::ratio(d.as_secs_f64(), DRAIN_GOAL.as_secs_f64())),
    )
    .judged(
        format!("bounded, drained <= {:.0} s", DRAIN_GOAL.as_secs_f64()),
        is_bounded && drained_ok,
    );
    let trace: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.0}s:{}", s.at, s.rows))
        .collect();
    let notes = vec![format!(
        "backlog: outbox rows left by earlier figures {left}, {before} after waiting {:.1} s for them to ship; then every second {}; {} at the end of the load, {drain_text}; worker gauge {} max {}; read p50/p99 {}/{} ms",
        waited.as_secs_f64(),
        trace.join(" "),
        at_stop.unwrap_or(0),
        m::AUDIT_BACKLOG,
        max_gauge.map_or_else(|| "-".into(), |g| report::num(g, 0)),
        stats.percentile_ms(50.0).map_or_else(|| "-".into(), |v| format!("{v:.1}")),
        stats.percentile_ms(99.0).map_or_else(|| "-".into(), |v| format!("{v:.1}")),
    )];
    Ok(Outcome {
        lines: vec![line],
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_level_from_a_growth() {
        // Swinging between 100 and 1 300 rows at 5 000 reads a second.
        let level: Vec<i64> = (0..60).map(|i| 100 + (i * 7 % 13) * 100).collect();
        assert!(bounded(&level, 5000.0).0);
        // 500 rows more every second (10 % of the reads not shipped).
        let growing: Vec<i64> = (0..60).map(|i| i * 500).collect();
        assert!(!bounded(&growing, 5000.0).0);
        let empty: Vec<i64> = vec![0; 60];
        assert!(bounded(&empty, 5000.0).0);
        assert!(bounded(&[], 0.0).0);
    }
}
