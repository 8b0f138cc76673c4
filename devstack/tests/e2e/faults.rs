//! Faults, injected into real processes, each test on a stack of its own: a regional
//! PostgreSQL server killed, a worker stopped or killed, the central database
//! stopped, provisioning cut short, and the gateway stopped under load. Each test
//! runs alone (`support::alone`): the latencies they assert must not depend on
//! another test's stack competing for the same two cores.
//!
//! Run with `--nocapture` to see what each test measured.

use crate::support::{create_patient, id, patient_body, register, Clinic};
use devstack::{Http, Reply, Stack};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// How long any one request may take during a fault before it counts as a hang.
const HANG: Duration = Duration::from_secs(2);
/// How long a client waits before giving up on a request (a hang shows as such).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);

/// The regional clinic template database and the clinic roles' group role.
const TEMPLATE_DB: &str = "medicalpro_clinic_template";
const APP_ROLE: &str = "medicalpro_clinic_app";

/// A stack whose data directory is removed when it is dropped, even by a failing test.
struct Running {
    stack: Option<Stack>,
    dir: std::path::PathBuf,
}

impl Running {
    fn start(name: &str, regions: &[&str], env: &[(&str, &str)]) -> Self {
        let options = crate::support::options(&format!("faults-{name}"), regions, env);
        let dir = options.data_dir.clone();
        Self {
            stack: Some(crate::support::start(options)),
            dir,
        }
    }

    fn stack(&mut self) -> &mut Stack {
        self.stack.as_mut().expect("stack")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stack.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn is_problem(r: &Reply) -> bool {
    r.header("content-type")
        .is_some_and(|v| v.starts_with(common::problem::CONTENT_TYPE))
}

/// Asserts a reply is `503` problem+json with a `retry-after` header.
fn assert_unavailable(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.text());
    assert!(is_problem(r), "{what}: not problem+json: {:?}", r.headers);
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.parse::<u32>().is_ok()),
        "{what}: no retry-after: {:?}",
        r.headers
    );
}

// ---------------------------------------------------------------------------
// Probes: clients that keep reading or writing one clinic's data and record every
// answer with its timing.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

#[derive(Debug)]
struct Sample {
    who: &'static str,
    op: Op,
    started: Instant,
    took: Duration,
    /// `None`: no answer (a transport error or the client's timeout).
    status: Option<u16>,
    retry_after: bool,
    problem: bool,
    /// The created row's id (writes), or the error.
    detail: String,
}

impl Sample {
    fn ended(&self) -> Instant {
        self.started + self.took
    }
    fn ok(&self) -> bool {
        matches!(self.status, Some(200 | 201))
    }
    /// `503` problem+json with `retry-after`.
    fn unavailable(&self) -> bool {
        self.status == Some(503) && self.retry_after && self.problem
    }
}

struct Probes {
    http: Http,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Probes {
    fn new(http: &Http) -> Self {
        Self {
            http: http.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            samples: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::new(),
        }
    }

    /// Starts a client that repeats `op` on `clinic`'s data every `pace`.
    fn spawn(
        &mut self,
        rt: &Runtime,
        who: &'static str,
        clinic: &Clinic,
        patient: &str,
        op: Op,
        pace: Duration,
    ) {
        let (http, stop, samples) = (self.http.clone(), self.stop.clone(), self.samples.clone());
        let token = clinic.token.clone();
        let path = format!("/api/v1/patients/{patient}");
        self.tasks.push(rt.spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let request = async {
                    match op {
                        Op::Read => http.get(&path, Some(&token)).await,
                        Op::Write => {
                            let body = patient_body("Probe", &format!("{who}{n}"));
                            http.post("/api/v1/patients", Some(&token), &body).await
                        }
                    }
                };
                let sent = tokio::time::timeout(CLIENT_TIMEOUT, request).await;
                let took = started.elapsed();
                let sample = match sent {
                    Ok(Ok(r)) => Sample {
                        who,
                        op,
                        started,
                        took,
                        status: Some(r.status.as_u16()),
                        retry_after: r.header("retry-after").is_some(),
                        problem: is_problem(&r),
                        detail: if r.status == 201 {
                            r.json()["id"].as_str().unwrap_or("").to_owned()
                        } else {
                            r.text()
                        },
                    },
                    Ok(Err(e)) => Sample {
                        who,
                        op,
                        started,
                        took,
                        status: None,
                        retry_after: false,
                        problem: false,
                        detail: format!("{e:#}"),
                    },
                    Err(_) => Sample {
                        who,
                        op,
                        started,
                        took,
                        status: None,
                        retry_after: false,
                        problem: false,
                        detail: "client timeout".into(),
                    },
                };
                samples.lock().unwrap().push(sample);
                tokio::time::sleep(pace).await;
            }
        }));
    }

    /// Waits (blocking) until every client has had a few answers, at least half a
    /// second: the pools are warm, however busy the machine is.
    fn warm_up(&self) {
        let started = Instant::now();
        let enough = 5 * self.tasks.len();
        while started.elapsed() < Duration::from_millis(500)
            || (self.samples.lock().unwrap().len() < enough
                && started.elapsed() < Duration::from_secs(20))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (blocking) until `who` had a successful answer to a request started
    /// after `since`; returns when that answer came.
    fn wait_success(&self, who: &str, since: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let first = self
                .samples
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.who == who && s.started >= since && s.ok())
                .map(Sample::ended)
                .min();
            if first.is_some() {
                return first;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn finish(self, rt: &Runtime) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            rt.block_on(t).unwrap();
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by_key(|s| s.started);
        samples
    }
}

