//! The bench's settings, read once from the environment.
//!
//! | variable                  | default   | meaning                                          |
//! |---------------------------|-----------|--------------------------------------------------|
//! | `BENCH_ONLY`              | all       | comma-separated figures to measure: `read`, `direct`, `latency`, `cpu`, `logins`, `connections`, `backlog`, `mixed`, `search`, `slots`, `webhooks`, `budget`, `zipf`, `sized`, `placement`, `provisioning`, `gateway`, `memory` (`BENCH_SCENARIOS` is an older name for it) |
//! | `BENCH_SECS`              | 5         | measured seconds per round and throughput run    |
//! | `BENCH_ROUNDS`            | 2         | rounds; each round runs the baseline, then each throughput run |
//! | `BENCH_CONCURRENCY`       | 32        | concurrent request loops (and connections)       |
//! | `BENCH_WARMUP_SECS`       | 1         | unmeasured load before every measured run        |
//! | `BENCH_PG_CONNS`          | 4         | the baseline's PostgreSQL connections            |
//! | `BENCH_CLINICS`           | 4         | clinics of the mixed scenario                    |
//! | `BENCH_PATIENTS`          | 50        | patients created through the API per mixed clinic (the workload reads and updates these) |
//! | `BENCH_MIXED_PATIENTS`    | 10000     | more patients per mixed clinic, put straight into its database with SQL |
//! | `BENCH_SEARCH_PATIENTS`   | 100000    | patients of the search figure's clinic (SQL)     |
//! | `BENCH_SEARCH_REQUESTS`   | 100       | sequential requests per search term              |
//! | `BENCH_LOGIN_RATE`        | 10        | logins per second in the background of the logins figure |
//! | `BENCH_LOGIN_ACCOUNTS`    | 10        | accounts those logins take in turn               |
//! | `BENCH_WRK_CONNECTIONS`   | 4000      | client connections of the connections figure     |
//! | `BENCH_WRK_BASE_CONNECTIONS` | 64     | client connections of its reference              |
//! | `BENCH_WRK_SECS`          | 10        | seconds of each wrk run                          |
//! | `BENCH_WRK_TIMEOUT`       | 30        | wrk's `--timeout` in seconds                     |
//! | `BENCH_BACKLOG_SECS`      | 60        | seconds of full read load in the backlog figure  |
//! | `BENCH_ZIPF_S`            | 1.2       | exponent of the Zipf-skewed run over the budget clinics |
//! | `BENCH_BUDGET_CLINICS`    | 1000      | clinics of the connection-budget figures         |
//! | `BENCH_MAX_CONNECTIONS`   | 100       | `max_connections` of every PostgreSQL server     |
//! | `BENCH_POOL_BUDGET`       | 80        | the worker's `CLINIC_POOL_BUDGET`                |
//! | `BENCH_SETUP_CONCURRENCY` | 8         | registrations and first writes in flight while setting up many clinics |
//! | `BENCH_IDLE_SECS`         | `BENCH_SECS` | seconds the machine is watched with no load after the budget runs |
//! | `BENCH_PLACEMENT_REQUESTS`| 10000     | warm requests of the placement-cache figure      |
//! | `BENCH_PROVISION_CLINICS` | 20        | clinics timed from registration to first patient |
//! | `BENCH_CACHED_PLACEMENTS` | 100000    | placements put in the gateway cache for the memory figure |
//! | `BENCH_REGIONS`           | `eu-west` | comma-separated regions of the stack             |
//! | `BENCH_SERVICE_ENV`       | (none)    | `K=V,K=V` extra environment for gateway and workers, e.g. `CLINIC_POOL_MAX=32` |

use anyhow::{bail, Context};
use std::time::Duration;

/// One figure the bench can measure; `BENCH_ONLY` picks a subset. The summary
/// table lists them in the order of [`Figure::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// One authenticated patient read, again and again, against the bare baseline.
    Read,
    /// The read sent straight to the worker (signed by the bench) against the baseline.
    Direct,
    /// The read's p99 latency against the baseline's at the same concurrency.
    Latency,
    /// CPU per read of the worker and both PostgreSQL servers; the gateway's
    /// against the bare proxy's.
    Cpu,
    /// The read's p99 with logins in the background against without.
    Logins,
    /// Read throughput with thousands of client connections (wrk) against 64.
    Connections,
    /// The audit outbox during a minute at the read's full load, and its drain.
    Backlog,
    /// A weighted mix of clinic reads and writes over several clinics.
    Mixed,
    /// Patient search in a clinic of 100 000 patients.
    Search,
    /// Free-slot search over a month for 20 practitioners, and booking in a slot.
    Slots,
    /// A write in a clinic with a webhook subscription against one without, and
    /// how long its delivery takes.
    Webhooks,
    /// Reads spread uniformly over many clinics on one server with few connections.
    Budget,
    /// The same clinics, Zipf-skewed.
    Zipf,
    /// The same clinics, server and worker sized by the deployment rule.
    Sized,
    /// Central-database statements per warm request.
    Placement,
    /// Registration to first patient against a bare `CREATE DATABASE … TEMPLATE`
    /// plus one argon2id hash.
    Provisioning,
    /// The read through the gateway, straight to the worker, and through a bare proxy.
    Gateway,
    /// Gateway memory per cached placement, worker memory per clinic pool.
    Memory,
}

