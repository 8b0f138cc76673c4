//! One bench run end to end. The stack and its fixtures; the in-process servers
//! (the bare baseline, the bare proxy) on runtimes of their own; then the phases,
//! each only when a chosen figure needs it:
//!
//! 1. throughput runs in alternating rounds (baseline, read, mixed, straight to
//!    the worker, through the bare proxy), each after a warm-up;
//! 2. provisioning (registration to first patient against bare clones);
//! 3. placement (central statements during warm requests);
//! 4. the connection budget: many clinics set up (worker memory per pool read on
//!    the way), their runs, then the machine watched idle for a while (what the
//!    many open clinics cost in the background);
//! 5. gateway memory with its placement cache filled (last: it evicts the rest).
//!
//! Every figure becomes one or more lines of the summary table, each against a
//! reference measured in the same run.

use crate::baseline;
use crate::breakdown::{self, Sources};
use crate::budget;
use crate::clinics::{self, Clinic};
use crate::cpu;
use crate::load::{self, Limit, LoadClient, Pick, Signer, Target, Targets, Workload};
use crate::memory;
use crate::mixed::Mixed;
use crate::placement;
use crate::provisioning;
use crate::proxy;
use crate::report::{self, Line, Results, Row};
use crate::settings::{Figure, Settings};
use crate::setup::{self, Fixture};
use anyhow::{bail, Context};
use common::metric_names as m;
use devstack::Stack;
use http::StatusCode;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The goal of the read: a ratio of the bare baseline.
const READ_GOAL: f64 = 0.5;
/// The goal of reads spread over many clinics: a ratio of the single-clinic read.
const BUDGET_GOAL: f64 = 0.7;

/// The throughput runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunId {
    Baseline,
    Read,
    Mixed,
    Direct,
    Proxy,
    Budget,
}

/// One measured workload and its results so far.
struct Measured {
    id: RunId,
    workload: Arc<dyn Workload>,
    row: Row,
}

impl Measured {
    fn new(
        id: RunId,
        workload: impl Workload,
        name: impl Into<String>,
        label: &'static str,
    ) -> Self {
        Self {
            id,
            workload: Arc::new(workload),
            row: Row::new(name, label),
        }
    }
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// What the phases share.
struct Bench<'a> {
    settings: &'a Settings,
    stack: &'a Stack,
    fixture: &'a Fixture,
    client: LoadClient,
    sources: Sources,
    baseline: Target,
    read: Target,
    /// Straight to the worker; the load generator signs each request.
    direct: Target,
    signer: Arc<Signer>,
    /// Through the bare proxy.
    proxied: Option<Target>,
    /// The gateway's resident memory right after it started.
    gateway_rss_at_start: Option<u64>,
}

