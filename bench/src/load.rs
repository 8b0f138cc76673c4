//! The load generator and its statistics: `concurrency` tasks share one kept-alive
//! hyper client and send requests back to back until a deadline or until a number
//! of requests was sent ([`Limit`]). What each task sends next comes from a
//! [`Workload`]: GETs over one or many fixed targets ([`Targets`], optionally
//! signed as a gateway signs them) or a weighted mix of operations (the mixed
//! scenario). Every answer other than a 2xx with its whole body read is an error;
//! statistics are kept overall and, for workloads of several operations, per
//! operation. The client speaks plain HTTP, and HTTPS with the gateway's client
//! certificate when the stack's workers require mutual TLS.

use anyhow::Context;
use bytes::Bytes;
use common::internal::{self, Forwarded, InternalKey};
use http::header::HeaderValue;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A request that does not complete within this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Request bodies: empty for GETs, JSON for writes.
pub type Body = Full<Bytes>;

pub type LoadClient = httpkit::Client<Body>;

/// The TLS configuration of the bench's clients: the gateway's client certificate
/// when the stack's workers want mutual TLS, otherwise one that trusts nothing
/// (plain `http` URLs never use it).
pub fn tls_config(stack: &devstack::Stack) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    Ok(match &stack.certs {
        Some(certs) => certs.gateway_tls().client_config()?,
        None => common::tls::client_trusting_nothing()?,
    })
}

/// A kept-alive client (`httpkit::client`: `http` and `https` URLs alike) with
/// room for one idle connection per task.
pub fn client(concurrency: usize, tls: Arc<rustls::ClientConfig>) -> LoadClient {
    let settings = httpkit::ClientSettings {
        pool_max_idle_per_host: Some(concurrency.max(1)),
        public_only: false,
        pool_idle_timeout: Some(Duration::from_secs(120)),
        ..httpkit::ClientSettings::default()
    };
    httpkit::client(&settings, Some(tls))
}

/// How long a run lasts.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// Until this much time has passed.
    For(Duration),
    /// Until this many requests were sent (by all tasks together).
    Requests(u64),
}

/// When the tasks of a run stop.
struct Stop {
    deadline: Option<Instant>,
    remaining: Option<AtomicU64>,
}

impl Stop {
    fn new(limit: Limit, started: Instant) -> Self {
        match limit {
            Limit::For(d) => Self {
                deadline: Some(started + d),
                remaining: None,
            },
            Limit::Requests(n) => Self {
                deadline: None,
                remaining: Some(AtomicU64::new(n)),
            },
        }
    }

    /// Whether one more request may be sent (and, when counting, takes it).
    fn take(&self) -> bool {
        if let Some(deadline) = self.deadline {
            if Instant::now() >= deadline {
                return false;
            }
        }
        match &self.remaining {
            Some(n) => n
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok(),
            None => true,
        }
    }
}

/// A small, fast pseudo-random generator (SplitMix64); each load task has its own.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // The modulo bias is negligible for the small `n` used here.
        (self.next_u64() % n as u64) as usize
    }

    /// One element of `items`, if there is any.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// The state a workload gets from the load task that asks it for requests.
#[derive(Debug)]
pub struct Task {
    /// Which of the `concurrency` tasks this is.
    pub index: usize,
    /// Requests this task has sent so far.
    pub sent: u64,
    pub rng: Rng,
}

/// One request to send, and which of the workload's operations it is.
pub struct Job {
    /// Index into [`Workload::ops`].
    pub op: usize,
    /// The request; an error here counts as a failed request of `op`.
    pub request: anyhow::Result<Request<Body>>,
}

/// What the load tasks send.
pub trait Workload: Send + Sync + 'static {
    /// Names of the operation kinds, as reported.
    fn ops(&self) -> &[&'static str];
    /// The next request for `task`.
    fn next(&self, task: &mut Task) -> Job;
}

