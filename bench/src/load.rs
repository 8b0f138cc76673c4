//! The load generator and its statistics: `concurrency` tasks share one kept-alive
//! hyper client and send the same GET back to back until a deadline; every answer
//! other than a 200 with its whole body read is an error.

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A request that does not complete within this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub type LoadClient = Client<HttpConnector, Empty<Bytes>>;

/// A kept-alive client with room for one idle connection per task.
pub fn client(concurrency: usize) -> LoadClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(120))
        .build(connector)
}

/// What every request of a run asks for.
#[derive(Clone, Debug)]
pub struct Target {
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl Target {
    pub fn new(url: &str, headers: &[(&'static str, &str)]) -> anyhow::Result<Self> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse()?);
        }
        Ok(Self {
            uri: url.parse().with_context(|| format!("bad url {url}"))?,
            headers: map,
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Sends one request and reads the whole answer.
pub async fn fetch(client: &LoadClient, target: &Target) -> anyhow::Result<(StatusCode, Bytes)> {
    let resp = client.request(target.request()).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The outcome of one or more runs against one target.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Wall time from the first request to the end of the last one.
    pub elapsed: Duration,
    pub ok: u64,
    pub errors: u64,
    /// Latency of every successful request, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Error counts by kind (`status 503`, `timeout`, …).
    pub error_kinds: BTreeMap<String, u64>,
    /// The first error seen, with the body of a non-200 answer.
    pub first_error: Option<String>,
    sorted: bool,
}

impl Stats {
    fn error(&mut self, kind: String, detail: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(detail());
        }
        *self.error_kinds.entry(kind).or_default() += 1;
    }

    /// Adds another run's counts; elapsed times add up (runs are sequential).
    pub fn merge(&mut self, other: Stats) {
        self.elapsed += other.elapsed;
        self.absorb(other);
    }

    /// Adds a concurrent task's counts (elapsed is the caller's).
    fn absorb(&mut self, other: Stats) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
        for (k, n) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.sorted = false;
    }

    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`-th percentile latency in milliseconds (nearest rank), if any request succeeded.
    pub fn percentile_ms(&mut self, p: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        if !self.sorted {
            self.latencies_us.sort_unstable();
            self.sorted = true;
        }
        let n = self.latencies_us.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let idx = rank.clamp(1, n) - 1;
        self.latencies_us.get(idx).map(|us| f64::from(*us) / 1000.0)
    }

    /// Mean latency of successful requests in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let sum: u64 = self.latencies_us.iter().map(|&us| u64::from(us)).sum();
        Some(sum as f64 / self.latencies_us.len() as f64 / 1000.0)
    }
}

/// Runs `concurrency` request loops against `target` for `duration`.
pub async fn run(
    client: &LoadClient,
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> Stats {
    let target = Arc::new(target.clone());
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        tasks.spawn(request_loop(client.clone(), target.clone(), deadline));
    }
    let mut total = Stats::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => total.absorb(stats),
            Err(e) => total.error("task failed".into(), || format!("load task failed: {e}")),
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn request_loop(client: LoadClient, target: Arc<Target>, deadline: Instant) -> Stats {
    let mut stats = Stats {
        latencies_us: Vec::with_capacity(4096),
        ..Stats::default()
    };
    while Instant::now() < deadline {
        let started = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, fetch(&client, &target)).await;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        match outcome {
            Ok(Ok((StatusCode::OK, _))) => {
                stats.ok += 1;
                stats.latencies_us.push(micros);
            }
            Ok(Ok((status, body))) => stats.error(format!("status {}", status.as_u16()), || {
                let text = String::from_utf8_lossy(&body);
                format!("{status}: {}", text.chars().take(300).collect::<String>())
            }),
            Ok(Err(e)) => stats.error(format!("{e}"), || format!("{e:#}")),
            Err(_) => stats.error("timeout".into(), || {
                format!("no answer within {REQUEST_TIMEOUT:?}")
            }),
        }
    }
    stats
}