impl Figure {
    pub const ALL: [Figure; 18] = [
        Figure::Read,
        Figure::Direct,
        Figure::Latency,
        Figure::Cpu,
        Figure::Logins,
        Figure::Connections,
        Figure::Backlog,
        Figure::Mixed,
        Figure::Search,
        Figure::Slots,
        Figure::Webhooks,
        Figure::Budget,
        Figure::Zipf,
        Figure::Sized,
        Figure::Placement,
        Figure::Provisioning,
        Figure::Gateway,
        Figure::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Figure::Read => "read",
            Figure::Direct => "direct",
            Figure::Latency => "latency",
            Figure::Cpu => "cpu",
            Figure::Logins => "logins",
            Figure::Connections => "connections",
            Figure::Backlog => "backlog",
            Figure::Mixed => "mixed",
            Figure::Search => "search",
            Figure::Slots => "slots",
            Figure::Webhooks => "webhooks",
            Figure::Budget => "budget",
            Figure::Zipf => "zipf",
            Figure::Sized => "sized",
            Figure::Placement => "placement",
            Figure::Provisioning => "provisioning",
            Figure::Gateway => "gateway",
            Figure::Memory => "memory",
        }
    }

    fn parse(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .with_context(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "BENCH_ONLY: unknown figure `{name}` (known: {})",
                    known.join(", ")
                )
            })
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub duration: Duration,
    pub rounds: u32,
    pub concurrency: usize,
    pub warmup: Duration,
    pub pg_conns: usize,
    pub regions: Vec<String>,
    /// The figures to measure, in the order of [`Figure::ALL`].
    pub figures: Vec<Figure>,
    /// Clinics of the mixed scenario.
    pub clinics: usize,
    /// Patients seeded per clinic of the mixed scenario.
    pub patients: usize,
    /// Clinics of the connection-budget figure.
    pub budget_clinics: usize,
    /// `max_connections` of every PostgreSQL server of the stack.
    pub max_connections: u32,
    /// The worker's `CLINIC_POOL_BUDGET`.
    pub pool_budget: usize,
    /// Registrations and first writes in flight while setting up many clinics.
    pub setup_concurrency: usize,
    /// How long the machine is watched with no load after the budget runs.
    pub idle: Duration,
    /// Warm requests of the placement figure.
    pub placement_requests: u64,
    /// Clinics timed from registration to first patient.
    pub provision_clinics: usize,
    /// Placements put in the gateway's cache for the memory figure.
    pub cached_placements: usize,
    /// Extra environment for the services (`BENCH_SERVICE_ENV`).
    pub service_env: Vec<(String, String)>,
    /// Patients put straight into each mixed clinic's database with SQL.
    pub mixed_patients: usize,
    /// Patients of the search figure's clinic.
    pub search_patients: usize,
    /// Requests per search term (and for the point read beside them).
    pub search_requests: usize,
    /// Logins per second in the background of the logins figure.
    pub login_rate: f64,
    /// Accounts the background logins take in turn.
    pub login_accounts: usize,
    /// Client connections of the connections figure, and its reference.
    pub wrk_connections: usize,
    pub wrk_base_connections: usize,
    /// Seconds of each wrk run.
    pub wrk_duration: Duration,
    /// wrk's `--timeout`.
    pub wrk_timeout: Duration,
    /// Seconds of full read load in the backlog figure.
    pub backlog_duration: Duration,
    /// Exponent of the Zipf-skewed run.
    pub zipf_s: f64,
}

fn var(name: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => bail!("{name}: {e}"),
    }
}

fn parsed<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match var(name)? {
        Some(v) => v.parse().with_context(|| format!("{name}={v}")),
        None => Ok(default),
    }
}

/// A whole number within `min..=max`.
fn bounded<T>(name: &str, default: T, min: T, max: T) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let v = parsed(name, default)?;
    if v < min || v > max {
        bail!("{name}={v}: must be between {min} and {max}");
    }
    Ok(v)
}