/// One GET with fixed headers.
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

    /// `GET url` with `authorization: Bearer token`.
    pub fn bearer(url: &str, token: &str) -> anyhow::Result<Self> {
        Self::new(url, &[("authorization", &format!("Bearer {token}"))])
    }

    fn request(&self) -> Request<Body> {
        let mut req = Request::new(Body::default());
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Signs requests the way the gateway does (`common::internal`): time, a fresh
/// request id, the client IP, method, path and query, under `INTERNAL_SECRET`.
pub struct Signer {
    key: InternalKey,
    client_ip: IpAddr,
    prefix: String,
    next: AtomicU64,
}

impl Signer {
    pub fn new(secret: &[u8], client_ip: IpAddr, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            key: InternalKey::new(secret)?,
            client_ip,
            prefix: prefix.to_owned(),
            next: AtomicU64::new(0),
        })
    }

    /// Adds the signed internal headers to `req`, for a client at `client_ip`
    /// (the signer's own when `None`).
    pub fn sign<B>(&self, req: &mut Request<B>, client_ip: Option<IpAddr>) -> anyhow::Result<()> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{}-{n}", self.prefix);
        let client_ip = client_ip.unwrap_or(self.client_ip);
        let timestamp = common::token::now_secs();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let signature = self.key.sign(&Forwarded {
            timestamp,
            request_id: &request_id,
            client_ip,
            method: req.method().as_str(),
            path_and_query: &path_and_query,
        });
        let headers = req.headers_mut();
        headers.insert(
            internal::HEADER_TIMESTAMP,
            HeaderValue::try_from(timestamp.to_string())?,
        );
        headers.insert(
            internal::HEADER_CLIENT_IP,
            HeaderValue::try_from(client_ip.to_string())?,
        );
        headers.insert(
            internal::HEADER_REQUEST_ID,
            HeaderValue::try_from(request_id)?,
        );
        headers.insert(
            internal::HEADER_SIGNATURE,
            HeaderValue::try_from(signature)?,
        );
        Ok(())
    }
}

/// How [`Targets`] chooses the next target.
#[derive(Debug)]
pub enum Pick {
    /// Uniformly at random, independently per request.
    Random,
    /// In turn over all tasks: with `Limit::Requests(targets.len())` every target
    /// is requested exactly once.
    InTurn(AtomicUsize),
    /// Zipf-skewed: the `k`-th target (from 1) with a probability proportional to
    /// `1 / k^s`, independently per request.
    Zipf(Zipf),
}

/// The cumulative distribution of a Zipf law over `n` ranks, drawn from by
/// inversion (a binary search per draw).
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `1..=n` with exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        if sum > 0.0 {
            for c in &mut cdf {
                *c /= sum;
            }
        }
        Self { cdf }
    }

    /// The share of draws the most requested target gets.
    pub fn top_share(&self) -> f64 {
        self.cdf.first().copied().unwrap_or(0.0)
    }

    /// The share of draws the first `k` targets get together.
    pub fn share_of_first(&self, k: usize) -> f64 {
        match k {
            0 => 0.0,
            k => self.cdf.get(k - 1).copied().unwrap_or(1.0),
        }
    }

    /// An index in `0..n`.
    pub fn draw(&self, rng: &mut Rng) -> usize {
        // 53 random bits: a uniform number in [0, 1).
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf
            .partition_point(|c| *c <= u)
            .min(self.cdf.len().saturating_sub(1))
    }
}

/// GETs over one or many fixed targets, optionally signed as a gateway signs:
/// the workload of every scenario but the mixed one.
pub struct Targets {
    targets: Vec<Target>,
    pick: Pick,
    signer: Option<Arc<Signer>>,
}

impl Targets {
    /// The same request every time.
    pub fn one(target: Target) -> Self {
        Self::many(vec![target], Pick::Random)
    }

    pub fn many(targets: Vec<Target>, pick: Pick) -> Self {
        Self {
            targets,
            pick,
            signer: None,
        }
    }

    /// In turn, from the first target on.
    pub fn in_turn(targets: Vec<Target>) -> Self {
        Self::many(targets, Pick::InTurn(AtomicUsize::new(0)))
    }

    /// Every request signed by `signer` before it is sent.
    pub fn signed(mut self, signer: Arc<Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// The request for the `i`-th target (modulo their number).
    pub fn request(&self, i: usize) -> anyhow::Result<Request<Body>> {
        let target = self
            .targets
            .get(i % self.targets.len().max(1))
            .context("no targets")?;
        let mut req = target.request();
        if let Some(signer) = &self.signer {
            signer.sign(&mut req, None)?;
        }
        Ok(req)
    }
}

impl Workload for Targets {
    fn ops(&self) -> &[&'static str] {
        &["get"]
    }

