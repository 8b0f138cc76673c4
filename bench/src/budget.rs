//! The connection-budget figure's clinics: many clinics on one regional server,
//! each registered through the gateway (argon2 and provisioning included; a few at
//! a time, since the worker clones databases one at a time anyway), given an
//! administrator token forged with the stack's token service (what a login would
//! issue, without a second argon2), and one patient created through the gateway.
//! The setup is not timed as part of any figure; its duration is reported. The
//! worker's resident memory before and after the patients pass (which opens one
//! clinic pool per clinic) gives the memory of an open clinic pool.

use crate::breakdown;
use crate::cpu;
use crate::load::{LoadClient, Target};
use crate::setup::{self, Account, Registration};
use anyhow::{bail, Context};
use common::metric_names as m;
use devstack::{Http, Stack};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Attempts per registration or first write before the setup gives up.
const ATTEMPTS: u32 = 3;

/// The worker's memory around the pass that opened the clinics' pools.
#[derive(Clone, Copy, Debug)]
pub struct PoolMemory {
    pub rss_before: u64,
    pub rss_after: u64,
    pub pools_before: f64,
    pub pools_after: f64,
    /// Connections the clinic pools held after the pass.
    pub connections_after: f64,
}

/// The clinics, ready to be read.
pub struct ManyClinics {
    /// `GET /api/v1/patients/{id}` with each clinic's token.
    pub targets: Vec<Target>,
    /// Each clinic's registration (to forge fresh tokens) and patient, in the
    /// order of `targets`.
    pub registrations: Vec<Registration>,
    pub patients: Vec<Uuid>,
    pub registered_in: Duration,
    pub patients_in: Duration,
    /// Attempts that failed and were retried, registrations and first writes.
    pub retried: u64,
    pub memory: Option<PoolMemory>,
}

/// Runs `f` for each of `items`, at most `limit` at a time, each up to
/// [`ATTEMPTS`] times; the results in the items' order and the retries made.
/// Prints progress every tenth.
async fn bounded<T, R, F, Fut>(
    what: &str,
    items: Vec<T>,
    limit: usize,
    f: F,
) -> anyhow::Result<(Vec<R>, u64)>
where
    T: Clone + Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<R>> + Send,
{
    let total = items.len();
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut tasks = JoinSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let permits = permits.clone();
        let f = f.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let mut retries = 0u64;
            loop {
                match f(item.clone()).await {
                    Ok(r) => return Ok::<_, anyhow::Error>((index, r, retries)),
                    Err(e) if retries + 1 < u64::from(ATTEMPTS) => {
                        retries += 1;
                        eprintln!("bench: retrying after: {e:#}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        });
    }
    let mut out = Vec::with_capacity(total);
    let mut retried = 0;
    let step = (total / 10).max(1);
    while let Some(joined) = tasks.join_next().await {
        let (index, r, retries) = joined.context("a setup task failed")??;
        retried += retries;
        out.push((index, r));
        if out.len() % step == 0 {
            eprintln!(
                "bench: {what}: {}/{total} ({:.0} s)",
                out.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    out.sort_by_key(|(index, _)| *index);
    Ok((out.into_iter().map(|(_, r)| r).collect(), retried))
}

/// The worker's open clinic pools and their connections, from its metrics.
async fn pools(client: &LoadClient, worker_admin: SocketAddr) -> anyhow::Result<(f64, f64)> {
    let text = breakdown::metrics_text(client, worker_admin).await?;
    Ok((
        breakdown::value(&text, m::POOLS_OPEN, &[]),
        breakdown::value(&text, m::POOL_CONNECTIONS, &[]),
    ))
}

/// `GET /api/v1/patients/{id}` of each clinic with a freshly forged token.
pub fn targets(
    stack: &Stack,
    registrations: &[Registration],
    patients: &[Uuid],
) -> anyhow::Result<Vec<Target>> {
    let tokens = stack.tokens()?;
    let gateway = stack.gateway_url();
    registrations
        .iter()
        .zip(patients)
        .map(|(r, id)| {
            let account = r.forge(&tokens)?;
            Target::bearer(&format!("{gateway}/api/v1/patients/{id}"), &account.token)
        })
        .collect()
}

/// Registers `count` clinics and creates one patient in each, `concurrency` at a time.
pub async fn setup(
    stack: &Stack,
    client: &LoadClient,
    region: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<ManyClinics> {
    let gateway = stack.gateway_url();
    let tokens = Arc::new(stack.tokens()?);
    let worker = stack
        .region(region)
        .with_context(|| format!("no region {region}"))?;
    eprintln!("bench: registering {count} clinics, {concurrency} at a time…");
    let started = Instant::now();
    let http = Http::new(&gateway);
    let (registrations, reg_retries) = bounded(
        "registered",
        (0..count).collect(),
        concurrency,
        move |i: usize| {
            let http = http.clone();
            async move { setup::register_only(&http, &format!("Bench Budget Clinic {i}")).await }
        },
    )
    .await?;
    let registered_in = started.elapsed();
    if let Some(other) = registrations.iter().find(|r| r.region != region) {
        bail!(
            "clinic {} was placed in {}, not {region}",
            other.clinic_id,
            other.region
        );
    }
    let accounts = registrations
        .iter()
        .map(|r: &Registration| r.forge(&tokens))
        .collect::<anyhow::Result<Vec<Account>>>()?;

    let worker_pid = cpu::component_pid("worker", Some(region));
    let rss_before = worker_pid.and_then(cpu::rss_bytes);
    let (pools_before, _) = pools(client, worker.worker.admin_addr).await?;
    eprintln!("bench: creating a patient in each of the {count} clinics…");
    let started = Instant::now();
    let http = Http::new(&gateway);
    let (patients, patient_retries) = bounded(
        "first patients",
        accounts.clone(),
        concurrency,
        move |a: Account| {
            let http = http.clone();
            async move { setup::create(&http, &a.token, "patients", &setup::ada()).await }
        },
    )
    .await?;
    let patients_in = started.elapsed();
    let rss_after = worker_pid.and_then(cpu::rss_bytes);
    let (pools_after, connections_after) = pools(client, worker.worker.admin_addr).await?;
    let memory = match (rss_before, rss_after) {
        (Some(rss_before), Some(rss_after)) => Some(PoolMemory {
            rss_before,
            rss_after,
            pools_before,
            pools_after,
            connections_after,
        }),
        _ => None,
    };

    let targets = accounts
        .iter()
        .zip(&patients)
        .map(|(a, id): (&Account, &Uuid)| {
            Target::bearer(&format!("{gateway}/api/v1/patients/{id}"), &a.token)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ManyClinics {
        targets,
        registrations,
        patients,
        registered_in,
        patients_in,
        retried: reg_retries + patient_retries,
        memory,
    })
}