/// Runs the whole bench and prints the report. Must be called outside any runtime.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!(
        "bench: starting the stack (regions: {}; figures: {})…",
        settings.regions.join(", "),
        settings
            .figures
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let started = Instant::now();
    let product = setup::start(&settings)?;
    let stack = &product.stack;
    let gateway = stack.gateway_url();
    eprintln!(
        "bench: stack up at {gateway} in {:.1} s (data in {})",
        started.elapsed().as_secs_f64(),
        product.dir.path().display()
    );
    let gateway_rss_at_start = cpu::component_pid("gateway", None).and_then(cpu::rss_bytes);
    let tls = load::tls_config(stack)?;
    let signer = Arc::new(Signer::new(
        stack.secrets.internal_secret.as_bytes(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "bench",
    )?);

    let load_rt = runtime("bench-load", nproc)?;
    let fixture = load_rt
        .block_on(async {
            setup::statement_stats(stack).await?;
            setup::seed(&gateway).await
        })
        .context("seeding the clinic")?;
    let region = stack.region(&fixture.region).with_context(|| {
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
            region.server.tls(),
            settings.pg_conns,
        ))
        .context("starting the baseline server")?;
    let proxy_rt = runtime("bench-proxy", nproc)?;
    let bare_proxy = if settings.has(Figure::Gateway) {
        Some(
            proxy_rt
                .block_on(proxy::start(
                    &region.worker.url(),
                    tls.clone(),
                    signer.clone(),
                ))
                .context("starting the bare proxy")?,
        )
    } else {
        None
    };
    let read_path = format!("/api/v1/patients/{}", fixture.patient_id);
    let bench = Bench {
        settings: &settings,
        stack,
        fixture: &fixture,
        client: load::client(settings.concurrency, tls),
        sources: Sources::new(stack.gateway.admin_addr, region.worker.admin_addr)?,
        baseline: Target::new(&server.url(fixture.patient_id), &[])?,
        read: Target::bearer(&format!("{gateway}{read_path}"), &fixture.token)?,
        direct: Target::bearer(
            &format!("{}{read_path}", region.worker.url()),
            &fixture.token,
        )?,
        signer,
        proxied: bare_proxy
            .map(|p| Target::bearer(&format!("{}{read_path}", p.url()), &fixture.token))
            .transpose()?,
        gateway_rss_at_start,
    };

    let measured = load_rt.block_on(bench.phases());
    drop(bench);
    drop(load_rt);
    baseline_rt.shutdown_timeout(Duration::from_secs(2));
    proxy_rt.shutdown_timeout(Duration::from_secs(2));
    let mut results = measured?;
    results.notes.push(format!(
        "run: {:.0} s from starting the stack to this report (the stack's teardown follows)",
        started.elapsed().as_secs_f64()
    ));

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    report::print(&mut out, &settings, nproc, &mut results)?;
    drop(out);

    eprintln!("bench: stopping the stack…");
    drop(product);
    Ok(())
}

