//! The bench's settings, read once from the environment.
//!
//! | variable            | default   | meaning                                          |
//! |---------------------|-----------|--------------------------------------------------|
//! | `BENCH_SECS`        | 5         | measured seconds per round and scenario          |
//! | `BENCH_ROUNDS`      | 2         | rounds; each round runs the baseline, then each scenario |
//! | `BENCH_SCENARIOS`   | `read,mixed` | the scenarios measured besides the baseline (`read`, `mixed`) |
//! | `BENCH_CLINICS`     | 4         | clinics of the mixed scenario                    |
//! | `BENCH_PATIENTS`    | 50        | patients seeded per clinic of the mixed scenario |
//! | `BENCH_CONCURRENCY` | 32        | concurrent request loops (and connections)       |
//! | `BENCH_WARMUP_SECS` | 1         | unmeasured load before every measured run        |
//! | `BENCH_PG_CONNS`    | 4         | the baseline's PostgreSQL connections            |
//! | `BENCH_REGIONS`     | `eu-west` | comma-separated regions of the stack             |
//! | `BENCH_SERVICE_ENV` | (none)    | `K=V,K=V` extra environment for gateway and workers, e.g. `CLINIC_POOL_MAX=32` |

use anyhow::{bail, Context};
use std::time::Duration;

/// The throughput ratio product/baseline the product aims for (read scenario).
pub const GOAL_RATIO: f64 = 0.5;

/// A scenario measured against the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// One authenticated patient read, again and again.
    Read,
    /// A weighted mix of clinic reads and writes over several clinics.
    Mixed,
}

impl Scenario {
    fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "read" => Ok(Self::Read),
            "mixed" => Ok(Self::Mixed),
            other => bail!("BENCH_SCENARIOS: unknown scenario `{other}` (known: read, mixed)"),
        }
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
    /// The scenarios to measure, in order, without duplicates.
    pub scenarios: Vec<Scenario>,
    /// Clinics of the mixed scenario.
    pub clinics: usize,
    /// Patients seeded per clinic of the mixed scenario.
    pub patients: usize,
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

/// `BENCH_SCENARIOS`: comma-separated scenario names, `read,mixed` by default.
fn scenarios() -> anyhow::Result<Vec<Scenario>> {
    let raw = var("BENCH_SCENARIOS")?.unwrap_or_else(|| "read,mixed".into());
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let scenario = Scenario::parse(name)?;
        if !out.contains(&scenario) {
            out.push(scenario);
        }
    }
    if out.is_empty() {
        bail!("BENCH_SCENARIOS names no scenario (known: read, mixed)");
    }
    Ok(out)
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let settings = Self {
            duration: seconds("BENCH_SECS", 5.0, 0.1)?,
            rounds: parsed("BENCH_ROUNDS", 2)?,
            concurrency: parsed("BENCH_CONCURRENCY", 32)?,
            warmup: seconds("BENCH_WARMUP_SECS", 1.0, 0.0)?,
            pg_conns: parsed("BENCH_PG_CONNS", 4)?,
            regions: var("BENCH_REGIONS")?
                .unwrap_or_else(|| "eu-west".into())
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            scenarios: scenarios()?,
            clinics: parsed("BENCH_CLINICS", 4)?,
            patients: parsed("BENCH_PATIENTS", 50)?,
            service_env: pairs("BENCH_SERVICE_ENV")?,
        };
        if settings.rounds == 0 || settings.concurrency == 0 || settings.pg_conns == 0 {
            bail!("BENCH_ROUNDS, BENCH_CONCURRENCY and BENCH_PG_CONNS must be at least 1");
        }
        if settings.clinics == 0 || settings.clinics > 100 {
            bail!("BENCH_CLINICS must be between 1 and 100");
        }
        if settings.patients == 0 || settings.patients > 10_000 {
            bail!("BENCH_PATIENTS must be between 1 and 10000");
        }
        if settings.regions.is_empty() {
            bail!("BENCH_REGIONS names no region");
        }
        Ok(settings)
    }
}