fn seconds(name: &str, default: f64, min: f64) -> anyhow::Result<Duration> {
    let secs: f64 = parsed(name, default)?;
    if !secs.is_finite() || secs < min || secs > 3600.0 {
        bail!("{name}={secs}: must be between {min} and 3600 seconds");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `K=V,K=V` pairs.
fn pairs(name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let Some(raw) = var(name)? else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => bail!("{name}: `{p}` is not KEY=VALUE"),
        })
        .collect()
}

/// `BENCH_ONLY` (or its older name `BENCH_SCENARIOS`): comma-separated figure
/// names; every figure when unset.
fn figures() -> anyhow::Result<Vec<Figure>> {
    let Some(raw) = var("BENCH_ONLY")?.or(var("BENCH_SCENARIOS")?) else {
        return Ok(Figure::ALL.to_vec());
    };
    let mut chosen = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        chosen.push(Figure::parse(name)?);
    }
    if chosen.is_empty() {
        bail!("BENCH_ONLY names no figure");
    }
    Ok(Figure::ALL
        .into_iter()
        .filter(|f| chosen.contains(f))
        .collect())
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let duration = seconds("BENCH_SECS", 5.0, 0.1)?;
        let settings = Self {
            duration,
            rounds: bounded("BENCH_ROUNDS", 2, 1, 100)?,
            concurrency: bounded("BENCH_CONCURRENCY", 32, 1, 4096)?,
            warmup: seconds("BENCH_WARMUP_SECS", 1.0, 0.0)?,
            pg_conns: bounded("BENCH_PG_CONNS", 4, 1, 64)?,
            regions: var("BENCH_REGIONS")?
                .unwrap_or_else(|| "eu-west".into())
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            figures: figures()?,
            clinics: bounded("BENCH_CLINICS", 4, 1, 100)?,
            patients: bounded("BENCH_PATIENTS", 50, 1, 10_000)?,
            budget_clinics: bounded("BENCH_BUDGET_CLINICS", 1000, 1, 20_000)?,
            max_connections: bounded("BENCH_MAX_CONNECTIONS", 100, 20, 10_000)?,
            pool_budget: bounded("BENCH_POOL_BUDGET", 80, 1, 10_000)?,
            setup_concurrency: bounded("BENCH_SETUP_CONCURRENCY", 8, 1, 256)?,
            idle: seconds("BENCH_IDLE_SECS", duration.as_secs_f64(), 0.1)?,
            placement_requests: bounded("BENCH_PLACEMENT_REQUESTS", 10_000, 1, 10_000_000)?,
            provision_clinics: bounded("BENCH_PROVISION_CLINICS", 20, 1, 1000)?,
            cached_placements: bounded("BENCH_CACHED_PLACEMENTS", 100_000, 1, 10_000_000)?,
            service_env: pairs("BENCH_SERVICE_ENV")?,
            mixed_patients: bounded("BENCH_MIXED_PATIENTS", 10_000, 0, 1_000_000)?,
            search_patients: bounded("BENCH_SEARCH_PATIENTS", 100_000, 1_000, 10_000_000)?,
            search_requests: bounded("BENCH_SEARCH_REQUESTS", 100, 1, 100_000)?,
            login_rate: {
                let rate: f64 = parsed("BENCH_LOGIN_RATE", 10.0)?;
                if !rate.is_finite() || !(0.1..=1000.0).contains(&rate) {
                    bail!("BENCH_LOGIN_RATE={rate}: must be between 0.1 and 1000 a second");
                }
                rate
            },
            login_accounts: bounded("BENCH_LOGIN_ACCOUNTS", 10, 1, 1000)?,
            wrk_connections: bounded("BENCH_WRK_CONNECTIONS", 4000, 2, 60_000)?,
            wrk_base_connections: bounded("BENCH_WRK_BASE_CONNECTIONS", 64, 2, 60_000)?,
            wrk_duration: seconds("BENCH_WRK_SECS", 10.0, 1.0)?,
            wrk_timeout: seconds("BENCH_WRK_TIMEOUT", 30.0, 1.0)?,
            backlog_duration: seconds("BENCH_BACKLOG_SECS", 60.0, 3.0)?,
            zipf_s: {
                let s: f64 = parsed("BENCH_ZIPF_S", 1.2)?;
                if !s.is_finite() || !(0.0..=10.0).contains(&s) {
                    bail!("BENCH_ZIPF_S={s}: must be between 0 and 10");
                }
                s
            },
        };
        if settings.regions.is_empty() {
            bail!("BENCH_REGIONS names no region");
        }
        Ok(settings)
    }

    pub fn has(&self, figure: Figure) -> bool {
        self.figures.contains(&figure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_names_round_trip() {
        for f in Figure::ALL {
            assert_eq!(Figure::parse(f.name()).ok(), Some(f));
        }
        assert!(Figure::parse("nope").is_err());
    }
}
