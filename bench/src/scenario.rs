//! One bench run end to end: the stack and its fixture, the baseline server on its
//! own runtime, alternating measured rounds (baseline, product, …) each after a
//! warm-up, the report, and the teardown.

use crate::baseline;
use crate::breakdown::{Snapshot, Sources};
use crate::cpu;
use crate::load::{self, LoadClient, Target};
use crate::report::{self, Row};
use crate::settings::Settings;
use crate::setup::{self, Fixture};
use anyhow::{bail, Context};
use http::StatusCode;
use std::time::Duration;

const BASELINE: &str = "bare hyper+tokio-postgres (baseline)";
const PRODUCT: &str = "gateway -> worker GET patient";

/// The two targets every round measures.
struct Scenarios {
    baseline: Target,
    product: Target,
}

/// Everything measured.
struct Results {
    baseline: Row,
    product: Row,
    breakdown: Option<Snapshot>,
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Runs the whole bench and prints the report. Must be called outside any runtime.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!(
        "bench: starting the stack (regions: {})…",
        settings.regions.join(", ")
    );
    let product = setup::start(&settings)?;
    eprintln!(
        "bench: stack up at {} (data in {})",
        product.stack.gateway_url(),
        product.dir.path().display()
    );

    let load_rt = runtime("bench-load", nproc)?;
    let fixture = load_rt
        .block_on(setup::seed(&product.stack.gateway_url()))
        .context("seeding the clinic")?;
    let region = product.stack.region(&fixture.region).with_context(|| {
        format!(
            "the clinic's region `{}` is not in the stack",
            fixture.region
        )
    })?;
    eprintln!(
        "bench: clinic {} in {}, patient {}",
        fixture.clinic_id, fixture.region, fixture.patient_id
    );

    let baseline_rt = runtime("bench-baseline", nproc)?;
    let server = baseline_rt
        .block_on(baseline::start(
            region.server.config(&fixture.database()),
            settings.pg_conns,
        ))
        .context("starting the baseline server")?;
    let scenarios = Scenarios {
        baseline: Target::new(&server.url(fixture.patient_id), &[])?,
        product: Target::new(
            &format!(
                "{}/api/v1/patients/{}",
                product.stack.gateway_url(),
                fixture.patient_id
            ),
            &[("authorization", &format!("Bearer {}", fixture.token))],
        )?,
    };
    let sources = Sources::new(product.stack.gateway.admin_addr, region.worker.admin_addr)?;

    let measured = load_rt.block_on(measure(&settings, &scenarios, &sources, &fixture));
    drop(load_rt);
    baseline_rt.shutdown_timeout(Duration::from_secs(2));
    let mut results = measured?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    report::print(
        &mut out,
        &settings,
        nproc,
        &mut results.baseline,
        &mut results.product,
        results.breakdown,
    )?;
    drop(out);

    eprintln!("bench: stopping the stack…");
    drop(product);
    Ok(())
}

/// One request that must answer 200 with the seeded patient.
async fn check(
    client: &LoadClient,
    target: &Target,
    fixture: &Fixture,
    name: &str,
) -> anyhow::Result<()> {
    let (status, body) = load::fetch(client, target)
        .await
        .with_context(|| format!("{name}: first request"))?;
    if status != StatusCode::OK {
        bail!(
            "{name}: first request answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{name}: answer is not JSON"))?;
    let id_ok = json["id"].as_str() == Some(fixture.patient_id.to_string().as_str());
    let name_ok = json["first_name"].as_str() == Some(fixture.first_name.as_str());
    if !id_ok || !name_ok {
        bail!("{name}: answer is not the seeded patient: {json}");
    }
    Ok(())
}

async fn measure(
    settings: &Settings,
    scenarios: &Scenarios,
    sources: &Sources,
    fixture: &Fixture,
) -> anyhow::Result<Results> {
    let client = load::client(settings.concurrency);
    check(&client, &scenarios.baseline, fixture, "baseline").await?;
    check(&client, &scenarios.product, fixture, "product").await?;

    let mut baseline = Row::new(BASELINE);
    let mut product = Row::new(PRODUCT);
    let mut breakdown = Some(Snapshot::default());
    for round in 1..=settings.rounds {
        for is_product in [false, true] {
            let (target, row) = if is_product {
                (&scenarios.product, &mut product)
            } else {
                (&scenarios.baseline, &mut baseline)
            };
            if !settings.warmup.is_zero() {
                load::run(&client, target, settings.concurrency, settings.warmup).await;
            }
            let before = if is_product {
                sources.snapshot(&client).await
            } else {
                None
            };
            let cpu_before = cpu::snapshot();
            let stats = load::run(&client, target, settings.concurrency, settings.duration).await;
            let used = cpu::snapshot().minus(&cpu_before);
            if is_product {
                let after = sources.snapshot(&client).await;
                breakdown = match (breakdown, before, after) {
                    (Some(acc), Some(b), Some(a)) => Some(acc.plus(a.minus(b))),
                    _ => None,
                };
            }
            eprintln!(
                "bench: round {round}/{}: {:<38} {:>9.1} req/s, {} errors",
                settings.rounds,
                row.name,
                stats.rps(),
                stats.errors
            );
            row.add(stats, &used);
        }
    }
    Ok(Results {
        baseline,
        product,
        breakdown,
    })
}
