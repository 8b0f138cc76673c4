//! The connections figure: the read through the gateway driven by `wrk` (closed
//! loop, two threads) with thousands of client connections against a few dozen.
//! `wrk` is run as a child of the bench (so the CPU accounting sees it) and its
//! summary parsed: requests, socket errors (connect, read, write, timeout) and
//! non-2xx/3xx answers. wrk counts a timeout whenever a request has been waiting
//! longer than `--timeout` (it does not cancel it); in a closed loop every
//! request waits about connections ÷ throughput (4 000 ÷ 2 000 req/s is 2 s, wrk's
//! default timeout), so the bench gives wrk a longer one (`BENCH_WRK_TIMEOUT`) and
//! reports the latency instead.

use crate::breakdown;
use crate::cpu;
use crate::load::LoadClient;
use crate::report::{self, Line};
use crate::settings::{Figure, Settings};
use anyhow::{bail, Context};
use common::metric_names as m;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The figure's goal: throughput with many connections, a ratio of with few.
const GOAL: f64 = 0.9;

/// What one wrk run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkRun {
    pub connections: usize,
    pub requests: u64,
    pub secs: f64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// Answers with a status of 400 or more (what wrk calls "Non-2xx or 3xx").
    pub non_2xx: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl WrkRun {
    pub fn socket_errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }

    pub fn errors(&self) -> u64 {
        self.socket_errors() + self.non_2xx
    }

    /// Successful answers per second.
    pub fn ok_rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.requests.saturating_sub(self.non_2xx) as f64 / self.secs
        } else {
            0.0
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} req/s, {} errors (socket: connect {}, read {}, write {}, timeout {}; non-2xx {}), p50/p99 {}/{} ms",
            report::num(self.ok_rps(), 0),
            self.errors(),
            self.connect_errors,
            self.read_errors,
            self.write_errors,
            self.timeouts,
            self.non_2xx,
            self.p50_ms.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            self.p99_ms.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
        )
    }
}

/// A wrk duration (`812.00us`, `2.31ms`, `1.02s`, `1.5m`) in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(value * factor)
}

/// A wrk duration like `10.00s` in seconds.
fn seconds(text: &str) -> Option<f64> {
    duration_ms(text.trim_end_matches(',')).map(|ms| ms / 1000.0)
}

/// Parses wrk's summary (with `--latency`).
pub fn parse(out: &str, connections: usize) -> anyhow::Result<WrkRun> {
    let mut run = WrkRun {
        connections,
        ..WrkRun::default()
    };
    let mut seen_total = false;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            // `64000 requests in 10.00s, 12.00MB read`
            [n, "requests", "in", secs, ..] => {
                run.requests = n.parse().context("wrk: request count")?;
                run.secs = seconds(secs).context("wrk: duration")?;
                seen_total = true;
            }
            // `Socket errors: connect 0, read 0, write 0, timeout 0`
            ["Socket", "errors:", rest @ ..] => {
                for pair in rest.chunks(2) {
                    if let [kind, n] = pair {
                        let n: u64 = n.trim_end_matches(',').parse().unwrap_or(0);
                        match *kind {
                            "connect" => run.connect_errors = n,
                            "read" => run.read_errors = n,
                            "write" => run.write_errors = n,
                            "timeout" => run.timeouts = n,
                            _ => {}
                        }
                    }
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                run.non_2xx = n.parse().context("wrk: non-2xx count")?;
            }
            ["50%", v] => run.p50_ms = duration_ms(v),
            ["99%", v] => run.p99_ms = duration_ms(v),
            _ => {}
        }
    }
    if !seen_total {
        bail!("wrk printed no request count:\n{out}");
    }
    Ok(run)
}