impl Bench<'_> {
    async fn phases(&self) -> anyhow::Result<Results> {
        let s = self.settings;
        let needs_read = s.has(Figure::Read) || s.has(Figure::Budget) || s.has(Figure::Gateway);
        let mut results = Results::default();
        let mut lines: Vec<Line> = Vec::new();

        // 1. Throughput runs in alternating rounds.
        let baseline = Targets::one(self.baseline.clone());
        self.check(&baseline, "baseline").await?;
        let mut runs = vec![Measured::new(
            RunId::Baseline,
            baseline,
            "bare hyper+tokio-postgres (baseline)",
            "baseline",
        )];
        if needs_read {
            let read = Targets::one(self.read.clone());
            self.check(&read, "read").await?;
            runs.push(Measured::new(
                RunId::Read,
                read,
                "gateway -> worker GET patient",
                "read",
            ));
        }
        let mut mixed_clinics = Vec::new();
        if s.has(Figure::Mixed) {
            let (run, clinics) = self.mixed().await?;
            runs.push(run);
            mixed_clinics = clinics;
        }
        if s.has(Figure::Gateway) {
            let direct = Targets::one(self.direct.clone()).signed(self.signer.clone());
            self.check(&direct, "worker direct").await?;
            runs.push(Measured::new(
                RunId::Direct,
                direct,
                "worker direct (signed by the bench)",
                "direct",
            ));
            if let Some(proxied) = &self.proxied {
                let proxied = Targets::one(proxied.clone());
                self.check(&proxied, "bare proxy").await?;
                runs.push(Measured::new(
                    RunId::Proxy,
                    proxied,
                    "bare hyper proxy -> worker",
                    "bare proxy",
                ));
            }
        }
        let regional = self
            .stack
            .region(&self.fixture.region)
            .context("the fixture's region")?
            .server
            .connect("postgres")
            .await
            .context("connecting to the regional server")?;
        self.measure(&mut runs, &regional).await?;

        // 2. Provisioning; its clinics join the warm set of the placement figure.
        let mut warm = vec![self.read.clone()];
        for clinic in &mixed_clinics {
            warm.push(self.first_patient(clinic)?);
        }
        if s.has(Figure::Provisioning) {
            let outcome = provisioning::measure(
                self.stack,
                &self.client,
                &self.fixture.region,
                s.provision_clinics,
            )
            .await?;
            let gateway = self.stack.gateway_url();
            for p in &outcome.clinics {
                warm.push(Target::bearer(
                    &format!("{gateway}/api/v1/patients/{}", p.patient),
                    &p.account.token,
                )?);
            }
            lines.extend(outcome.lines);
            results.notes.extend(outcome.notes);
        }

        // 3. Placement.
        if s.has(Figure::Placement) {
            let outcome =
                placement::measure(s, self.stack, &self.client, Targets::in_turn(warm)).await?;
            lines.extend(outcome.lines);
            results.notes.extend(outcome.notes);
        }

        // 4. Many clinics on one server.
        if s.has(Figure::Budget) || s.has(Figure::Memory) {
            let many = budget::setup(
                self.stack,
                &self.client,
                &self.fixture.region,
                s.budget_clinics,
                s.setup_concurrency,
            )
            .await?;
            results.notes.push(format!(
                "budget: setup (not timed in any figure): {} clinics registered in {:.1} s, first patients in {:.1} s, {} attempts retried",
                many.targets.len(),
                many.registered_in.as_secs_f64(),
                many.patients_in.as_secs_f64(),
                many.retried
            ));
            if s.has(Figure::Memory) {
                match &many.memory {
                    Some(m) => lines.push(memory::worker(m)),
                    None => results
                        .notes
                        .push("memory: the worker's VmRSS could not be read".into()),
                }
            }
            if s.has(Figure::Budget) {
                let clinics = many.targets.len();
                let mut budget_runs = vec![Measured::new(
                    RunId::Budget,
                    Targets::many(many.targets, Pick::Random),
                    format!("gateway -> worker GET patient, {clinics} clinics"),
                    "budget",
                )];
                self.measure(&mut budget_runs, &regional).await?;
                runs.extend(budget_runs);
                results.notes.push(self.idle(&regional).await);
            }
        }

        // 5. Gateway memory.
        if s.has(Figure::Memory) {
            let outcome = memory::gateway(
                s,
                self.stack,
                &self.client,
                &self.fixture.region,
                self.gateway_rss_at_start,
            )
            .await?;
            lines.extend(outcome.lines);
            results.notes.extend(outcome.notes);
        }

        lines.extend(self.throughput_lines(&mut runs));
        lines.sort_by_key(|l| Figure::ALL.iter().position(|f| *f == l.figure));
        results.lines = lines;
        results.rows = runs.into_iter().map(|r| r.row).collect();
        Ok(results)
    }

    fn first_patient(&self, clinic: &Clinic) -> anyhow::Result<Target> {
        let id = clinic
            .patients
            .first()
            .context("a mixed clinic without patients")?;
        Target::bearer(
            &format!("{}/api/v1/patients/{id}", self.stack.gateway_url()),
            &clinic.account.token,
        )
    }

    /// Seeds the mixed scenario's clinics and checks every operation once.
    async fn mixed(&self) -> anyhow::Result<(Measured, Vec<Clinic>)> {
        let s = self.settings;
        eprintln!(
            "bench: seeding {} clinic(s) with {} patients each for the mixed scenario…",
            s.clinics, s.patients
        );
        let gateway = self.stack.gateway_url();
        let seeded = clinics::seed(&gateway, s.clinics, s.patients)
            .await
            .context("seeding the mixed scenario's clinics")?;
        let workload = Mixed::new(&gateway, seeded.clone())?;
        workload.check(&self.client).await?;
        let mut run = Measured::new(
            RunId::Mixed,
            workload,
            format!("gateway -> worker mixed ({} clinics)", s.clinics),
            "mixed",
        );
        run.row.weights = Mixed::weights().collect();
        Ok((run, seeded))
    }

    /// One request that must answer 200 with the seeded patient.
    async fn check(&self, targets: &Targets, name: &str) -> anyhow::Result<()> {
        let (status, body) = load::send(&self.client, targets.request(0)?)
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
        let id_ok = json["id"].as_str() == Some(self.fixture.patient_id.to_string().as_str());
        let name_ok = json["first_name"].as_str() == Some(self.fixture.first_name.as_str());
        if !id_ok || !name_ok {
            bail!("{name}: answer is not the seeded patient: {json}");
        }
        Ok(())
    }

    /// Sessions the regional server has counted so far (its statistics are
    /// flushed by each backend about once a second, so a count can lag a little).
    async fn sessions(regional: &tokio_postgres::Client) -> Option<i64> {
        regional
            .query_one("SELECT sum(sessions)::bigint FROM pg_stat_database", &[])
            .await
            .ok()
            .and_then(|row| row.try_get(0).ok())
    }

    /// Runs every round: each workload in turn, warm-up then measured run, with
    /// CPU, the services' metrics and the regional server's new sessions read
    /// around each measured run.
    async fn measure(
        &self,
        runs: &mut [Measured],
        regional: &tokio_postgres::Client,
    ) -> anyhow::Result<()> {
        let s = self.settings;
        for round in 1..=s.rounds {
            for run in runs.iter_mut() {
                if !s.warmup.is_zero() {
                    load::run(
                        &self.client,
                        &run.workload,
                        s.concurrency,
                        Limit::For(s.warmup),
                    )
                    .await;
                }
                // The baseline does not go through the services.
                let observe = run.id != RunId::Baseline;
                let before = if observe {
                    (
                        self.sources.snapshot(&self.client).await,
                        Self::sessions(regional).await,
                    )
                } else {
                    (None, None)
                };
                let cpu_before = cpu::snapshot();
                let stats = load::run(
                    &self.client,
                    &run.workload,
                    s.concurrency,
                    Limit::For(s.duration),
                )
                .await;
                let used = cpu::snapshot().minus(&cpu_before);
                eprintln!(
                    "bench: round {round}/{}: {:<46} {:>9.1} req/s, {} errors",
                    s.rounds,
                    run.row.name,
                    stats.rps(),
                    stats.errors
                );
                run.row.add(stats, &used);
                if observe {
                    let service = self.sources.snapshot(&self.client).await;
                    let sessions = Self::sessions(regional).await;
                    run.row.observe(
                        service.zip(before.0).map(|(a, b)| a.minus(b)),
                        sessions.zip(before.1).map(|(a, b)| a - b),
                    );
                }
            }
        }
        Ok(())
    }

    /// What the machine does with no load after the budget runs, for one
    /// measured period.
    async fn idle(&self, regional: &tokio_postgres::Client) -> String {
        let sources = (
            self.sources.snapshot(&self.client).await,
            Self::sessions(regional).await,
        );
        let before = cpu::snapshot();
        let started = Instant::now();
        tokio::time::sleep(self.settings.idle).await;
        let used = cpu::snapshot().minus(&before);
        let took = started.elapsed();
        let evictions = self
            .sources
            .snapshot(&self.client)
            .await
            .zip(sources.0)
            .map(|(a, b)| format!("{:.0}", a.minus(b).evictions));
        let sessions = Self::sessions(regional)
            .await
            .zip(sources.1)
            .map(|(a, b)| (a - b).to_string());
        let open = match breakdown::metrics_text(&self.client, self.sources.worker_admin).await {
            Ok(text) => format!("{:.0}", breakdown::value(&text, m::POOLS_OPEN, &[])),
            Err(_) => "?".into(),
        };
        format!(
            "budget: no load for {:.1} s right after its runs: worker pool evictions {}, new regional sessions {}, clinic pools still open at the end {open}; cores busy: {}",
            took.as_secs_f64(),
            evictions.unwrap_or_else(|| "?".into()),
            sessions.unwrap_or_else(|| "?".into()),
            report::busy(&used, took)
        )
    }

    /// The summary lines of the throughput runs.
    fn throughput_lines(&self, runs: &mut [Measured]) -> Vec<Line> {
        let find = |runs: &mut [Measured], id: RunId| -> Option<(f64, f64, f64, u64, String)> {
            let run = runs.iter_mut().find(|r| r.id == id)?;
            let stats = &mut run.row.total;
            Some((
                stats.rps(),
                stats.percentile_ms(50.0).unwrap_or(0.0),
                stats.percentile_ms(99.0).unwrap_or(0.0),
                stats.errors,
                run.row.name.clone(),
            ))
        };
        let rps = |v: f64| format!("{} req/s", report::num(v, 0));
        let mut lines = Vec::new();
        let baseline = find(runs, RunId::Baseline);
        let read = find(runs, RunId::Read);
        let reference = |r: &Option<(f64, f64, f64, u64, String)>, label: &str| {
            r.as_ref()
                .map_or_else(|| "-".into(), |(v, ..)| format!("{label} {}", rps(*v)))
        };
        let base_ref = reference(&baseline, "bare hyper+tokio-postgres");
        let base = baseline.as_ref().map_or(0.0, |b| b.0);
        if self.settings.has(Figure::Read) {
            if let Some((v, _, _, errors, name)) = &read {
                lines.push(
                    Line::new(
                        Figure::Read,
                        name.clone(),
                        format!("{}, {errors} errors", rps(*v)),
                        base_ref.clone(),
                        report::ratio(*v, base),
                    )
                    .at_least(READ_GOAL, None),
                );
            }
        }
        if let Some((v, _, _, errors, name)) = find(runs, RunId::Mixed) {
            lines.push(Line::new(
                Figure::Mixed,
                name,
                format!("{}, {errors} errors", rps(v)),
                base_ref.clone(),
                report::ratio(v, base),
            ));
        }
        if let (Some((v, p50, p99, errors, _)), Some(single)) = (find(runs, RunId::Budget), &read) {
            lines.push(
                Line::new(
                    Figure::Budget,
                    format!(
                        "{} clinics, max_connections {}, budget {}",
                        self.settings.budget_clinics,
                        self.settings.max_connections,
                        self.settings.pool_budget
                    ),
                    format!("{}, {errors} errors, p50/p99 {p50:.1}/{p99:.1} ms", rps(v)),
                    format!(
                        "single-clinic read {} (p50 {:.1} ms)",
                        rps(single.0),
                        single.1
                    ),
                    report::ratio(v, single.0),
                )
                .at_least(BUDGET_GOAL, Some(("0 errors", errors == 0))),
            );
        }
        if let (Some(direct), Some(gw)) = (find(runs, RunId::Direct), &read) {
            let direct_ref = format!("worker direct {}", rps(direct.0));
            lines.push(Line::new(
                Figure::Gateway,
                "read through the gateway vs straight to the worker",
                rps(gw.0),
                direct_ref.clone(),
                report::ratio(gw.0, direct.0),
            ));
            let proxy = find(runs, RunId::Proxy);
            if let Some(proxy) = &proxy {
                lines.push(Line::new(
                    Figure::Gateway,
                    "read through the bare hyper proxy vs straight",
                    rps(proxy.0),
                    direct_ref,
                    report::ratio(proxy.0, direct.0),
                ));
                lines.push(Line::new(
                    Figure::Gateway,
                    "read through the gateway vs the bare proxy",
                    rps(gw.0),
                    format!("bare proxy {}", rps(proxy.0)),
                    report::ratio(gw.0, proxy.0),
                ));
            }
            for (label, pick) in [("p50", 1usize), ("p99", 2usize)] {
                let at = |r: &(f64, f64, f64, u64, String)| if pick == 1 { r.1 } else { r.2 };
                let added_by_proxy = proxy.as_ref().map_or_else(String::new, |p| {
                    format!(", bare proxy {:.2} ms ({:+.2})", at(p), at(p) - at(&direct))
                });
                lines.push(Line::new(
                    Figure::Gateway,
                    format!("{label} latency added by the gateway"),
                    format!(
                        "{:+.2} ms ({:.2} ms){added_by_proxy}",
                        at(gw) - at(&direct),
                        at(gw)
                    ),
                    format!("worker direct {:.2} ms", at(&direct)),
                    report::ratio(at(gw), at(&direct)),
                ));
            }
        }
        lines
    }
}
