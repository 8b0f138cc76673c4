//! The bench's settings, read once from the environment.
//!
//! | variable                  | default   | meaning                                          |
//! |---------------------------|-----------|--------------------------------------------------|
//! | `BENCH_ONLY`              | all       | comma-separated figures to measure: `read`, `mixed`, `budget`, `placement`, `provisioning`, `gateway`, `memory` (`BENCH_SCENARIOS` is an older name for it) |
//! | `BENCH_SECS`              | 5         | measured seconds per round and throughput run    |
//! | `BENCH_ROUNDS`            | 2         | rounds; each round runs the baseline, then each throughput run |
//! | `BENCH_CONCURRENCY`       | 32        | concurrent request loops (and connections)       |
//! | `BENCH_WARMUP_SECS`       | 1         | unmeasured load before every measured run        |
//! | `BENCH_PG_CONNS`          | 4         | the baseline's PostgreSQL connections            |
//! | `BENCH_CLINICS`           | 4         | clinics of the mixed scenario                    |
//! | `BENCH_PATIENTS`          | 50        | patients seeded per clinic of the mixed scenario |
//! | `BENCH_BUDGET_CLINICS`    | 1000      | clinics of the connection-budget figure          |
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

/// One figure the bench can measure; `BENCH_ONLY` picks a subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// One authenticated patient read, again and again, against the bare baseline.
    Read,
    /// A weighted mix of clinic reads and writes over several clinics.
    Mixed,
    /// Reads spread over many clinics on one server with few connections.
    Budget,
    /// Central-database statements per warm request.
    Placement,
    /// Registration to first patient against a bare `CREATE DATABASE … TEMPLATE`.
    Provisioning,
    /// The read through the gateway, straight to the worker, and through a bare proxy.
    Gateway,
    /// Gateway memory per cached placement, worker memory per clinic pool.
    Memory,
}

impl Figure {
    pub const ALL: [Figure; 7] = [
        Figure::Read,
        Figure::Mixed,
        Figure::Budget,
        Figure::Placement,
        Figure::Provisioning,
        Figure::Gateway,
        Figure::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Figure::Read => "read",
            Figure::Mixed => "mixed",
            Figure::Budget => "budget",
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