    fn next(&self, task: &mut Task) -> Job {
        let i = match &self.pick {
            Pick::Random => task.rng.below(self.targets.len()),
            Pick::InTurn(next) => next.fetch_add(1, Ordering::Relaxed),
            Pick::Zipf(zipf) => zipf.draw(&mut task.rng),
        };
        Job {
            op: 0,
            request: self.request(i),
        }
    }
}

/// Sends one request and reads the whole answer.
pub async fn send(client: &LoadClient, req: Request<Body>) -> anyhow::Result<(StatusCode, Bytes)> {
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Sends a target's GET and reads the whole answer.
pub async fn fetch(client: &LoadClient, target: &Target) -> anyhow::Result<(StatusCode, Bytes)> {
    send(client, target.request()).await
}

/// The outcome of one or more runs of one workload.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Wall time from the first request to the end of the last one.
    pub elapsed: Duration,
    pub ok: u64,
    pub errors: u64,
    /// Latency of every successful request, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Error counts by kind (`status 503`, `timeout`, …; prefixed with the
    /// operation in workloads of several operations).
    pub error_kinds: BTreeMap<String, u64>,
    /// The first error seen, with the body of a non-2xx answer.
    pub first_error: Option<String>,
    /// Per operation, in the workload's order, when it has more than one; their
    /// `elapsed` is the whole run's.
    pub ops: Vec<(&'static str, Stats)>,
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
        for (name, op) in other.ops {
            match self.ops.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => mine.merge(op),
                None => self.ops.push((name, op)),
            }
        }
        self.absorb_counts(other.ok, other.errors, other.latencies_us);
        self.absorb_errors(other.error_kinds, other.first_error);
    }

    /// Adds a concurrent task's counts (elapsed is the caller's).
    fn absorb(&mut self, other: Stats) {
        for (name, op) in other.ops {
            match self.ops.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => mine.absorb(op),
                None => self.ops.push((name, op)),
            }
        }
        self.absorb_counts(other.ok, other.errors, other.latencies_us);
        self.absorb_errors(other.error_kinds, other.first_error);
    }

    fn absorb_counts(&mut self, ok: u64, errors: u64, latencies_us: Vec<u32>) {
        self.ok += ok;
        self.errors += errors;
        self.latencies_us.extend(latencies_us);
        self.sorted = false;
    }

    fn absorb_errors(&mut self, kinds: BTreeMap<String, u64>, first: Option<String>) {
        for (k, n) in kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = first;
        }
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

/// A seed that differs between runs and tasks.
fn seed(task: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (task as u64).wrapping_mul(0xA24B_AED4_963E_E407)
}

/// Runs `concurrency` request loops of `workload` until `limit`.
pub async fn run(
    client: &LoadClient,
    workload: &Arc<dyn Workload>,
    concurrency: usize,
    limit: Limit,
) -> Stats {
    let started = Instant::now();
    let stop = Arc::new(Stop::new(limit, started));
    let mut tasks = JoinSet::new();
    for index in 0..concurrency {
        let task = Task {
            index,
            sent: 0,
            rng: Rng::new(seed(index)),
        };
        tasks.spawn(request_loop(
            client.clone(),
            workload.clone(),
            task,
            stop.clone(),
        ));
    }
    let mut total = Stats::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => total.absorb(stats),
            Err(e) => total.error("task failed".into(), || format!("load task failed: {e}")),
        }
    }
    total.elapsed = started.elapsed();
    for (_, op) in &mut total.ops {
        op.elapsed = total.elapsed;
    }
    total
}

/// Records one outcome in the totals and, when there are several, in its operation's.
struct Recorder<'a> {
    total: Stats,
    ops: Vec<(&'static str, Stats)>,
    names: &'a [&'static str],
}

impl Recorder<'_> {
    fn ok(&mut self, op: usize, micros: u32) {
        self.total.ok += 1;
        self.total.latencies_us.push(micros);
        if let Some((_, s)) = self.ops.get_mut(op) {
            s.ok += 1;
            s.latencies_us.push(micros);
        }
    }

    fn error(&mut self, op: usize, kind: String, detail: impl Fn() -> String) {
        match self.ops.get_mut(op) {
            Some((name, s)) => {
                let name = *name;
                s.error(kind.clone(), &detail);
                self.total.error(format!("{name}: {kind}"), || {
                    format!("{name}: {}", detail())
                });
            }
            None => self.total.error(kind, detail),
        }
    }

    fn name(&self, op: usize) -> &'static str {
        self.names.get(op).copied().unwrap_or("?")
    }

    fn finish(mut self) -> Stats {
        self.total.ops = self.ops;
        self.total
    }
}

