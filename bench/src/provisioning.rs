//! The provisioning figure: how long a new clinic waits from sending its
//! registration to its first patient being created — register (argon2, central
//! transaction, the worker's role, `CREATE DATABASE … TEMPLATE`, grants, data key;
//! it answers with the admin signed in), first `POST /api/v1/patients` with that
//! token —
//! against the two things no provisioning can skip: a bare `CREATE DATABASE …
//! TEMPLATE` of the same template on the same server over an open superuser
//! connection, then one argon2id hash (`common::password::hash`, the product's
//! parameters) in the bench process; alternating product and reference (which
//! goes first switches every time), p50 of each (the reference's p50 is of
//! clone + hash, sample by sample). The bare clones are dropped only after the
//! last sample, as the clinics' databases are kept.

use crate::breakdown;
use crate::load::LoadClient;
use crate::report::{self, Line};
use crate::settings::Figure;
use crate::setup::{self, Account};
use anyhow::Context;
use common::metric_names as m;
use devstack::{Http, Stack};
use migrations::{ident, CLINIC_TEMPLATE_DB};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The goal: register to first patient, a ratio of a bare clone plus one hash.
const GOAL: f64 = 1.3;

/// One provisioned clinic: its administrator and its first patient.
pub struct Provisioned {
    pub account: Account,
    pub patient: Uuid,
}

/// The figure's lines and notes, and the clinics it made.
pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
    pub clinics: Vec<Provisioned>,
}

fn p50(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples
        .get(samples.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The worker's own provisioning histogram (role, clone, grants, data key, status).
async fn worker_provisioning(
    client: &LoadClient,
    stack: &Stack,
    region: &str,
) -> anyhow::Result<breakdown::Histo> {
    let admin = stack
        .region(region)
        .with_context(|| format!("no region {region}"))?
        .worker
        .admin_addr;
    let text = breakdown::metrics_text(client, admin).await?;
    Ok(breakdown::histogram(&text, m::PROVISIONING_DURATION, &[]))
}

/// Times `count` registrations and as many bare clones in region `region`.
pub async fn measure(
    stack: &Stack,
    client: &LoadClient,
    region: &str,
    count: usize,
) -> anyhow::Result<Outcome> {
    let http = Http::new(&stack.gateway_url());
    let server = &stack
        .region(region)
        .with_context(|| format!("no region {region}"))?
        .server;
    let worker_before = worker_provisioning(client, stack, region).await?;
    let admin = server
        .connect("postgres")
        .await
        .context("connecting to the regional server")?;
    let mut totals = Vec::with_capacity(count);
    let (mut registers, mut firsts) = (Vec::new(), Vec::new());
    let mut clones = Vec::with_capacity(count);
    let mut hashes = Vec::with_capacity(count);
    let mut references = Vec::with_capacity(count);
    let mut clinics = Vec::with_capacity(count);
    eprintln!("bench: provisioning {count} clinics, each next to a bare clone…");
    for i in 0..count {
        let bare = async {
            let name = format!("bench_bare_clone_{i}");
            let started = Instant::now();
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    ident(&name),
                    ident(CLINIC_TEMPLATE_DB)
                ))
                .await
                .context("bare CREATE DATABASE … TEMPLATE")?;
            let cloned = started.elapsed();
            let password = format!("bench-reference-password-{i}");
            let hashing = Instant::now();
            tokio::task::spawn_blocking(move || common::password::hash(&password))
                .await
                .context("the reference argon2id hash")?
                .map_err(|e| anyhow::anyhow!("the reference argon2id hash: {e}"))?;
            Ok::<_, anyhow::Error>((cloned, hashing.elapsed()))
        };
        let product = async {
            let started = Instant::now();
            let reg = setup::register_only(&http, &format!("Bench Provisioned Clinic {i}")).await?;
            let registered = started.elapsed();
            let account = Account {
                clinic_id: reg.clinic_id,
                region: reg.region,
                token: reg.token,
            };
            let patient = setup::create(&http, &account.token, "patients", &setup::ada()).await?;
            let total = started.elapsed();
            registers.push(registered);
            firsts.push(total - registered);
            totals.push(total);
            clinics.push(Provisioned { account, patient });
            Ok::<_, anyhow::Error>(())
        };
        // Alternate which goes first, so neither always runs on a warmer server.
        let (clone, hash) = if i % 2 == 0 {
            product.await?;
            bare.await?
        } else {
            let reference = bare.await?;
            product.await?;
            reference
        };
        clones.push(clone);
        hashes.push(hash);
        references.push(clone + hash);
    }
    let worker = worker_provisioning(client, stack, region)
        .await?
        .minus(worker_before);
    // The clones stay until every sample is taken, like the clinics' databases.
    for i in 0..count {
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {}",
                ident(&format!("bench_bare_clone_{i}"))
            ))
            .await
            .context("dropping a bare clone")?;
    }
    let total = p50(&mut totals);
    let reference = p50(&mut references);
    let value = format!(
        "p50 {} ms (register {}, first patient {})",
        report::num(ms(total), 0),
        report::num(ms(p50(&mut registers)), 0),
        report::num(ms(p50(&mut firsts)), 0),
    );
    let line = Line::new(
        Figure::Provisioning,
        format!("register -> first patient created ({count} clinics)"),
        value,
        format!(
            "bare CREATE DATABASE ... TEMPLATE + argon2id p50 {} ms (clone {}, hash {})",
            report::num(ms(reference), 0),
            report::num(ms(p50(&mut clones)), 0),
            report::num(ms(p50(&mut hashes)), 0)
        ),
        report::ratio(ms(total), ms(reference)),
    )
    .at_most(GOAL);
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    let notes = vec![format!(
        "provisioning: register -> first patient max {} ms; bare clone max {} ms, argon2id hash max {} ms; the worker's own provisioning (role, clone, grants, data key, status) mean {} ms over {}; each p50 is over {count} samples, the parts' p50s need not add up",
        report::num(ms(max(&totals)), 0),
        report::num(ms(max(&clones)), 0),
        report::num(ms(max(&hashes)), 0),
        worker.mean_ms().map_or_else(|| "-".into(), |v| report::num(v, 0)),
        worker.count,
    )];
    Ok(Outcome {
        lines: vec![line],
        notes,
        clinics,
    })
}