fn show(s: &Sample, origin: Instant) -> String {
    let at = if s.started >= origin {
        format!("+{}", ms(s.started - origin))
    } else {
        format!("-{}", ms(origin - s.started))
    };
    format!(
        "{} {:?} at {at}ms took {}ms: {:?} {}",
        s.who,
        s.op,
        s.took.as_millis(),
        s.status,
        s.detail.chars().take(160).collect::<String>()
    )
}

/// Checks a clinic's answers around an outage that began at `fault` and ended
/// (the failed process back) at `back`: the first `503` came within `HANG` of the
/// fault, every answer after it until `back` was a `503` problem+json with
/// `retry-after`, none took longer than `HANG`, and nothing but a success or such
/// a `503` was ever answered. Returns the time from the fault to the first `503`.
fn check_outage(samples: &[Sample], who: &str, fault: Instant, back: Instant) -> Duration {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.who == who).collect();
    for s in &mine {
        assert!(
            s.ok() || s.unavailable(),
            "every answer is a success or a 503 with retry-after: {}",
            show(s, fault)
        );
    }
    let during: Vec<&&Sample> = mine
        .iter()
        .filter(|s| s.ended() > fault && s.started < back)
        .collect();
    for s in &during {
        assert!(s.took < HANG, "no request hangs: {}", show(s, fault));
    }
    let first_503 = during
        .iter()
        .filter(|s| s.status == Some(503))
        .map(|s| s.ended())
        .min()
        .unwrap_or_else(|| panic!("{who}: no 503 during the outage"));
    let to_first_503 = first_503.saturating_duration_since(fault);
    assert!(
        to_first_503 < HANG,
        "{who}: first 503 {}ms after the fault",
        ms(to_first_503)
    );
    for s in during.iter().filter(|s| s.started > first_503) {
        assert!(
            s.unavailable(),
            "{who}: once unavailable, 503 until the recovery: {}",
            show(s, fault)
        );
    }
    assert!(
        during.iter().filter(|s| s.unavailable()).count() >= 3,
        "{who}: the outage was observed by several requests"
    );
    to_first_503
}

/// The slowest of some answers, with its time relative to `origin`.
fn slowest<'a>(samples: impl Iterator<Item = &'a Sample>, origin: Instant) -> String {
    samples
        .max_by_key(|s| s.took)
        .map(|s| show(s, origin))
        .unwrap_or_default()
}

/// Every answer to `who` started after `from` is a success.
fn check_all_ok(samples: &[Sample], who: &str, from: Instant, origin: Instant) -> usize {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.who == who && s.started >= from)
        .collect();
    for s in &mine {
        assert!(s.ok(), "{who}: every request succeeds: {}", show(s, origin));
    }
    mine.len()
}

// ---------------------------------------------------------------------------

/// A regional PostgreSQL server killed: its clinics get a fast 503 with
/// `retry-after`, the other region's clinics do not notice, and everything comes
/// back by itself when the server is restarted.
#[test]
fn a_regional_server_killed_fails_its_clinics_fast_and_recovers_by_itself() {
    let _alone = crate::support::alone();
    let mut running = Running::start("region-kill", &["eu-west", "eu-central"], &[]);
    let rt = runtime();
    let http = Http::new(&running.stack().gateway_url());
    let (a, b, pa, pb) = rt.block_on(async {
        let a = register(&http, Some("eu-west")).await;
        let b = register(&http, Some("eu-central")).await;
        let pa = create_patient(&http, &a, patient_body("West", "Side")).await;
        let pb = create_patient(&http, &b, patient_body("Central", "Side")).await;
        (a, b, id(&pa), id(&pb))
    });
    let mut probes = Probes::new(&http);
    let pace = Duration::from_millis(20);
    for (who, clinic, patient) in [("a", &a, &pa), ("b", &b, &pb)] {
        probes.spawn(&rt, who, clinic, patient, Op::Read, pace);
        probes.spawn(&rt, who, clinic, patient, Op::Read, pace);
        probes.spawn(&rt, who, clinic, patient, Op::Write, pace);
    }
    let origin = Instant::now();
    probes.warm_up();

    let killed = Instant::now();
    running.stack().region_mut("eu-west").unwrap().server.kill();
    std::thread::sleep(Duration::from_secs(3));
    let restarting = Instant::now();
    running
        .stack()
        .region_mut("eu-west")
        .unwrap()
        .server
        .restart()
        .unwrap();
    let restarted = Instant::now();
    let recovered = probes
        .wait_success("a", restarted, Duration::from_secs(15))
        .expect("eu-west clinics recover after the server is back");
    std::thread::sleep(Duration::from_millis(1500));
    let samples = probes.finish(&rt);

    let to_503 = check_outage(&samples, "a", killed, restarting);
    // Once one request succeeded again, all do (reads and writes).
    let after = check_all_ok(&samples, "a", recovered, origin);
    assert!(after >= 10, "{after} requests after the recovery");
    let b_total = check_all_ok(&samples, "b", origin, origin);
    let b_during = samples
        .iter()
        .filter(|s| s.who == "b" && s.started >= killed && s.started < restarted)
        .count();
    assert!(
        b_during >= 20,
        "the other region was served during the outage ({b_during} requests)"
    );
    let worst_a = slowest(
        samples
            .iter()
            .filter(|s| s.who == "a" && s.ended() > killed && s.started < restarting),
        killed,
    );
    eprintln!(
        "regional server killed: first 503 after {}ms (slowest answer during the outage: {worst_a}); \
         server restart took {}ms; first success {}ms after it was back; \
         other region: {b_total} requests, all successful ({b_during} during the outage)",
        ms(to_503),
        ms(restarted - restarting),
        ms(recovered.saturating_duration_since(restarted)),
    );
    assert!(
        recovered.saturating_duration_since(restarted) < Duration::from_secs(5),
        "recovery within a few seconds"
    );
}

