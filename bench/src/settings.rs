//! The bench's settings, read once from the environment.
//!
//! | variable            | default   | meaning                                          |
//! |---------------------|-----------|--------------------------------------------------|
//! | `BENCH_SECS`        | 5         | measured seconds per round and scenario          |
//! | `BENCH_ROUNDS`      | 2         | rounds; each round runs baseline, then product   |
//! | `BENCH_CONCURRENCY` | 32        | concurrent request loops (and connections)       |
//! | `BENCH_WARMUP_SECS` | 1         | unmeasured load before every measured run        |
//! | `BENCH_PG_CONNS`    | 4         | the baseline's PostgreSQL connections            |
//! | `BENCH_REGIONS`     | `eu-west` | comma-separated regions of the stack             |
//! | `BENCH_SERVICE_ENV` | (none)    | `K=V,K=V` extra environment for gateway and workers, e.g. `CLINIC_POOL_MAX=32` |

use anyhow::{bail, Context};
use std::time::Duration;

/// The throughput ratio product/baseline the product aims for.
pub const GOAL_RATIO: f64 = 0.5;

#[derive(Clone, Debug)]
pub struct Settings {
    pub duration: Duration,
    pub rounds: u32,
    pub concurrency: usize,
    pub warmup: Duration,
    pub pg_conns: usize,
    pub regions: Vec<String>,
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
            service_env: pairs("BENCH_SERVICE_ENV")?,
        };
        if settings.rounds == 0 || settings.concurrency == 0 || settings.pg_conns == 0 {
            bail!("BENCH_ROUNDS, BENCH_CONCURRENCY and BENCH_PG_CONNS must be at least 1");
        }
        if settings.regions.is_empty() {
            bail!("BENCH_REGIONS names no region");
        }
        Ok(settings)
    }
}
