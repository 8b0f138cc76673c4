//! One bench run end to end: the stack and its fixtures, the baseline server on
//! its own runtime, alternating measured rounds (baseline, then each chosen
//! scenario, each after a warm-up), the report, and the teardown.

use crate::baseline;
use crate::breakdown::{Snapshot, Sources};
use crate::clinics;
use crate::cpu;
use crate::load::{self, LoadClient, Target, Workload};
use crate::mixed::Mixed;
use crate::report::{self, Results, Row};
use crate::settings::{Scenario, Settings};
use crate::setup::{self, Fixture};
use anyhow::{bail, Context};
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

const BASELINE: &str = "bare hyper+tokio-postgres (baseline)";
const READ: &str = "gateway -> worker GET patient";

/// What a measured run is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Baseline,
    Read,
    Mixed,
}

/// One measured workload and its results so far.
struct Measured {
    kind: Kind,
    workload: Arc<dyn Workload>,
    row: Row,
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
    let gateway = product.stack.gateway_url();
    eprintln!(
        "bench: stack up at {gateway} (data in {})",
        product.dir.path().display()
    );

    let load_rt = runtime("bench-load", nproc)?;
    let fixture = load_rt
        .block_on(setup::seed(&gateway))
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
    let baseline_target = Target::new(&server.url(fixture.patient_id), &[])?;
    let read_target = Target::new(
        &format!("{gateway}/api/v1/patients/{}", fixture.patient_id),
        &[("authorization", &format!("Bearer {}", fixture.token))],
    )?;
    let sources = Sources::new(product.stack.gateway.admin_addr, region.worker.admin_addr)?;

    let measured = load_rt.block_on(async {
        let client = load::client(settings.concurrency);
        check(&client, &baseline_target, &fixture, "baseline").await?;
        let mut runs = vec![Measured {
            kind: Kind::Baseline,
            workload: Arc::new(baseline_target),
            row: Row::new(BASELINE, "baseline"),
        }];
        for scenario in &settings.scenarios {
            runs.push(match scenario {
                Scenario::Read => {
                    check(&client, &read_target, &fixture, "read").await?;
                    Measured {
                        kind: Kind::Read,
                        workload: Arc::new(read_target.clone()),
                        row: Row::new(READ, "read"),
                    }
                }
                Scenario::Mixed => mixed(&settings, &client, &gateway).await?,
            });
        }
        measure(&settings, &client, runs, &sources).await
    });
    drop(load_rt);
    baseline_rt.shutdown_timeout(Duration::from_secs(2));
    let mut results = measured?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    report::print(&mut out, &settings, nproc, &mut results)?;
    drop(out);

    eprintln!("bench: stopping the stack…");
    drop(product);
    Ok(())
}

/// Seeds the mixed scenario's clinics and checks every operation once.
async fn mixed(
    settings: &Settings,
    client: &LoadClient,
    gateway: &str,
) -> anyhow::Result<Measured> {
    eprintln!(
        "bench: seeding {} clinic(s) with {} patients each for the mixed scenario…",
        settings.clinics, settings.patients
    );
    let seeded = clinics::seed(gateway, settings.clinics, settings.patients)
        .await
        .context("seeding the mixed scenario's clinics")?;
    let workload = Mixed::new(gateway, seeded)?;
    workload.check(client).await?;
    let mut row = Row::new(
        format!("gateway -> worker mixed ({} clinics)", settings.clinics),
        "mixed",
    );
    row.weights = Mixed::weights().collect();
    Ok(Measured {
        kind: Kind::Mixed,
        workload: Arc::new(workload),
        row,
    })
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

/// Runs every round: each workload in turn, warm-up then measured run.
async fn measure(
    settings: &Settings,
    client: &LoadClient,
    mut runs: Vec<Measured>,
    sources: &Sources,
) -> anyhow::Result<Results> {
    let mut breakdown = Some(Snapshot::default());
    for round in 1..=settings.rounds {
        for run in &mut runs {
            if !settings.warmup.is_zero() {
                load::run(client, &run.workload, settings.concurrency, settings.warmup).await;
            }
            // The services' histograms describe the single read only.
            let scrape = run.kind == Kind::Read;
            let before = if scrape {
                sources.snapshot(client).await
            } else {
                None
            };
            let cpu_before = cpu::snapshot();
            let stats = load::run(
                client,
                &run.workload,
                settings.concurrency,
                settings.duration,
            )
            .await;
            let used = cpu::snapshot().minus(&cpu_before);
            if scrape {
                let after = sources.snapshot(client).await;
                breakdown = match (breakdown, before, after) {
                    (Some(acc), Some(b), Some(a)) => Some(acc.plus(a.minus(b))),
                    _ => None,
                };
            }
            eprintln!(
                "bench: round {round}/{}: {:<38} {:>9.1} req/s, {} errors",
                settings.rounds,
                run.row.name,
                stats.rps(),
                stats.errors
            );
            run.row.add(stats, &used);
        }
    }
    let mut results = Results {
        baseline: Row::new(BASELINE, "baseline"),
        read: None,
        mixed: None,
        breakdown: None,
    };
    for run in runs {
        match run.kind {
            Kind::Baseline => results.baseline = run.row,
            Kind::Read => results.read = Some(run.row),
            Kind::Mixed => results.mixed = Some(run.row),
        }
    }
    if results.read.is_some() {
        results.breakdown = breakdown;
    }
    Ok(results)
}
