//! Logins in the background of a measured run: `POST /api/v1/auth/login` through
//! the gateway at a fixed rate (open loop: one is started every `1/rate` seconds
//! whether or not the previous ones have answered), taking a few accounts
//! registered for it in turn. Each login checks an argon2id hash, which is what
//! competes with the reads. Successful logins give their throttling attempt back,
//! so the per-account and per-address limits are never reached.

use crate::load::{self, Body, LoadClient};
use crate::setup::Registration;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// What the background logins did.
#[derive(Clone, Debug, Default)]
pub struct LoginStats {
    pub ok: u64,
    pub errors: u64,
    /// Latency of each successful login, in microseconds.
    pub latencies_us: Vec<u32>,
    pub error_kinds: BTreeMap<String, u64>,
    /// How long logins were being started.
    pub elapsed: Duration,
}

impl LoginStats {
    pub fn merge(&mut self, other: LoginStats) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
        for (k, n) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
        self.elapsed += other.elapsed;
    }

    /// Logins completed (successfully) per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`-th percentile login latency in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_us
            .get(rank.clamp(1, n) - 1)
            .map(|us| f64::from(*us) / 1000.0)
    }
}

/// Where and as whom to log in, and how often.
pub struct Logins {
    url: String,
    accounts: Vec<Registration>,
    rate: f64,
}

impl Logins {
    pub fn new(gateway_url: &str, accounts: Vec<Registration>, rate: f64) -> Self {
        Self {
            url: format!("{}/api/v1/auth/login", gateway_url.trim_end_matches('/')),
            accounts,
            rate,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    fn request(&self, n: usize) -> anyhow::Result<Request<Body>> {
        let account = self
            .accounts
            .get(n % self.accounts.len().max(1))
            .ok_or_else(|| anyhow::anyhow!("no login accounts"))?;
        let body = json!({"email": account.email, "password": account.password});
        Ok(Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Body::new(Bytes::from(serde_json::to_vec(&body)?)))?)
    }

    /// One login, checked: a 200 with an access token.
    pub async fn once(&self, client: &LoadClient, n: usize) -> anyhow::Result<()> {
        let (status, body) = load::send(client, self.request(n)?).await?;
        if status != StatusCode::OK {
            anyhow::bail!(
                "login answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        if json["access_token"].as_str().is_none() {
            anyhow::bail!("login answered no access token: {json}");
        }
        Ok(())
    }
}

/// Logins running in the background until [`Running::stop`].
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<LoginStats>,
}

/// The outcome of one login: its latency, or what went wrong.
type Outcome = Result<u32, String>;

async fn login(client: LoadClient, logins: Arc<Logins>, n: usize) -> Outcome {
    let started = Instant::now();
    let req = logins.request(n).map_err(|e| format!("request: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), load::send(&client, req)).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(_)) => Err("transport".into()),
        Ok(Ok((status, _))) if status == StatusCode::OK => {
            Ok(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX))
        }
        Ok(Ok((status, _))) => Err(format!("status {}", status.as_u16())),
    }
}

fn record(stats: &mut LoginStats, outcome: Result<Outcome, tokio::task::JoinError>) {
    match outcome {
        Ok(Ok(us)) => {
            stats.ok += 1;
            stats.latencies_us.push(us);
        }
        Ok(Err(kind)) => {
            stats.errors += 1;
            *stats.error_kinds.entry(kind).or_default() += 1;
        }
        Err(_) => {
            stats.errors += 1;
            *stats.error_kinds.entry("task failed".into()).or_default() += 1;
        }
    }
}

/// Starts logging in at `logins.rate` a second.
pub fn start(client: &LoadClient, logins: &Arc<Logins>) -> Running {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let client = client.clone();
    let logins = logins.clone();
    let task = tokio::spawn(async move {
        let mut stats = LoginStats::default();
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / logins.rate));
        let mut inflight = JoinSet::new();
        let mut n = 0usize;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticker.tick() => {
                    inflight.spawn(login(client.clone(), logins.clone(), n));
                    n += 1;
                }
                Some(done) = inflight.join_next() => record(&mut stats, done),
            }
        }
        stats.elapsed = started.elapsed();
        while let Some(done) = inflight.join_next().await {
            record(&mut stats, done);
        }
        stats
    });
    Running { stop, task }
}

impl Running {
    /// Stops starting logins, waits for those in flight, and returns what happened.
    pub async fn stop(self) -> LoginStats {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