/// Runs wrk against `url` with `authorization: Bearer token`.
async fn wrk(
    url: &str,
    token: &str,
    connections: usize,
    duration: Duration,
    timeout: Duration,
) -> anyhow::Result<WrkRun> {
    let threads = connections.clamp(1, 2);
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg(format!("{}s", timeout.as_secs().max(1)))
        .arg("--latency")
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk (is it installed? /usr/bin/wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk exited with {}: {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout, connections)
}

/// The figure's line and notes.
pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

/// What the services counted as errors during a run (their
/// `medicalpro_errors_total` and the gateway's non-2xx answers), from their
/// metrics before and after.
async fn service_errors(
    client: &LoadClient,
    admins: &[SocketAddr],
    before: &[Option<String>],
) -> String {
    let mut grown = Vec::new();
    for (admin, before) in admins.iter().zip(before) {
        let (Some(before), Ok(after)) = (before, breakdown::metrics_text(client, *admin).await)
        else {
            continue;
        };
        grown.extend(breakdown::grown(before, &after, m::ERRORS));
        grown.extend(
            breakdown::grown(
                before,
                &after,
                &format!("{}_count", m::HTTP_REQUEST_DURATION),
            )
            .into_iter()
            .filter(|s| !s.contains("status=\"2xx\"")),
        );
    }
    if grown.is_empty() {
        "none".into()
    } else {
        grown.join(", ")
    }
}

/// A few dozen connections, then thousands, each for `settings.wrk_duration`
/// after a short warm-up with the few. `admins`: the services' metrics, read
/// around each run for what they counted as errors.
pub async fn measure(
    settings: &Settings,
    client: &LoadClient,
    admins: &[SocketAddr],
    url: &str,
    token: &str,
) -> anyhow::Result<Outcome> {
    let (few, many) = (settings.wrk_base_connections, settings.wrk_connections);
    let (duration, timeout) = (settings.wrk_duration, settings.wrk_timeout);
    if !settings.warmup.is_zero() {
        wrk(url, token, few, settings.warmup, timeout).await?;
    }
    let mut notes = Vec::new();
    let mut runs = Vec::new();
    for connections in [few, many] {
        eprintln!(
            "bench: wrk, {connections} connections for {:.0} s…",
            duration.as_secs_f64()
        );
        let mut metrics = Vec::new();
        for admin in admins {
            metrics.push(breakdown::metrics_text(client, *admin).await.ok());
        }
        let before = cpu::snapshot();
        let started = Instant::now();
        let run = wrk(url, token, connections, duration, timeout).await?;
        let used = cpu::snapshot().minus(&before);
        let counted = service_errors(client, admins, &metrics).await;
        eprintln!("bench: wrk, {connections} connections: {}", run.describe());
        notes.push(format!(
            "connections: wrk -t{} -c{connections} -d{}s --timeout {}s: {}; errors and non-2xx answers the services counted: {counted}; cores busy: {}",
            connections.clamp(1, 2),
            duration.as_secs().max(1),
            timeout.as_secs().max(1),
            run.describe(),
            report::busy(&used, started.elapsed())
        ));
        runs.push(run);
    }
    let (Some(base), Some(wide)) = (runs.first(), runs.get(1)) else {
        bail!("wrk: a run is missing");
    };
    let errors = base.errors() + wide.errors();
    let line = Line::new(
        Figure::Connections,
        format!("read through the gateway, wrk, {many} connections"),
        format!(
            "{} req/s, {} errors, p99 {} ms",
            report::num(wide.ok_rps(), 0),
            wide.errors(),
            wide.p99_ms
                .map_or_else(|| "-".into(), |v| format!("{v:.0}"))
        ),
        format!(
            "{few} connections {} req/s, {} errors",
            report::num(base.ok_rps(), 0),
            base.errors()
        ),
        report::ratio(wide.ok_rps(), base.ok_rps()),
    )
    .at_least(GOAL, Some(("0 errors", errors == 0)));
    Ok(Outcome {
        lines: vec![line],
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_summary() {
        let out = "\
Running 10s test @ http://127.0.0.1:8080/api/v1/patients/x
  2 threads and 4000 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.95s   300.12ms   3.01s    70.00%
    Req/Sec     1.02k   200.00     1.60k    70.00%
  Latency Distribution
     50%    1.90s 
     75%    2.10s 
     90%    2.40s 
     99%    2.90s 
  19500 requests in 10.02s, 9.12MB read
  Socket errors: connect 12, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 5
Requests/sec:   1946.11
Transfer/sec:    932.11KB
";
        let run = parse(out, 4000).unwrap_or_default();
        assert_eq!(run.requests, 19_500);
        assert!((run.secs - 10.02).abs() < 1e-9);
        assert_eq!(
            (
                run.connect_errors,
                run.read_errors,
                run.write_errors,
                run.timeouts
            ),
            (12, 3, 0, 7)
        );
        assert_eq!(run.non_2xx, 5);
        assert_eq!(run.errors(), 27);
        assert_eq!(run.p50_ms, Some(1900.0));
        assert_eq!(run.p99_ms, Some(2900.0));
        assert!((run.ok_rps() - 19_495.0 / 10.02).abs() < 1e-6);
        assert_eq!(duration_ms("812.00us"), Some(0.812));
        assert!(parse("nothing", 1).is_err());
    }
}