/// Clinic connections cut by the server (an operator's `pg_terminate_backend`, an
/// idle timeout, a failover) while reads keep coming: pooled connections are handed
/// out without a round trip to check them, so a read may meet a connection that
/// just died — it runs again on a fresh one, and every read answers 200.
#[test]
fn reads_survive_their_connections_being_cut() {
    let _alone = crate::support::alone();
    let mut running = Running::start("conn-cut", &["eu-west"], &[]);
    let rt = runtime();
    let http = Http::new(&running.stack().gateway_url());
    let region = running.stack().region("eu-west").unwrap();
    let (clinic, patient) = rt.block_on(async {
        let clinic = register(&http, None).await;
        let patient = create_patient(&http, &clinic, patient_body("Cut", "Connection")).await;
        (clinic, id(&patient))
    });
    let admin = rt.block_on(region.server.connect("postgres")).unwrap();
    let database = format!("medicalpro_clinic_{}", clinic.id);
    let worker_log = region.worker.log_path().to_owned();
    let mut terminated = 0i64;
    let mut reads = 0;
    for _ in 0..40 {
        let (cut, answers) = rt.block_on(async {
            // Reads in flight while the clinic's backends are terminated.
            let readers: Vec<_> = (0..4)
                .map(|i| {
                    let http = http.clone();
                    let token = clinic.token.clone();
                    let path = if i % 2 == 0 {
                        format!("/api/v1/patients/{patient}")
                    } else {
                        "/api/v1/patients?limit=5".to_owned()
                    };
                    tokio::spawn(async move {
                        let mut statuses = Vec::new();
                        for _ in 0..3 {
                            let r = http.get(&path, Some(&token)).await.unwrap();
                            statuses.push((r.status, r.text()));
                        }
                        statuses
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(2)).await;
            let cut: i64 = admin
                .query_one(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND datname = $1) t",
                    &[&database],
                )
                .await
                .unwrap()
                .get(0);
            let mut answers = Vec::new();
            for reader in readers {
                answers.extend(reader.await.unwrap());
            }
            (cut, answers)
        });
        terminated += cut;
        for (status, body) in answers {
            assert_eq!(
                status,
                200,
                "a read after its connection was cut: {body}\n{}",
                std::fs::read_to_string(&worker_log).unwrap_or_default()
            );
            reads += 1;
        }
    }
    assert!(terminated >= 40, "connections were cut ({terminated})");
    eprintln!("{terminated} clinic connections terminated under {reads} reads, all answered 200");
}

/// A worker stopped (SIGTERM) and then killed (SIGKILL) under load: the gateway
/// answers `503` with `retry-after` at once for whatever the worker cannot serve,
/// never hangs and never answers anything else; the worker drains and exits 0 on
/// SIGTERM; a restarted worker serves again.
#[test]
fn a_worker_stopped_or_killed_gives_fast_503s_and_a_restart_restores_service() {
    let _alone = crate::support::alone();
    let mut running = Running::start("worker", &["eu-west"], &[]);
    let rt = runtime();
    let http = Http::new(&running.stack().gateway_url());
    let (a, pa) = rt.block_on(async {
        let a = register(&http, None).await;
        let pa = create_patient(&http, &a, patient_body("Worker", "Fault")).await;
        (a, id(&pa))
    });

    // SIGTERM under load: requests keep arriving while the worker drains.
    let mut probes = Probes::new(&http);
    for op in [
        Op::Read,
        Op::Read,
        Op::Read,
        Op::Write,
        Op::Write,
        Op::Write,
    ] {
        probes.spawn(&rt, "a", &a, &pa, op, Duration::from_millis(2));
    }
    let origin = Instant::now();
    probes.warm_up();
    let terminated = Instant::now();
    let worker = &mut running.stack().region_mut("eu-west").unwrap().worker;
    worker.terminate();
    assert!(worker.wait(), "the worker drains and exits 0 on SIGTERM");
    let exited = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let restarting = Instant::now();
    worker.restart().unwrap();
    let restarted = Instant::now();
    let recovered = probes
        .wait_success("a", restarted, Duration::from_secs(10))
        .expect("a restarted worker serves again");
    std::thread::sleep(Duration::from_millis(500));
    let samples = probes.finish(&rt);
    for s in samples.iter().filter(|s| s.ended() > terminated) {
        assert!(
            s.ok() || s.unavailable(),
            "while the worker stops: a success or a 503 with retry-after, never a reset: {}",
            show(s, origin)
        );
        // Until the restarted worker serves (a fresh worker's first answers, opening
        // the clinic's pool, may be slow on a busy machine): never a hang, also not
        // while it starts up.
        if s.started + Duration::from_millis(100) < restarted {
            assert!(s.took < HANG, "no request hangs: {}", show(s, origin));
        }
    }
    let answered_503 = samples
        .iter()
        .filter(|s| s.started >= exited && s.started < restarting)
        .inspect(|s| assert!(s.unavailable(), "{}", show(s, origin)))
        .count();
    // While the restarted worker starts up, requests are refused at once rather
    // than left waiting until it serves.
    let starting_up: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started >= restarting && s.started + Duration::from_millis(300) < restarted)
        .collect();
    for s in &starting_up {
        assert!(
            s.unavailable() && s.took < Duration::from_millis(250),
            "a request during the worker's start-up is refused at once: {}",
            show(s, restarting)
        );
    }
    assert!(answered_503 >= 3, "the stopped worker was asked");
    check_all_ok(&samples, "a", recovered, origin);
    eprintln!(
        "worker SIGTERM under load: drained and exited 0 in {}ms; start-up took {}ms, {} requests \
         during it refused at once; {} answers after SIGTERM \
         ({} successes, {} 503s), the slowest until the restarted worker served: {}; served \
         again {}ms after the restart",
        ms(exited - terminated),
        ms(restarted - restarting),
        starting_up.len(),
        samples.iter().filter(|s| s.ended() > terminated).count(),
        samples
            .iter()
            .filter(|s| s.ended() > terminated && s.ok())
            .count(),
        samples
            .iter()
            .filter(|s| s.ended() > terminated && s.status == Some(503))
            .count(),
        slowest(
            samples
                .iter()
                .filter(|s| s.ended() > terminated
                    && s.started + Duration::from_millis(100) < restarted),
            terminated
        ),
        ms(recovered.saturating_duration_since(restarted)),
    );

    // SIGKILL under load.
    let mut probes = Probes::new(&http);
    for op in [Op::Read, Op::Read, Op::Write, Op::Write] {
        probes.spawn(&rt, "a", &a, &pa, op, Duration::from_millis(5));
    }
    let origin = Instant::now();
    probes.warm_up();
    let killed = Instant::now();
    let worker = &mut running.stack().region_mut("eu-west").unwrap().worker;
    worker.kill();
    std::thread::sleep(Duration::from_secs(2));
    let restarting = Instant::now();
    worker.restart().unwrap();
    let restarted = Instant::now();
    let recovered = probes
        .wait_success("a", restarted, Duration::from_secs(10))
        .expect("a restarted worker serves again");
    std::thread::sleep(Duration::from_millis(500));
    let samples = probes.finish(&rt);
    let to_503 = check_outage(&samples, "a", killed, restarting);
    check_all_ok(&samples, "a", recovered, origin);
    eprintln!(
        "worker SIGKILL under load: first 503 after {}ms, slowest answer until the restart \
         began: {}; served again {}ms after the restart",
        ms(to_503),
        slowest(
            samples
                .iter()
                .filter(|s| s.ended() > killed && s.started < restarting),
            killed
        ),
        ms(recovered.saturating_duration_since(restarted)),
    );
}

/// The central database stopped: clinics whose placement the gateway has seen keep
/// working (reads and writes), past the placement TTL and the worker's
/// revalidation; sign-in, registration and clinics never seen answer `503` with
/// `retry-after`; once central is back, sign-in works again and the audit records
/// of the writes made during the outage reach the central trail.
#[test]
fn the_central_database_stopped_keeps_known_clinics_working() {
    let _alone = crate::support::alone();
    // Short placement TTL and revalidation, so the outage outlasts both.
    let mut running = Running::start(
        "central",
        &["eu-west"],
        &[
            ("PLACEMENT_CACHE_TTL_SECS", "1"),
            ("CLINIC_REVALIDATE_SECS", "1"),
        ],
    );
    let rt = runtime();
    let http = Http::new(&running.stack().gateway_url());
    let (a, pa, unseen) = rt.block_on(async {
        let a = register(&http, None).await;
        let pa = create_patient(&http, &a, patient_body("Central", "Outage")).await;
        // Registered and signed in, but no clinic request yet: not in the cache.
        let unseen = register(&http, None).await;
        (a, id(&pa), unseen)
    });
    let mut probes = Probes::new(&http);
    for op in [Op::Read, Op::Read, Op::Write] {
        probes.spawn(&rt, "a", &a, &pa, op, Duration::from_millis(20));
    }
    let origin = Instant::now();
    probes.warm_up();

    let stopped = Instant::now();
    running.stack().central.stop();
    let stop_took = stopped.elapsed();
    // Outlast the placement TTL and the worker's revalidation several times over.
    std::thread::sleep(Duration::from_secs(3));
    let (login, register_reply, cold) = rt.block_on(async {
        let t = Instant::now();
        let login = http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"email": a.email, "password": a.password}),
            )
            .await
            .unwrap();
        let login_took = t.elapsed();
        let t = Instant::now();
        let reg = http
            .post(
                "/api/v1/auth/register",
                None,
                &json!({"clinic_name": "During the outage", "email": format!("{}@x.org", crate::support::unique("outage")), "password": "long enough password"}),
            )
            .await
            .unwrap();
        let reg_took = t.elapsed();
        let t = Instant::now();
        let cold = http
            .get("/api/v1/patients", Some(&unseen.token))
            .await
            .unwrap();
        let cold_took = t.elapsed();
        ((login, login_took), (reg, reg_took), (cold, cold_took))
    });
    assert_unavailable(&login.0, "login while central is down");
    assert_unavailable(&register_reply.0, "registration while central is down");
    assert_unavailable(&cold.0, "a clinic never seen while central is down");
    for took in [login.1, register_reply.1, cold.1] {
        assert!(took < HANG, "answered fast: {}ms", ms(took));
    }
    // Neither the gateway nor the worker reports itself unready for it (a load
    // balancer would take them out although they serve).
    let stack = running.stack();
    let worker_admin = stack.region("eu-west").unwrap().worker.admin_addr;
    for (what, addr) in [
        ("gateway", stack.gateway.admin_addr),
        ("worker", worker_admin),
    ] {
        assert_eq!(
            devstack::stack::http_status(addr, "/readyz"),
            Some(200),
            "the {what} stays ready while central is down"
        );
    }
    std::thread::sleep(Duration::from_secs(1));

    let restarting = Instant::now();
    running.stack().central.restart().unwrap();
    let restarted = Instant::now();
    let relogin = rt.block_on(async {
        loop {
            let r = http
                .post(
                    "/api/v1/auth/login",
                    None,
                    &json!({"email": a.email, "password": a.password}),
                )
                .await
                .unwrap();
            if r.status == 200 || restarted.elapsed() > Duration::from_secs(10) {
                return (r, restarted.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(
        relogin.0.status,
        200,
        "login after central is back: {}",
        relogin.0.text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let samples = probes.finish(&rt);
    check_all_ok(&samples, "a", origin, origin);
    for s in samples.iter().filter(|s| s.ended() > stopped) {
        assert!(s.took < HANG, "no request hangs: {}", show(s, stopped));
    }
    let written: Vec<uuid::Uuid> = samples
        .iter()
        .filter(|s| s.op == Op::Write && s.started >= stopped && s.ended() <= restarting)
        .map(|s| s.detail.parse().unwrap())
        .collect();
    let reads_during = samples
        .iter()
        .filter(|s| s.op == Op::Read && s.started >= stopped && s.ended() <= restarting)
        .count();
    assert!(
        written.len() >= 20 && reads_during >= 40,
        "the clinic was used during the outage ({} writes, {reads_during} reads)",
        written.len()
    );

    // The audit records of those writes reach the central trail, once each.
    let clinic: uuid::Uuid = a.id.parse().unwrap();
    let shipped_after = rt.block_on(async {
        let central = running
            .stack
            .as_ref()
            .unwrap()
            .central
            .connect(devstack::stack::CENTRAL_DB)
            .await
            .unwrap();
        loop {
            let n: i64 = central
                .query_one(
                    "SELECT count(*) FROM audit_logs WHERE clinic_id = $1 AND action = 'create' \
                     AND resource = 'patients' AND resource_id = ANY($2)",
                    &[&clinic, &written],
                )
                .await
                .unwrap()
                .get(0);
            if n as usize >= written.len() {
                assert_eq!(n as usize, written.len(), "each write audited once");
                return restarted.elapsed();
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(20),
                "only {n} of {} audit records shipped",
                written.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eprintln!(
        "central stopped ({}ms to stop): {} writes and {reads_during} reads served during the outage, \
         login / registration / unseen clinic answered 503 in {} / {} / {}ms; \
         central restart took {}ms; login worked {}ms after it was back; \
         the outage's audit records were all in the central trail {}ms after it was back",
        ms(stop_took),
        written.len(),
        ms(login.1),
        ms(register_reply.1),
        ms(cold.1),
        ms(restarted - restarting),
        ms(relogin.1),
        ms(shipped_after),
    );
}

// ---------------------------------------------------------------------------

/// Clinic databases and roles on a regional server, and the clinics of that region
/// the central database holds, by status.
async fn clinic_inventory(
    stack: &Stack,
    region: &str,
) -> (
    BTreeSet<String>,
    BTreeSet<String>,
    Vec<(String, String, String)>,
) {
    let server = &stack.region(region).unwrap().server;
    let admin = server.connect("postgres").await.unwrap();
    let dbs = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'medicalpro\\_clinic\\_%' \
             AND datname <> $1",
            &[&TEMPLATE_DB],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let roles = admin
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'medicalpro\\_clinic\\_%' \
             AND rolname <> $1",
            &[&APP_ROLE],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let central = stack
        .central
        .connect(devstack::stack::CENTRAL_DB)
        .await
        .unwrap();
    let companies = central
        .query(
            "SELECT db_name, db_role, status FROM companies WHERE region = $1",
            &[&region],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    (dbs, roles, companies)
}

/// No orphan: every clinic database and role on the server belongs to an active
/// clinic, and every clinic of the region is active with both.
async fn assert_no_orphan(stack: &Stack, region: &str) -> usize {
    let (dbs, roles, companies) = clinic_inventory(stack, region).await;
    for (_, _, status) in &companies {
        assert_eq!(status, "active", "every clinic converged: {companies:?}");
    }
    let want_dbs: BTreeSet<String> = companies.iter().map(|c| c.0.clone()).collect();
    let want_roles: BTreeSet<String> = companies.iter().map(|c| c.1.clone()).collect();
    assert_eq!(dbs, want_dbs, "clinic databases = active clinics");
    assert_eq!(roles, want_roles, "clinic roles = active clinics");
    companies.len()
}

/// The id of the clinic an e-mail registered, once the central transaction committed.
async fn clinic_of(central: &tokio_postgres::Client, email: &str) -> uuid::Uuid {
    for _ in 0..500 {
        let row = central
            .query_opt(
                "SELECT company_id FROM users WHERE lower(email) = lower($1)",
                &[&email],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no clinic registered for {email}");
}

/// Waits until the clinic's role exists on the server: provisioning has begun.
async fn wait_role(server: &devstack::PgServer, clinic: uuid::Uuid) {
    let admin = server.connect("postgres").await.unwrap();
    let role = format!("medicalpro_clinic_{}", clinic.simple());
    for _ in 0..1000 {
        let found = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .unwrap();
        if found.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("provisioning of {clinic} never began");
}

fn registration(name: &str) -> Value {
    json!({
        "clinic_name": name,
        "email": format!("{}@clinic.example", crate::support::unique("cut")),
        "password": "correct horse battery staple",
    })
}

async fn login(http: &Http, body: &Value) -> Reply {
    http.post(
        "/api/v1/auth/login",
        None,
        &json!({"email": body["email"], "password": body["password"]}),
    )
    .await
    .unwrap()
}

/// Provisioning cut short — the regional server killed after the clinic's role was
/// created, and the worker killed with the role created and the database cloned —
/// converges: re-sending the registration (first case) and the worker's reconciler
/// at start-up (second case) make the clinic active, and no database or role is
/// left on the regional server without an active clinic.
///
/// A session held open on the clinic template stops provisioning right after the
/// role is created (a clone needs the template to itself, and the worker waits for
/// it), so the cut comes at a known step.
#[test]
fn provisioning_cut_short_converges_without_orphans() {
    let _alone = crate::support::alone();
    let mut running = Running::start("provision", &["eu-west"], &[]);
    let rt = runtime();
    let http = Http::new(&running.stack().gateway_url());
    let template = TEMPLATE_DB;

    // 1. The regional server dies during provisioning; the registration is sent again.
    let first = registration("Cut by the server");
    let (pending, clinic1) = rt.block_on(async {
        let stack = running.stack.as_ref().unwrap();
        let holder = stack
            .region("eu-west")
            .unwrap()
            .server
            .connect(template)
            .await
            .unwrap();
        let central = stack
            .central
            .connect(devstack::stack::CENTRAL_DB)
            .await
            .unwrap();
        let pending = {
            let (http, body) = (http.clone(), first.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = http.post("/api/v1/auth/register", None, &body).await;
                (r, t)
            })
        };
        let clinic = clinic_of(&central, first["email"].as_str().unwrap()).await;
        wait_role(&stack.region("eu-west").unwrap().server, clinic).await;
        (pending, (clinic, holder))
    });
    // The held session dies with the server.
    let (clinic1, _holder) = clinic1;
    let killed = Instant::now();
    running.stack().region_mut("eu-west").unwrap().server.kill();
    let (reply, _) = rt.block_on(pending).unwrap();
    let reply = reply.unwrap();
    let answered = killed.elapsed();
    assert_unavailable(&reply, "registration cut by the server's death");
    assert!(
        answered < HANG,
        "answered {}ms after the kill",
        ms(answered)
    );
    running
        .stack()
        .region_mut("eu-west")
        .unwrap()
        .server
        .restart()
        .unwrap();
    let (retry, retry_took) = rt.block_on(async {
        let t = Instant::now();
        let r = http
            .post("/api/v1/auth/register", None, &first)
            .await
            .unwrap();
        (r, t.elapsed())
    });
    assert_eq!(
        retry.status,
        201,
        "the re-sent registration: {}",
        retry.text()
    );
    assert_eq!(retry.json()["clinic_id"], clinic1.to_string());
    rt.block_on(async {
        let r = login(&http, &first).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let token = r.json()["access_token"].as_str().unwrap().to_owned();
        let r = http
            .post(
                "/api/v1/patients",
                Some(&token),
                &patient_body("After", "Retry"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
    });

    // 2. The worker dies during provisioning, after the role and the database exist;
    // its reconciler finishes the job at start-up.
    let second = registration("Cut by the worker");
    let (pending, clinic2) = rt.block_on(async {
        let stack = running.stack.as_ref().unwrap();
        let server = &stack.region("eu-west").unwrap().server;
        let holder = server.connect(template).await.unwrap();
        let central = stack
            .central
            .connect(devstack::stack::CENTRAL_DB)
            .await
            .unwrap();
        let pending = {
            let (http, body) = (http.clone(), second.clone());
            tokio::spawn(async move { http.post("/api/v1/auth/register", None, &body).await })
        };
        let clinic = clinic_of(&central, second["email"].as_str().unwrap()).await;
        wait_role(server, clinic).await;
        (pending, (clinic, holder))
    });
    let (clinic2, holder) = clinic2;
    let killed = Instant::now();
    running.stack().region_mut("eu-west").unwrap().worker.kill();
    let reply = rt.block_on(pending).unwrap().unwrap();
    let answered = killed.elapsed();
    assert_unavailable(&reply, "registration cut by the worker's death");
    assert!(
        answered < HANG,
        "answered {}ms after the kill",
        ms(answered)
    );
    // As if the worker had died just after the clone: the database exists, without
    // its grants, and the clinic is still `provisioning`. (The killed worker's last
    // clone attempt, waiting on the server for the template, may finish by itself
    // once the template is free.)
    rt.block_on(async {
        drop(holder);
        let server = &running
            .stack
            .as_ref()
            .unwrap()
            .region("eu-west")
            .unwrap()
            .server;
        let admin = server.connect("postgres").await.unwrap();
        let create = format!(
            "CREATE DATABASE \"medicalpro_clinic_{}\" TEMPLATE \"{template}\"",
            clinic2.hyphenated()
        );
        // The held session may take a moment to end.
        for attempt in 0.. {
            match admin.batch_execute(&create).await {
                Ok(()) => break,
                Err(e)
                    if attempt < 100
                        && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // The killed worker's own attempt, still running on the server, may
                // have cloned it first: the database exists either way.
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
                        || e.code()
                            == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) =>
                {
                    break
                }
                Err(e) => panic!("cloning by hand: {:?}", e.as_db_error()),
            }
        }
    });
    let restarting = Instant::now();
    running
        .stack()
        .region_mut("eu-west")
        .unwrap()
        .worker
        .restart()
        .unwrap();
    let active_after = rt.block_on(async {
        let central = running
            .stack
            .as_ref()
            .unwrap()
            .central
            .connect(devstack::stack::CENTRAL_DB)
            .await
            .unwrap();
        loop {
            let status: String = central
                .query_one("SELECT status FROM companies WHERE id = $1", &[&clinic2])
                .await
                .unwrap()
                .get(0);
            if status == "active" {
                return restarting.elapsed();
            }
            assert!(
                restarting.elapsed() < Duration::from_secs(30),
                "the reconciler finishes the provisioning (still {status})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let clinics = rt.block_on(async {
        let r = login(&http, &second).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let token = r.json()["access_token"].as_str().unwrap().to_owned();
        let r = http
            .post(
                "/api/v1/patients",
                Some(&token),
                &patient_body("After", "Reconcile"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        assert_no_orphan(running.stack.as_ref().unwrap(), "eu-west").await
    });
    assert_eq!(clinics, 2);
    eprintln!(
        "provisioning cut short: registration answered 503 at once both times; the re-sent \
         registration converged in {}ms; the reconciler made the clinic active {}ms after the \
         worker restart began; no orphan database or role",
        ms(retry_took),
        ms(active_after),
    );
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client for the gateway drain test: it knows whether a request was
// written on a connection the server had not closed, and whether a whole answer
// came back.

#[derive(Debug)]
enum Outcome {
    /// A whole answer.
    Answered { status: u16, close: bool },
    /// The connection was refused: nothing was sent.
    Refused,
    /// The request was written but no whole answer came back.
    Dropped(String),
}

struct RawClient {
    addr: std::net::SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Kept-alive connections found closed by the server before a request was written.
    closed_idle: usize,
}

impl RawClient {
    /// Whether the server closed the kept-alive connection while it was idle.
    fn closed_by_server(conn: &BufReader<TcpStream>) -> bool {
        let mut byte = [0u8; 1];
        !conn.buffer().is_empty()
            || !matches!(conn.get_ref().try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn send(&mut self, request: &[u8]) -> Outcome {
        if self.conn.as_ref().is_some_and(Self::closed_by_server) {
            self.conn = None;
            self.closed_idle += 1;
        }
        if self.conn.is_none() {
            match TcpStream::connect(self.addr).await {
                Ok(s) => {
                    s.set_nodelay(true).unwrap();
                    self.conn = Some(BufReader::new(s));
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Outcome::Refused
                }
                Err(e) => panic!("connect: {e}"),
            }
        }
        let conn = self.conn.as_mut().unwrap();
        let exchange = async {
            conn.get_mut().write_all(request).await?;
            read_answer(conn).await
        };
        match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
            Ok(Ok((status, close))) => {
                if close {
                    self.conn = None;
                }
                Outcome::Answered { status, close }
            }
            Ok(Err(e)) => {
                self.conn = None;
                Outcome::Dropped(e.to_string())
            }
            Err(_) => {
                self.conn = None;
                Outcome::Dropped("no answer in time".into())
            }
        }
    }
}

/// Reads one whole HTTP/1.1 answer: the status and whether the server closes.
async fn read_answer(conn: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before any answer",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("closed in the head"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(|| bad("header"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = Some(value.parse::<usize>().map_err(|_| bad("length"))?),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk size"))?;
            let mut chunk = vec![0u8; size + 2];
            conn.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0u8; length.unwrap_or(0)];
        conn.read_exact(&mut body).await?;
    }
    Ok((status, close))
}

fn raw_request(method: &str, path: &str, token: &str, body: Option<&Value>) -> Vec<u8> {
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n");
    if !body.is_empty() {
        head.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend(body);
    bytes
}

#[derive(Debug)]
struct Exchange {
    sent: Instant,
    ended: Instant,
    outcome: Outcome,
}

/// SIGTERM to the gateway while 32 clients read and write on kept-alive
/// connections: every request that was written gets a whole answer (a success),
/// connections opened after the gateway stopped listening are refused (nothing
/// sent), and the gateway exits 0.
#[test]
fn the_gateway_stopped_under_load_answers_every_request_it_was_sent() {
    let _alone = crate::support::alone();
    let mut running = Running::start("gateway-drain", &["eu-west"], &[]);
    let rt = runtime();
    let addr = running.stack().gateway.addr;
    let http = Http::new(&running.stack().gateway_url());
    let targets = rt.block_on(async {
        let mut targets = Vec::new();
        for _ in 0..2 {
            let c = register(&http, None).await;
            let p = create_patient(&http, &c, patient_body("Drain", "Load")).await;
            targets.push((c.token, id(&p)));
        }
        targets
    });
    let exchanges = Arc::new(Mutex::new(Vec::<Exchange>::new()));
    let closed_idle = Arc::new(Mutex::new(0usize));
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (token, patient) = targets[c % targets.len()].clone();
            let (exchanges, closed_idle) = (exchanges.clone(), closed_idle.clone());
            rt.spawn(async move {
                let mut client = RawClient {
                    addr,
                    conn: None,
                    closed_idle: 0,
                };
                for i in 0usize.. {
                    let request = if (i + c) % 3 == 0 {
                        raw_request(
                            "POST",
                            "/api/v1/patients",
                            &token,
                            Some(&patient_body("Drain", &format!("c{c}i{i}"))),
                        )
                    } else {
                        raw_request("GET", &format!("/api/v1/patients/{patient}"), &token, None)
                    };
                    let sent = Instant::now();
                    let outcome = client.send(&request).await;
                    let refused = matches!(outcome, Outcome::Refused);
                    exchanges.lock().unwrap().push(Exchange {
                        sent,
                        ended: Instant::now(),
                        outcome,
                    });
                    if refused {
                        break;
                    }
                }
                *closed_idle.lock().unwrap() += client.closed_idle;
            })
        })
        .collect();
    // Under way: every client answered a few times (however busy the machine).
    let warm = Instant::now();
    while exchanges.lock().unwrap().len() < 96 && warm.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let terminated = Instant::now();
    running.stack().gateway.terminate();
    for c in clients {
        rt.block_on(c).unwrap();
    }
    let all_refused = terminated.elapsed();
    assert!(
        running.stack().gateway.wait(),
        "the gateway exits 0 after draining"
    );
    let exited = terminated.elapsed();

    let exchanges = std::mem::take(&mut *exchanges.lock().unwrap());
    let mut in_flight = 0;
    let mut after = 0;
    for e in &exchanges {
        match &e.outcome {
            Outcome::Answered { status, .. } => {
                assert!(
                    *status == 200 || *status == 201,
                    "a drained request succeeds: {e:?}"
                );
                if e.sent < terminated && e.ended > terminated {
                    in_flight += 1;
                }
                if e.sent >= terminated {
                    after += 1;
                }
            }
            Outcome::Refused => assert!(e.sent >= terminated, "refused only after SIGTERM: {e:?}"),
            Outcome::Dropped(why) => panic!(
                "a request sent {}ms {} SIGTERM got no whole answer: {why}",
                if e.sent >= terminated {
                    ms(e.sent - terminated)
                } else {
                    ms(terminated - e.sent)
                },
                if e.sent >= terminated {
                    "after"
                } else {
                    "before"
                }
            ),
        }
    }
    let answered = exchanges
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Answered { .. }))
        .count();
    let closes = exchanges
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Answered { close: true, .. }))
        .count();
    assert!(answered >= 64, "the load was real: {answered} answers");
    assert!(
        in_flight >= 8,
        "requests were in flight at SIGTERM: {in_flight}"
    );
    eprintln!(
        "gateway SIGTERM under 32 clients: {answered} answers, all successful, none dropped; \
         {in_flight} in flight at SIGTERM and {after} sent after it answered; {closes} answers \
         closed their connection; {} idle connections found closed before a request was \
         written; every client refused {}ms after SIGTERM; exit 0 after {}ms",
        *closed_idle.lock().unwrap(),
        ms(all_refused),
        ms(exited),
    );
}
