//! One bench run end to end. The stack and its fixtures; the in-process servers
//! (the bare baseline, the bare proxy, later the bare connect-per-request server)
//! on runtimes of their own; then the phases, each only when a chosen figure
//! needs it:
//!
//! 1. throughput runs in alternating rounds (baseline, read, read with logins in
//!    the background, mixed, straight to the worker, through the bare proxy),
//!    each after a warm-up;
//! 2. search in a clinic of 100 000 patients;
//! 3. thousands of client connections (wrk);
//! 4. the audit outbox during a minute of full read load;
//! 5. provisioning (registration to first patient against bare clones + a hash);
//! 6. placement (central statements during warm requests);
//! 7. many clinics set up (worker memory per pool read on the way), their runs
//!    (uniform, Zipf-skewed), then the machine watched idle for a while;
//! 8. the worker stopped (its connections closed): the bare connect-per-request
//!    reference over the same clinics, on the same server;
//! 9. the regional server and the worker restarted, sized by the deployment
//!    rule, and the many clinics read again (or the worker restarted as it was);
//! 10. gateway memory with its placement cache filled (last: it evicts the rest).
//!
//! Every figure becomes one or more lines of the summary table, each against a
//! reference measured in the same run.

use crate::backlog;
use crate::baseline;
use crate::breakdown::{self, Sources};
use crate::budget::{self, ManyClinics};
use crate::bulk;
use crate::clinics::{self, Clinic};
use crate::connect;
use crate::cpu;
use crate::load::{self, Limit, LoadClient, Pick, Signer, Target, Targets, Workload, Zipf};
use crate::logins::{self, LoginStats, Logins};
use crate::memory;
use crate::mixed::Mixed;
use crate::placement;
use crate::provisioning;
use crate::proxy;
use crate::report::{self, Line, Results, Row};
use crate::search;
use crate::settings::{Figure, Settings};
use crate::setup::{self, Fixture};
use crate::slots;
use crate::webhooks;
use crate::wrk;
use anyhow::{bail, Context};
use common::metric_names as m;
use devstack::{Http, Stack};
use http::StatusCode;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The read: a ratio of the bare baseline.
const READ_GOAL: f64 = 0.30;
/// The read straight to the worker: a ratio of the bare baseline.
const DIRECT_GOAL: f64 = 0.35;
/// The read's p99 latency: at most this many times the baseline's.
const LATENCY_GOAL: f64 = 3.0;
/// CPU per read, in microseconds: worker, regional and central PostgreSQL.
const CPU_GOALS_US: [f64; 3] = [80.0, 80.0, 20.0];
/// The gateway's CPU per read: at most this many times the bare proxy's.
const GATEWAY_CPU_GOAL: f64 = 1.2;
/// The read's p99 with logins in the background: at most this many times without.
const LOGINS_GOAL: f64 = 1.1;
/// The mixed workload: a ratio of the bare baseline.
const MIXED_GOAL: f64 = 0.20;
/// Reads spread over many clinics: a ratio of the single-clinic read.
const BUDGET_GOAL: f64 = 0.7;
/// Reads spread over many clinics: a ratio of the bare connect-per-request client.
const BARE_CONNECT_GOAL: f64 = 0.8;
/// Zipf-skewed reads over many clinics: a ratio of the single-clinic read.
const ZIPF_GOAL: f64 = 0.35;
/// Reads over many clinics on a sized server and worker: a ratio of the
/// single-clinic read.
const SIZED_GOAL: f64 = 0.7;
/// Connections the sizing rule keeps for everything but the workers' pools.
const RESERVED_CONNECTIONS: usize = 20;

/// The throughput runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunId {
    Baseline,
    Read,
    ReadLogins,
    Mixed,
    Direct,
    Proxy,
    Budget,
    Zipf,
    BareConnect,
    Sized,
}

impl RunId {
    /// Whether the run goes through the services (their metrics are read around it).
    fn observed(self) -> bool {
        !matches!(self, RunId::Baseline | RunId::BareConnect)
    }
}

/// One measured workload and its results so far.
struct Measured {
    id: RunId,
    workload: Arc<dyn Workload>,
    row: Row,
    /// Logins in the background of every measured run (and its warm-up).
    logins: Option<Arc<Logins>>,
    login_stats: LoginStats,
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
            logins: None,
            login_stats: LoginStats::default(),
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

/// Raises this process's soft limit on open files to the hard limit (and the
/// hard limit too when it is below what the connections figure needs and the
/// bench may), so that wrk and the gateway, which inherit it, can hold thousands
/// of connections. A description for the report.
fn raise_open_files(needed: u64) -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return "open files: the limit could not be read".into();
    }
    let before = lim.rlim_cur;
    let wanted = libc::rlimit {
        rlim_cur: lim.rlim_max.max(needed),
        rlim_max: lim.rlim_max.max(needed),
    };
    // SAFETY: setrlimit reads the struct it is given.
    let raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 || {
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 }
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    format!(
        "open files: soft limit {} (was {before}{}), inherited by the services and wrk",
        lim.rlim_cur,
        if raised { "" } else { "; could not be raised" }
    )
}