async fn request_loop(
    client: LoadClient,
    workload: Arc<dyn Workload>,
    mut task: Task,
    stop: Arc<Stop>,
) -> Stats {
    let names = workload.ops();
    let ops = if names.len() > 1 {
        names
            .iter()
            .map(|name| {
                let stats = Stats {
                    latencies_us: Vec::with_capacity(1024),
                    ..Stats::default()
                };
                (*name, stats)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut rec = Recorder {
        total: Stats {
            latencies_us: Vec::with_capacity(4096),
            ..Stats::default()
        },
        ops,
        names,
    };
    while stop.take() {
        let job = workload.next(&mut task);
        task.sent += 1;
        let req = match job.request {
            Ok(req) => req,
            Err(e) => {
                let what = rec.name(job.op);
                rec.error(job.op, "request not built".into(), || {
                    format!("{what}: {e:#}")
                });
                continue;
            }
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, send(&client, req)).await;
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        match outcome {
            Ok(Ok((status, _))) if status.is_success() => rec.ok(job.op, micros),
            Ok(Ok((status, body))) => {
                rec.error(job.op, format!("status {}", status.as_u16()), || {
                    let text = String::from_utf8_lossy(&body);
                    format!("{status}: {}", text.chars().take(300).collect::<String>())
                })
            }
            Ok(Err(e)) => rec.error(job.op, format!("{e}"), || format!("{e:#}")),
            Err(_) => rec.error(job.op, "timeout".into(), || {
                format!("no answer within {REQUEST_TIMEOUT:?}")
            }),
        }
    }
    rec.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_draws_follow_the_law() {
        let zipf = Zipf::new(1000, 1.2);
        let mut rng = Rng::new(11);
        let mut counts = vec![0u32; 1000];
        let draws = 200_000;
        for _ in 0..draws {
            if let Some(n) = counts.get_mut(zipf.draw(&mut rng)) {
                *n += 1;
            }
        }
        let share = |i: usize| f64::from(counts[i]) / f64::from(draws);
        // Rank 1 over rank 2 is 2^1.2 = 2.30.
        assert!((share(0) / share(1) - 2.3).abs() < 0.15, "{counts:?}");
        assert!((share(0) - zipf.top_share()).abs() < 0.01);
        assert!(counts.iter().all(|n| *n < draws));
        assert!(zipf.share_of_first(1000) > 0.999);
        let uniform = Zipf::new(4, 0.0);
        assert!((uniform.share_of_first(2) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn rng_stays_below_its_bound() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let i = rng.below(5);
            assert!(i < 5);
            if let Some(n) = seen.get_mut(i) {
                *n += 1;
            }
        }
        assert!(seen.iter().all(|&n| n > 1500), "{seen:?}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn a_request_limit_is_shared_and_exact() {
        let stop = Stop::new(Limit::Requests(3), Instant::now());
        let taken = (0..10).filter(|_| stop.take()).count();
        assert_eq!(taken, 3);
        let stop = Stop::new(Limit::For(Duration::ZERO), Instant::now());
        assert!(!stop.take());
    }

    #[test]
    fn signed_requests_verify_like_the_gateway_s() {
        let secret = [7u8; 32];
        let signer = Signer::new(&secret, "127.0.0.1".parse().unwrap(), "t").unwrap();
        let targets = Targets::one(Target::new("http://w/api/v1/patients/1?x=2", &[]).unwrap())
            .signed(Arc::new(signer));
        let req = targets.request(0).unwrap();
        let header = |n: &str| req.headers().get(n).unwrap().to_str().unwrap().to_owned();
        let forwarded = Forwarded {
            timestamp: header(internal::HEADER_TIMESTAMP).parse().unwrap(),
            request_id: &header(internal::HEADER_REQUEST_ID),
            client_ip: header(internal::HEADER_CLIENT_IP).parse().unwrap(),
            method: "GET",
            path_and_query: "/api/v1/patients/1?x=2",
        };
        let key = InternalKey::new(&secret).unwrap();
        let now = common::token::now_secs();
        assert!(key
            .verify(&forwarded, &header(internal::HEADER_SIGNATURE), now)
            .is_ok());
        let again = targets.request(0).unwrap();
        assert_ne!(
            again.headers().get(internal::HEADER_REQUEST_ID),
            req.headers().get(internal::HEADER_REQUEST_ID)
        );
    }

    #[test]
    fn merge_keeps_operations_apart() {
        let op = |ok: u64| Stats {
            ok,
            latencies_us: vec![100; ok as usize],
            elapsed: Duration::from_secs(1),
            ..Stats::default()
        };
        let mut a = Stats {
            ok: 3,
            elapsed: Duration::from_secs(1),
            ops: vec![("x", op(1)), ("y", op(2))],
            ..Stats::default()
        };
        let b = Stats {
            ok: 4,
            elapsed: Duration::from_secs(1),
            ops: vec![("x", op(4))],
            ..Stats::default()
        };
        a.merge(b);
        assert_eq!(a.ok, 7);
        assert_eq!(a.elapsed, Duration::from_secs(2));
        let x = a.ops.iter().find(|(n, _)| *n == "x").map(|(_, s)| s.ok);
        assert_eq!(x, Some(5));
        assert_eq!(a.ops.len(), 2);
    }
}