/// What every stage shares, made once.
struct Parts {
    fixture: Fixture,
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
    /// The runtime of the bench's own servers (the baseline's).
    servers: tokio::runtime::Handle,
}

/// What the stages hand on to each other.
#[derive(Default)]
struct State {
    results: Results,
    lines: Vec<Line>,
    runs: Vec<Measured>,
    many: Option<ManyClinics>,
}

/// One stage's view: the settings, the stack as it is now, the shared parts.
struct Bench<'a> {
    settings: &'a Settings,
    stack: &'a Stack,
    p: &'a Parts,
}

/// Runs the whole bench and prints the report. Must be called outside any runtime.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let open_files = raise_open_files(settings.wrk_connections as u64 * 3 + 4096);
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
    let mut product = setup::start(&settings)?;
    let gateway = product.stack.gateway_url();
    eprintln!(
        "bench: stack up at {gateway} in {:.1} s (data in {})",
        started.elapsed().as_secs_f64(),
        product.dir.path().display()
    );
    let gateway_rss_at_start = cpu::component_pid("gateway", None).and_then(cpu::rss_bytes);
    let tls = load::tls_config(&product.stack)?;
    let signer = Arc::new(Signer::new(
        product.stack.secrets.internal_secret.as_bytes(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "bench",
    )?);

    let load_rt = runtime("bench-load", nproc)?;
    let fixture = load_rt
        .block_on(async {
            setup::statement_stats(&product.stack).await?;
            setup::seed(&gateway).await
        })
        .context("seeding the clinic")?;
    eprintln!(
        "bench: clinic {} in {}, patient {}",
        fixture.clinic_id, fixture.region, fixture.patient_id
    );

    let baseline_rt = runtime("bench-baseline", nproc)?;
    let proxy_rt = runtime("bench-proxy", nproc)?;
    let parts = {
        let stack = &product.stack;
        let region = stack.region(&fixture.region).with_context(|| {
            format!(
                "the clinic's region `{}` is not in the stack",
                fixture.region
            )
        })?;
        let server = baseline_rt
            .block_on(baseline::start(
                region.server.config(&fixture.database()),
                region.server.tls(),
                settings.pg_conns,
            ))
            .context("starting the baseline server")?;
        let bare_proxy = if settings.has(Figure::Gateway) || settings.has(Figure::Cpu) {
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
        Parts {
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
            servers: baseline_rt.handle().clone(),
            fixture,
        }
    };

    let measured = stages(&settings, &mut product.stack, &parts, &load_rt);
    drop(parts);
    drop(load_rt);
    baseline_rt.shutdown_timeout(Duration::from_secs(2));
    proxy_rt.shutdown_timeout(Duration::from_secs(2));
    let mut results = measured?;
    results.notes.push(open_files);
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

/// The stages, with the stack restarted in part between them when a figure asks.
fn stages(
    settings: &Settings,
    stack: &mut Stack,
    parts: &Parts,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Results> {
    let mut state = State::default();
    rt.block_on(Bench::new(settings, stack, parts).early(&mut state))?;

    let bare = settings.has(Figure::Budget) && state.many.is_some();
    let sized = settings.has(Figure::Sized) && state.many.is_some();
    if bare || sized {
        let name = parts.fixture.region.clone();
        let region = stack.region_mut(&name).context("the fixture's region")?;
        eprintln!("bench: stopping the worker…");
        region.worker.stop(Duration::from_secs(30));
        if bare {
            rt.block_on(Bench::new(settings, stack, parts).bare_connect(&mut state))?;
        }
        let region = stack.region_mut(&name).context("the fixture's region")?;
        if sized {
            let (budget, max_connections) = sizing(settings);
            eprintln!(
                "bench: restarting the regional server with max_connections {max_connections} and the worker with CLINIC_POOL_BUDGET {budget}…"
            );
            region.server.set_max_connections(
                u32::try_from(max_connections).context("max_connections out of range")?,
            );
            region
                .server
                .restart()
                .context("restarting the regional server")?;
            region
                .worker
                .set_env("CLINIC_POOL_BUDGET", &budget.to_string());
        } else {
            eprintln!("bench: starting the worker again…");
        }
        region.worker.restart().context("restarting the worker")?;
        if sized {
            rt.block_on(Bench::new(settings, stack, parts).sized(&mut state))?;
        }
    }

    rt.block_on(Bench::new(settings, stack, parts).late(&mut state))?;
    Ok(state.results)
}

/// The sizing rule for the budget clinics at the bench's concurrency: the
/// worker's `CLINIC_POOL_BUDGET` and the server's `max_connections`.
fn sizing(settings: &Settings) -> (usize, usize) {
    let budget = settings.budget_clinics + settings.concurrency;
    (budget, budget + RESERVED_CONNECTIONS)
}

/// The sizing rule, as a deployment guide would state it.
const SIZING_RULE: &str = "CLINIC_POOL_BUDGET >= active clinics + concurrency; max_connections >= sum of the workers' budgets + 20 reserved";

/// Summary numbers of one run: throughput, p50, p99, errors and its name.
type Summary = (f64, f64, f64, u64, String);

impl<'a> Bench<'a> {
    fn new(settings: &'a Settings, stack: &'a Stack, p: &'a Parts) -> Self {
        Self { settings, stack, p }
    }

    async fn regional(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.stack
            .region(&self.p.fixture.region)
            .context("the fixture's region")?
            .server
            .connect("postgres")
            .await
            .context("connecting to the regional server")
    }

    /// Everything up to the many clinics' runs.
    async fn early(&self, state: &mut State) -> anyhow::Result<()> {
        let s = self.settings;
        let needs_read = [
            Figure::Read,
            Figure::Latency,
            Figure::Cpu,
            Figure::Logins,
            Figure::Budget,
            Figure::Zipf,
            Figure::Sized,
            Figure::Gateway,
        ]
        .into_iter()
        .any(|f| s.has(f));

        // 1. Throughput runs in alternating rounds.
        let baseline = Targets::one(self.p.baseline.clone());
        self.check(&baseline, "baseline").await?;
        let mut runs = vec![Measured::new(
            RunId::Baseline,
            baseline,
            "bare hyper+tokio-postgres (baseline)",
            "baseline",
        )];
        if needs_read {
            let read = Targets::one(self.p.read.clone());
            self.check(&read, "read").await?;
            runs.push(Measured::new(
                RunId::Read,
                read,
                "gateway -> worker GET patient",
                "read",
            ));
        }
        if s.has(Figure::Logins) {
            runs.push(self.with_logins().await?);
        }
        let mut mixed_clinics = Vec::new();
        if s.has(Figure::Mixed) {
            let (run, clinics) = self.mixed().await?;
            runs.push(run);
            mixed_clinics = clinics;
        }
        if s.has(Figure::Gateway) || s.has(Figure::Direct) {
            let direct = Targets::one(self.p.direct.clone()).signed(self.p.signer.clone());
            self.check(&direct, "worker direct").await?;
            runs.push(Measured::new(
                RunId::Direct,
                direct,
                "worker direct (signed by the bench)",
                "direct",
            ));
        }
        if let Some(proxied) = &self.p.proxied {
            let proxied = Targets::one(proxied.clone());
            self.check(&proxied, "bare proxy").await?;
            runs.push(Measured::new(
                RunId::Proxy,
                proxied,
                "bare hyper proxy -> worker",
                "bare proxy",
            ));
        }
        let regional = self.regional().await?;
        self.measure(&mut runs, &regional).await?;
        state.runs.extend(runs);

        // 2. Search in a large clinic.
        if s.has(Figure::Search) {
            let outcome = search::measure(s, self.stack, &self.p.client).await?;
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }

        // 2b. Free slots and booking in a clinic's month.
        if s.has(Figure::Slots) {
            let outcome = slots::measure(s, self.stack, &self.p.client).await?;
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }

        // 2c. A write with a webhook subscription, and its delivery.
        if s.has(Figure::Webhooks) {
            let outcome = webhooks::measure(s, self.stack).await?;
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }

        // 3. Thousands of client connections.
        if s.has(Figure::Connections) {
            let admins = [self.stack.gateway.admin_addr, self.p.sources.worker_admin];
            let outcome = wrk::measure(
                s,
                &self.p.client,
                &admins,
                &self.p.read.uri.to_string(),
                &self.p.fixture.token,
            )
            .await?;
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }

        // 4. The audit outbox under a minute of full load.
        if s.has(Figure::Backlog) {
            let clinic_db = self
                .stack
                .region(&self.p.fixture.region)
                .context("the fixture's region")?
                .server
                .connect(&self.p.fixture.database())
                .await
                .context("connecting to the clinic database")?;
            let read: Arc<dyn Workload> = Arc::new(Targets::one(self.p.read.clone()));
            let outcome = backlog::measure(
                s,
                &self.p.client,
                read,
                &clinic_db,
                self.p.sources.worker_admin,
            )
            .await?;
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }

        // 5. Provisioning; its clinics join the warm set of the placement figure.
        let mut warm = vec![self.p.read.clone()];
        for clinic in &mixed_clinics {
            warm.push(self.first_patient(clinic)?);
        }
        if s.has(Figure::Provisioning) {
            let outcome = provisioning::measure(
                self.stack,
                &self.p.client,
                &self.p.fixture.region,
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
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }

        // 6. Placement.
        if s.has(Figure::Placement) {
            let outcome =
                placement::measure(s, self.stack, &self.p.client, Targets::in_turn(warm)).await?;
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }

        // 7. Many clinics on one server.
        let many_figures = [Figure::Budget, Figure::Zipf, Figure::Sized, Figure::Memory];
        if many_figures.into_iter().any(|f| s.has(f)) {
            let many = budget::setup(
                self.stack,
                &self.p.client,
                &self.p.fixture.region,
                s.budget_clinics,
                s.setup_concurrency,
            )
            .await?;
            state.results.notes.push(format!(
                "budget: setup (not timed in any figure): {} clinics registered in {:.1} s, first patients in {:.1} s, {} attempts retried",
                many.targets.len(),
                many.registered_in.as_secs_f64(),
                many.patients_in.as_secs_f64(),
                many.retried
            ));
            if s.has(Figure::Memory) {
                match &many.memory {
                    Some(m) => state.lines.push(memory::worker(m)),
                    None => state
                        .results
                        .notes
                        .push("memory: the worker's VmRSS could not be read".into()),
                }
            }
            let clinics = many.targets.len();
            let mut many_runs = Vec::new();
            if s.has(Figure::Budget) {
                many_runs.push(Measured::new(
                    RunId::Budget,
                    Targets::many(many.targets.clone(), Pick::Random),
                    format!("gateway -> worker GET patient, {clinics} clinics"),
                    "budget",
                ));
            }
            if s.has(Figure::Zipf) {
                let zipf = Zipf::new(clinics, s.zipf_s);
                state.results.notes.push(format!(
                    "zipf: s = {}, over {clinics} clinics: the busiest clinic gets {:.1} % of the requests, the 10 busiest {:.1} %, the 100 busiest {:.1} %",
                    s.zipf_s,
                    zipf.top_share() * 100.0,
                    zipf.share_of_first(10) * 100.0,
                    zipf.share_of_first(100) * 100.0
                ));
                many_runs.push(Measured::new(
                    RunId::Zipf,
                    Targets::many(many.targets.clone(), Pick::Zipf(zipf)),
                    format!("gateway -> worker GET patient, {clinics} clinics, Zipf"),
                    "zipf",
                ));
            }
            if !many_runs.is_empty() {
                self.measure(&mut many_runs, &regional).await?;
                state.runs.extend(many_runs);
                state.results.notes.push(self.idle(&regional).await);
            }
            state.many = Some(many);
        }
        Ok(())
    }

    /// The bare connect-per-request reference over the many clinics (the worker
    /// is stopped meanwhile, so its connections leave room for the reference's).
    async fn bare_connect(&self, state: &mut State) -> anyhow::Result<()> {
        let many = state.many.as_ref().context("no budget clinics")?;
        let ids: Vec<uuid::Uuid> = many.registrations.iter().map(|r| r.clinic_id).collect();
        let dbs = bulk::lookup(self.stack, &ids).await?;
        let keys = self.stack.keys()?;
        let region = self
            .stack
            .region(&self.p.fixture.region)
            .context("the fixture's region")?;
        let clinics = dbs
            .iter()
            .zip(&many.patients)
            .map(|(db, patient)| {
                let mut config = region.server.config(&db.db_name);
                config.user(&db.db_role).password(db.password(&keys)?);
                Ok(connect::Clinic {
                    config,
                    patient: *patient,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let count = clinics.len();
        let addr = self
            .p
            .servers
            .spawn(connect::start(clinics, region.server.tls()))
            .await
            .context("the bare connect server")??;
        let targets = (0..count)
            .map(|i| Target::new(&format!("http://{addr}/clinics/{i}"), &[]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let workload = Targets::many(targets, Pick::Random);
        let (status, body) = load::send(&self.p.client, workload.request(0)?)
            .await
            .context("bare connect: first request")?;
        if status != StatusCode::OK {
            bail!(
                "bare connect: first request answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let mut runs = vec![Measured::new(
            RunId::BareConnect,
            workload,
            format!("bare connect-per-request, {count} clinics"),
            "bare connect",
        )];
        let regional = self.regional().await?;
        self.measure(&mut runs, &regional).await?;
        state.runs.extend(runs);
        Ok(())
    }

    /// The many clinics again, on the server and worker as sized by the rule.
    async fn sized(&self, state: &mut State) -> anyhow::Result<()> {
        let s = self.settings;
        let many = state.many.as_ref().context("no budget clinics")?;
        let (budget, max_connections) = sizing(s);
        let targets = budget::targets(self.stack, &many.registrations, &many.patients)?;
        let clinics = targets.len();
        eprintln!("bench: sized: requesting each of the {clinics} clinics once…");
        let started = Instant::now();
        let warm: Arc<dyn Workload> = Arc::new(Targets::in_turn(targets.clone()));
        let warmed = load::run(
            &self.p.client,
            &warm,
            s.concurrency,
            Limit::Requests(clinics as u64),
        )
        .await;
        let (open, worker_budget) =
            match breakdown::metrics_text(&self.p.client, self.p.sources.worker_admin).await {
                Ok(text) => (
                    format!("{:.0}", breakdown::value(&text, m::POOLS_OPEN, &[])),
                    format!("{:.0}", breakdown::value(&text, m::POOL_BUDGET, &[])),
                ),
                Err(_) => ("?".into(), "?".into()),
            };
        let regional = self.regional().await?;
        let server_max: String = regional
            .query_one("SHOW max_connections", &[])
            .await
            .ok()
            .and_then(|row| row.try_get(0).ok())
            .unwrap_or_else(|| "?".into());
        state.results.notes.push(format!(
            "sized: rule: {SIZING_RULE}; for {clinics} clinics at concurrency {}: CLINIC_POOL_BUDGET {budget}, max_connections {max_connections} (the regional server and the worker restarted with them; they report {server_max} and a budget of {worker_budget}); every clinic requested once first in {:.1} s ({} errors), {open} clinic pools open after",
            s.concurrency,
            started.elapsed().as_secs_f64(),
            warmed.errors
        ));
        let mut runs = vec![Measured::new(
            RunId::Sized,
            Targets::many(targets, Pick::Random),
            format!("gateway -> worker GET patient, {clinics} clinics, sized"),
            "sized",
        )];
        self.measure(&mut runs, &regional).await?;
        state.runs.extend(runs);
        Ok(())
    }

    /// The gateway's memory, then the summary lines.
    async fn late(&self, state: &mut State) -> anyhow::Result<()> {
        let s = self.settings;
        if s.has(Figure::Memory) {
            let outcome = memory::gateway(
                s,
                self.stack,
                &self.p.client,
                &self.p.fixture.region,
                self.p.gateway_rss_at_start,
            )
            .await?;
            state.lines.extend(outcome.lines);
            state.results.notes.extend(outcome.notes);
        }
        let mut lines = std::mem::take(&mut state.lines);
        lines.extend(self.throughput_lines(&mut state.runs));
        lines.sort_by_key(|l| Figure::ALL.iter().position(|f| *f == l.figure));
        state.results.lines = lines;
        for run in &mut state.runs {
            if let Some(logins) = &run.logins {
                let stats = &mut run.login_stats;
                let kinds: Vec<String> = stats
                    .error_kinds
                    .iter()
                    .map(|(k, n)| format!("{k} x{n}"))
                    .collect();
                let p50 = stats.percentile_ms(50.0);
                let p99 = stats.percentile_ms(99.0);
                state.results.notes.push(format!(
                    "logins: {:.1} a second wanted over {} accounts during {}: {} logins, {:.1} a second, {} errors{}, login p50/p99 {}/{} ms",
                    logins.rate(),
                    logins.accounts(),
                    run.row.name,
                    stats.ok,
                    stats.rate(),
                    stats.errors,
                    if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) },
                    p50.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                    p99.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                ));
            }
        }
        state.results.rows = std::mem::take(&mut state.runs)
            .into_iter()
            .map(|r| r.row)
            .collect();
        Ok(())
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

    /// The read, with logins in the background: accounts registered for it, each
    /// logged in once to check.
    async fn with_logins(&self) -> anyhow::Result<Measured> {
        let s = self.settings;
        let gateway = self.stack.gateway_url();
        let http = Http::new(&gateway);
        eprintln!(
            "bench: registering {} accounts for the background logins…",
            s.login_accounts
        );
        let mut accounts = Vec::with_capacity(s.login_accounts);
        for i in 0..s.login_accounts {
            accounts.push(setup::register_only(&http, &format!("Bench Login Clinic {i}")).await?);
        }
        let logins = Arc::new(Logins::new(&gateway, accounts, s.login_rate));
        for i in 0..logins.accounts() {
            logins
                .once(&self.p.client, i)
                .await
                .context("logins: first login")?;
        }
        let mut run = Measured::new(
            RunId::ReadLogins,
            Targets::one(self.p.read.clone()),
            format!(
                "gateway -> worker GET patient, {} logins/s",
                report::num(s.login_rate, 0)
            ),
            "read+logins",
        );
        run.logins = Some(logins);
        Ok(run)
    }

    /// Seeds the mixed scenario's clinics (through the API, then the bulk of
    /// their patients with SQL) and checks every operation once.
    async fn mixed(&self) -> anyhow::Result<(Measured, Vec<Clinic>)> {
        let s = self.settings;
        eprintln!(
            "bench: seeding {} clinic(s) with {} patients each through the API for the mixed scenario…",
            s.clinics, s.patients
        );
        let gateway = self.stack.gateway_url();
        let seeded = clinics::seed(&gateway, s.clinics, s.patients)
            .await
            .context("seeding the mixed scenario's clinics")?;
        if s.mixed_patients > 0 {
            eprintln!(
                "bench: inserting {} more patients into each mixed clinic…",
                s.mixed_patients
            );
            let ids: Vec<uuid::Uuid> = seeded.iter().map(|c| c.account.clinic_id).collect();
            let dbs = bulk::lookup(self.stack, &ids).await?;
            let mut took = Duration::ZERO;
            for (db, clinic) in dbs.iter().zip(&seeded) {
                let server = &self
                    .stack
                    .region(&clinic.account.region)
                    .with_context(|| format!("no region {}", clinic.account.region))?
                    .server;
                let admin = server
                    .connect(&db.db_name)
                    .await
                    .context("connecting to a mixed clinic's database")?;
                took += bulk::patients(&admin, s.mixed_patients).await?;
            }
            for region in &self.stack.regions {
                region
                    .server
                    .connect("postgres")
                    .await?
                    .batch_execute("CHECKPOINT")
                    .await
                    .context("CHECKPOINT after the bulk inserts")?;
            }
            eprintln!(
                "bench: {} patients inserted in {:.1} s",
                s.mixed_patients * seeded.len(),
                took.as_secs_f64()
            );
        }
        let workload = Mixed::new(&gateway, seeded.clone())?;
        workload.check(&self.p.client).await?;
        let mut run = Measured::new(
            RunId::Mixed,
            workload,
            format!(
                "gateway -> worker mixed ({} clinics of {} patients)",
                s.clinics,
                report::num((s.patients + s.mixed_patients) as f64, 0)
            ),
            "mixed",
        );
        run.row.weights = Mixed::weights().collect();
        Ok((run, seeded))
    }

    /// One request that must answer 200 with the seeded patient.
    async fn check(&self, targets: &Targets, name: &str) -> anyhow::Result<()> {
        let (status, body) = load::send(&self.p.client, targets.request(0)?)
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
        let fixture = &self.p.fixture;
        let id_ok = json["id"].as_str() == Some(fixture.patient_id.to_string().as_str());
        let name_ok = json["first_name"].as_str() == Some(fixture.first_name.as_str());
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
    /// around each measured run; logins in the background of a run that has them.
    async fn measure(
        &self,
        runs: &mut [Measured],
        regional: &tokio_postgres::Client,
    ) -> anyhow::Result<()> {
        let s = self.settings;
        let client = &self.p.client;
        for round in 1..=s.rounds {
            for run in runs.iter_mut() {
                let background = run.logins.as_ref().map(|l| logins::start(client, l));
                if !s.warmup.is_zero() {
                    load::run(client, &run.workload, s.concurrency, Limit::For(s.warmup)).await;
                }
                let observe = run.id.observed();
                let before = if observe {
                    (
                        self.p.sources.snapshot(client).await,
                        Self::sessions(regional).await,
                    )
                } else {
                    (None, None)
                };
                let cpu_before = cpu::snapshot();
                let stats =
                    load::run(client, &run.workload, s.concurrency, Limit::For(s.duration)).await;
                let used = cpu::snapshot().minus(&cpu_before);
                if let Some(background) = background {
                    run.login_stats.merge(background.stop().await);
                }
                eprintln!(
                    "bench: round {round}/{}: {:<46} {:>9.1} req/s, {} errors",
                    s.rounds,
                    run.row.name,
                    stats.rps(),
                    stats.errors
                );
                run.row.add(stats, &used);
                if observe {
                    let service = self.p.sources.snapshot(client).await;
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

    /// What the machine does with no load after the many clinics' runs, for one
    /// measured period.
    async fn idle(&self, regional: &tokio_postgres::Client) -> String {
        let client = &self.p.client;
        let sources = (
            self.p.sources.snapshot(client).await,
            Self::sessions(regional).await,
        );
        let before = cpu::snapshot();
        let started = Instant::now();
        tokio::time::sleep(self.settings.idle).await;
        let used = cpu::snapshot().minus(&before);
        let took = started.elapsed();
        let evictions = self
            .p
            .sources
            .snapshot(client)
            .await
            .zip(sources.0)
            .map(|(a, b)| format!("{:.0}", a.minus(b).evictions));
        let sessions = Self::sessions(regional)
            .await
            .zip(sources.1)
            .map(|(a, b)| (a - b).to_string());
        let open = match breakdown::metrics_text(client, self.p.sources.worker_admin).await {
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

    /// CPU microseconds per request of `group` in run `id`.
    fn cpu_us(runs: &[Measured], id: RunId, group: &str) -> Option<f64> {
        runs.iter().find(|r| r.id == id)?.row.cpu_us(group)
    }

    /// The summary lines of the throughput runs.
    fn throughput_lines(&self, runs: &mut [Measured]) -> Vec<Line> {
        let s = self.settings;
        let find = |runs: &mut [Measured], id: RunId| -> Option<Summary> {
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
        let reference = |r: &Option<Summary>, label: &str| {
            r.as_ref()
                .map_or_else(|| "-".into(), |(v, ..)| format!("{label} {}", rps(*v)))
        };
        let base_ref = reference(&baseline, "bare hyper+tokio-postgres");
        let base = baseline.as_ref().map_or(0.0, |b| b.0);
        if s.has(Figure::Read) {
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
        let direct = find(runs, RunId::Direct);
        if s.has(Figure::Direct) {
            if let Some((v, _, _, errors, name)) = &direct {
                lines.push(
                    Line::new(
                        Figure::Direct,
                        name.clone(),
                        format!("{}, {errors} errors", rps(*v)),
                        base_ref.clone(),
                        report::ratio(*v, base),
                    )
                    .at_least(DIRECT_GOAL, None),
                );
            }
        }
        if s.has(Figure::Latency) {
            if let (Some(r), Some(b)) = (&read, &baseline) {
                lines.push(
                    Line::new(
                        Figure::Latency,
                        format!("read p99 at concurrency {}", s.concurrency),
                        format!("p99 {:.2} ms (p50 {:.2})", r.2, r.1),
                        format!("baseline p99 {:.2} ms (p50 {:.2})", b.2, b.1),
                        report::ratio(r.2, b.2),
                    )
                    .at_most(LATENCY_GOAL),
                );
            }
        }
        if s.has(Figure::Cpu) {
            lines.extend(self.cpu_lines(runs));
        }
        if let (Some(with), Some(without)) = (find(runs, RunId::ReadLogins), &read) {
            lines.push(
                Line::new(
                    Figure::Logins,
                    format!(
                        "read p99 with {} logins/s in the background",
                        report::num(s.login_rate, 0)
                    ),
                    format!("p99 {:.2} ms, {}, {} errors", with.2, rps(with.0), with.3),
                    format!("read p99 {:.2} ms, {}", without.2, rps(without.0)),
                    report::ratio(with.2, without.2),
                )
                .at_most(LOGINS_GOAL),
            );
        }
        if let Some((v, _, _, errors, name)) = find(runs, RunId::Mixed) {
            lines.push(
                Line::new(
                    Figure::Mixed,
                    name,
                    format!("{}, {errors} errors", rps(v)),
                    base_ref.clone(),
                    report::ratio(v, base),
                )
                .at_least(MIXED_GOAL, None),
            );
        }
        let budget_what = format!(
            "{} clinics, max_connections {}, budget {}",
            s.budget_clinics, s.max_connections, s.pool_budget
        );
        let single_ref = |single: &Summary| {
            format!(
                "single-clinic read {} (p50 {:.1} ms)",
                rps(single.0),
                single.1
            )
        };
        let many_value = |(v, p50, p99, errors, _): &Summary| {
            format!("{}, {errors} errors, p50/p99 {p50:.1}/{p99:.1} ms", rps(*v))
        };
        if let Some(budget) = find(runs, RunId::Budget) {
            if let Some(single) = &read {
                lines.push(
                    Line::new(
                        Figure::Budget,
                        budget_what.clone(),
                        many_value(&budget),
                        single_ref(single),
                        report::ratio(budget.0, single.0),
                    )
                    .at_least(BUDGET_GOAL, Some(("0 errors", budget.3 == 0))),
                );
            }
            if let Some(bare) = find(runs, RunId::BareConnect) {
                lines.push(
                    Line::new(
                        Figure::Budget,
                        format!("{budget_what}, vs connecting per request"),
                        many_value(&budget),
                        format!(
                            "bare connect-per-request {}, {} errors (p50 {:.1} ms)",
                            rps(bare.0),
                            bare.3,
                            bare.1
                        ),
                        report::ratio(budget.0, bare.0),
                    )
                    .at_least(BARE_CONNECT_GOAL, Some(("0 errors", budget.3 == 0))),
                );
            }
        }
        if let (Some(zipf), Some(single)) = (find(runs, RunId::Zipf), &read) {
            lines.push(
                Line::new(
                    Figure::Zipf,
                    format!("{budget_what}, Zipf s = {}", s.zipf_s),
                    many_value(&zipf),
                    single_ref(single),
                    report::ratio(zipf.0, single.0),
                )
                .at_least(ZIPF_GOAL, Some(("0 errors", zipf.3 == 0))),
            );
        }
        if let (Some(sized), Some(single)) = (find(runs, RunId::Sized), &read) {
            let (budget, max_connections) = sizing(s);
            lines.push(
                Line::new(
                    Figure::Sized,
                    format!(
                        "{} clinics, sized: budget {budget} (>= clinics + concurrency), max_connections {max_connections} (>= budgets + {RESERVED_CONNECTIONS})",
                        s.budget_clinics
                    ),
                    many_value(&sized),
                    single_ref(single),
                    report::ratio(sized.0, single.0),
                )
                .at_least(SIZED_GOAL, None),
            );
        }
        if let (true, Some(direct), Some(gw)) = (s.has(Figure::Gateway), &direct, &read) {
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
                let at = |r: &Summary| if pick == 1 { r.1 } else { r.2 };
                let added_by_proxy = proxy.as_ref().map_or_else(String::new, |p| {
                    format!(", bare proxy {:.2} ms ({:+.2})", at(p), at(p) - at(direct))
                });
                lines.push(Line::new(
                    Figure::Gateway,
                    format!("{label} latency added by the gateway"),
                    format!(
                        "{:+.2} ms ({:.2} ms){added_by_proxy}",
                        at(gw) - at(direct),
                        at(gw)
                    ),
                    format!("worker direct {:.2} ms", at(direct)),
                    report::ratio(at(gw), at(direct)),
                ));
            }
        }
        lines
    }

    /// CPU per read of the worker and both PostgreSQL servers (against the
    /// baseline's), and of the gateway against the bare proxy's per request.
    fn cpu_lines(&self, runs: &[Measured]) -> Vec<Line> {
        let regional = format!("postgres {}", self.p.fixture.region);
        let us = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
        let read = |group: &str| Self::cpu_us(runs, RunId::Read, group);
        let parts = [read("worker"), read(&regional), read("postgres central")];
        let base_server = Self::cpu_us(runs, RunId::Baseline, "baseline server");
        let base_pg = Self::cpu_us(runs, RunId::Baseline, &regional);
        let met = parts
            .iter()
            .zip(CPU_GOALS_US)
            .all(|(v, goal)| v.is_some_and(|v| v <= goal));
        let product: Option<f64> = parts.iter().copied().sum();
        let baseline = base_server.zip(base_pg).map(|(a, b)| a + b);
        let mut lines = vec![Line::new(
            Figure::Cpu,
            "CPU per read: worker / regional PostgreSQL / central PostgreSQL",
            format!("{} / {} / {} µs", us(parts[0]), us(parts[1]), us(parts[2])),
            format!(
                "baseline: server {} + PostgreSQL {} µs",
                us(base_server),
                us(base_pg)
            ),
            product.zip(baseline).and_then(|(p, b)| report::ratio(p, b)),
        )
        .judged(
            format!(
                "<= {:.0} / {:.0} / {:.0} µs",
                CPU_GOALS_US[0], CPU_GOALS_US[1], CPU_GOALS_US[2]
            ),
            met,
        )];
        let gateway = read("gateway");
        let proxy = Self::cpu_us(runs, RunId::Proxy, "bare proxy");
        lines.push(
            Line::new(
                Figure::Cpu,
                "gateway CPU per read vs the bare hyper proxy's",
                format!("{} µs", us(gateway)),
                format!("bare proxy {} µs per request", us(proxy)),
                gateway.zip(proxy).and_then(|(g, p)| report::ratio(g, p)),
            )
            .at_most(GATEWAY_CPU_GOAL),
        );
        lines
    }
}
