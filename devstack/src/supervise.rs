//! Watching the stack's children while the `devstack` command runs: every child
//! that ends is reaped at once (no zombie is left) and reported on the console,
//! then:
//!
//! - a PostgreSQL server (central or regional) that ends stops the whole stack:
//!   the gateway and workers drain, the other servers stop, and the command exits
//!   non-zero naming the server and its log. Nothing restarts it: a server that
//!   died under a dev stack is worth a look, and its data directory is kept as it
//!   was left;
//! - a worker or the gateway that ends is restarted after a back-off (1 s, 2 s,
//!   4 s), at most [`Policy::max_restarts`] times in a row; a service that then
//!   stays up for [`Policy::stable_after`] has its count reset. One that ends once
//!   more after the last restart, or is not ready within
//!   [`Policy::ready_timeout`] of a restart, stops the stack as a server would.
//!
//! [`Supervisor::poll`] does one round of checks (no waiting); [`watch`] runs
//! rounds on every `SIGCHLD` and every 250 ms until a signal to stop or a child
//! the stack cannot do without ends.

use crate::process;
use crate::stack::{Service, Stack};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// How ended services are restarted.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Restarts in a row before giving up on a service.
    pub max_restarts: u32,
    /// The wait before the first restart; doubled before each next one.
    pub first_backoff: Duration,
    /// A restarted service that stays up this long starts counting afresh.
    pub stable_after: Duration,
    /// A restarted service must answer `/readyz` within this time.
    pub ready_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            first_backoff: Duration::from_secs(1),
            stable_after: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// One of the stack's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// The central PostgreSQL server.
    Central,
    /// A region's PostgreSQL server.
    Server(String),
    /// A region's worker.
    Worker(String),
    /// The gateway.
    Gateway,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Central => f.write_str("central"),
            Who::Server(region) => write!(f, "region {region}"),
            Who::Worker(region) => write!(f, "worker {region}"),
            Who::Gateway => f.write_str("gateway"),
        }
    }
}

/// Why a service went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The process ended (it has been reaped).
    Exited(ExitStatus),
    /// It was restarted but did not become ready in time, and was killed.
    NotReady(Duration),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Exited(status) => f.write_str(&process::describe(*status)),
            Cause::NotReady(after) => write!(
                f,
                "not ready {} s after its restart, killed",
                after.as_secs()
            ),
        }
    }
}

/// What a round of checks found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A PostgreSQL server ended: the stack must stop.
    ServerExited {
        who: Who,
        status: ExitStatus,
        log: PathBuf,
    },
    /// A service went down; `restart_in` is the back-off before restart number
    /// `attempt`, or `None` when it was restarted too often already (the stack
    /// must stop).
    ServiceDown {
        who: Who,
        cause: Cause,
        restart_in: Option<Duration>,
        attempt: u32,
        max: u32,
        log: PathBuf,
    },
    /// A service was started again.
    Restarted { who: Who, pid: Option<u32> },
    /// A restarted service answers `/readyz` again.
    Ready { who: Who },
    /// A service could not be started again: the stack must stop.
    RestartFailed { who: Who, error: String },
}

impl Event {
    /// Whether the stack cannot go on after this.
    pub fn is_fatal(&self) -> bool {
        match self {
            Event::ServerExited { .. } | Event::RestartFailed { .. } => true,
            Event::ServiceDown { restart_in, .. } => restart_in.is_none(),
            Event::Restarted { .. } | Event::Ready { .. } => false,
        }
    }

    /// The child concerned.
    pub fn who(&self) -> &Who {
        match self {
            Event::ServerExited { who, .. }
            | Event::ServiceDown { who, .. }
            | Event::Restarted { who, .. }
            | Event::Ready { who }
            | Event::RestartFailed { who, .. } => who,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::ServerExited { who, status, log } => write!(
                f,
                "{who}: PostgreSQL {}; stopping the stack (its log: {})",
                process::describe(*status),
                log.display()
            ),
            Event::ServiceDown {
                who,
                cause,
                restart_in: Some(delay),
                attempt,
                max,
                log,
            } => write!(
                f,
                "{who}: {cause}; restarting in {:.1} s (restart {attempt} of {max}; its log: {})",
                delay.as_secs_f64(),
                log.display()
            ),
            Event::ServiceDown {
                who,
                cause,
                restart_in: None,
                max,
                log,
                ..
            } => write!(
                f,
                "{who}: {cause}; given up after {max} {} in a row, stopping the stack (its log: {})",
                if *max == 1 { "restart" } else { "restarts" },
                log.display()
            ),
            Event::Restarted { who, pid } => match pid {
                Some(pid) => write!(f, "{who}: restarted (pid {pid})"),
                None => write!(f, "{who}: restarted"),
            },
            Event::Ready { who } => write!(f, "{who}: ready again"),
            Event::RestartFailed { who, error } => {
                write!(f, "{who}: cannot be started again: {error}; stopping the stack")
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Running; up since then (or since the stack started).
    Up(Instant),
    /// Down, to be started again then.
    Waiting(Instant),
    /// Started again then, not ready yet.
    Starting(Instant),
    /// Given up on.
    Failed,
}

#[derive(Debug)]
struct Watched {
    who: Who,
    state: State,
    /// Restarts in a row.
    restarts: u32,
}

/// The watch over one stack's children (see the module's description).
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    services: Vec<Watched>,
}

impl Supervisor {
    /// Watches the gateway and every worker of `stack`, counted as up from now.
    pub fn new(stack: &Stack, policy: Policy) -> Self {
        let now = Instant::now();
        let services = std::iter::once(Who::Gateway)
            .chain(stack.regions.iter().map(|r| Who::Worker(r.name.clone())))
            .map(|who| Watched {
                who,
                state: State::Up(now),
                restarts: 0,
            })
            .collect();
        Self { policy, services }
    }

    /// One round: reaps and reports every child that ended, starts services whose
    /// back-off is over, and notes restarted services that became ready. Never
    /// waits, beyond a `/readyz` request to a service being restarted.
    pub fn poll(&mut self, stack: &mut Stack, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(status) = stack.central.try_exit() {
            events.push(Event::ServerExited {
                who: Who::Central,
                status,
                log: stack.central.log_path(),
            });
        }
        for region in &mut stack.regions {
            if let Some(status) = region.server.try_exit() {
                events.push(Event::ServerExited {
                    who: Who::Server(region.name.clone()),
                    status,
                    log: region.server.log_path(),
                });
            }
        }
        for watched in &mut self.services {
            let service = match &watched.who {
                Who::Gateway => Some(&mut stack.gateway),
                Who::Worker(name) => stack
                    .regions
                    .iter_mut()
                    .find(|r| &r.name == name)
                    .map(|r| &mut r.worker),
                Who::Central | Who::Server(_) => None,
            };
            if let Some(service) = service {
                if let Some(event) = step(&self.policy, watched, service, now) {
                    events.push(event);
                }
            }
        }
        events
    }
}

/// Moves one service's watch along; what happened, if anything.
fn step(
    policy: &Policy,
    watched: &mut Watched,
    service: &mut Service,
    now: Instant,
) -> Option<Event> {
    match watched.state {
        State::Up(since) => {
            if now.saturating_duration_since(since) >= policy.stable_after {
                watched.restarts = 0;
            }
            let status = service.try_exit()?;
            Some(down(policy, watched, service, Cause::Exited(status), now))
        }
        State::Waiting(at) => {
            if now < at {
                return None;
            }
            match service.spawn() {
                Ok(()) => {
                    watched.state = State::Starting(now);
                    Some(Event::Restarted {
                        who: watched.who.clone(),
                        pid: service.pid(),
                    })
                }
                Err(e) => {
                    watched.state = State::Failed;
                    Some(Event::RestartFailed {
                        who: watched.who.clone(),
                        error: format!("{e:#}"),
                    })
                }
            }
        }
        State::Starting(since) => {
            if let Some(status) = service.try_exit() {
                return Some(down(policy, watched, service, Cause::Exited(status), now));
            }
            if service.is_ready() {
                watched.state = State::Up(now);
                return Some(Event::Ready {
                    who: watched.who.clone(),
                });
            }
            let waited = now.saturating_duration_since(since);
            if waited < policy.ready_timeout {
                return None;
            }
            service.kill();
            Some(down(policy, watched, service, Cause::NotReady(waited), now))
        }
        State::Failed => None,
    }
}

/// Records that a service went down and decides whether it is started again.
fn down(
    policy: &Policy,
    watched: &mut Watched,
    service: &Service,
    cause: Cause,
    now: Instant,
) -> Event {
    let restart_in = (watched.restarts < policy.max_restarts)
        .then(|| policy.first_backoff * 2u32.saturating_pow(watched.restarts));
    match restart_in {
        Some(delay) => {
            watched.restarts += 1;
            watched.state = State::Waiting(now + delay);
        }
        None => watched.state = State::Failed,
    }
    Event::ServiceDown {
        who: watched.who.clone(),
        cause,
        restart_in,
        attempt: watched.restarts,
        max: policy.max_restarts,
        log: service.log_path().to_owned(),
    }
}

/// Why [`watch`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The stop signal came (Ctrl-C, SIGTERM).
    Signal,
    /// A child the stack cannot do without ended; the event says which.
    Failed(Event),
}

/// Watches `stack`'s children until `stop` completes or one of them ends for good,
/// handing every event to `report` as it happens. The caller stops the stack
/// afterwards ([`Stack::stop`]). Must run on a Tokio runtime with signals enabled.
pub async fn watch(
    stack: &mut Stack,
    policy: Policy,
    stop: impl Future<Output = ()>,
    mut report: impl FnMut(&Event),
) -> Ended {
    use tokio::signal::unix::{signal, SignalKind};
    let mut supervisor = Supervisor::new(stack, policy);
    // SIGCHLD wakes a round at once; the tick catches anything else (a back-off
    // that is over, a restarted service becoming ready).
    let mut children = signal(SignalKind::child()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return Ended::Signal,
            Some(()) = async {
                match children.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = tick.tick() => {}
        }
        let mut fatal = None;
        for event in supervisor.poll(stack, Instant::now()) {
            report(&event);
            if fatal.is_none() && event.is_fatal() {
                fatal = Some(event);
            }
        }
        if let Some(event) = fatal {
            return Ended::Failed(event);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_support;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn messages_name_the_child_and_how_it_ended() {
        let killed = Event::ServerExited {
            who: Who::Server("eu-west".into()),
            status: ExitStatus::from_raw(libc::SIGKILL),
            log: "/d/region-eu-west.log".into(),
        };
        assert_eq!(
            killed.to_string(),
            "region eu-west: PostgreSQL killed by signal 9 (SIGKILL); stopping the stack (its log: /d/region-eu-west.log)"
        );
        assert!(killed.is_fatal());
        let restarting = Event::ServiceDown {
            who: Who::Worker("eu-west".into()),
            cause: Cause::Exited(ExitStatus::from_raw(1 << 8)),
            restart_in: Some(Duration::from_secs(2)),
            attempt: 2,
            max: 3,
            log: "/d/logs/worker-eu-west.log".into(),
        };
        assert_eq!(
            restarting.to_string(),
            "worker eu-west: exited with status 1; restarting in 2.0 s (restart 2 of 3; its log: /d/logs/worker-eu-west.log)"
        );
        assert!(!restarting.is_fatal());
        let Event::ServiceDown {
            who,
            cause,
            max,
            log,
            ..
        } = restarting
        else {
            unreachable!()
        };
        let given_up = Event::ServiceDown {
            who,
            cause,
            restart_in: None,
            attempt: 3,
            max,
            log,
        };
        assert!(given_up.is_fatal());
        assert!(given_up
            .to_string()
            .contains("; given up after 3 restarts in a row, stopping the stack (its log: "));
        assert_eq!(
            Event::Ready { who: Who::Gateway }.to_string(),
            "gateway: ready again"
        );
    }

    /// A stack with one region: a worker killed is reported, restarted and ready
    /// again; killed once more than the policy allows, it is given up on; its
    /// PostgreSQL server killed is reaped at once (no zombie left), reported, and
    /// ends the watch so the stack is stopped, every child with it.
    #[test]
    fn a_killed_worker_restarts_and_a_killed_server_stops_the_stack() {
        let mut stack = test_support::start("supervise", &["eu-west"]);
        let policy = Policy {
            max_restarts: 1,
            first_backoff: Duration::from_millis(200),
            ..Policy::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();

        // A worker killed: reported, restarted after the back-off, ready again.
        let worker_pid = stack.regions[0].worker.pid().unwrap();
        test_support::kill(worker_pid, libc::SIGKILL);
        let mut supervisor = Supervisor::new(&stack, policy.clone());
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while !seen.iter().any(|e| matches!(e, Event::Ready { .. })) {
            assert!(Instant::now() < deadline, "no restart: {seen:?}");
            seen.extend(supervisor.poll(&mut stack, Instant::now()));
            std::thread::sleep(Duration::from_millis(50));
        }
        let who = Who::Worker("eu-west".into());
        let lines: Vec<String> = seen.iter().map(ToString::to_string).collect();
        assert!(
            lines[0].starts_with(
                "worker eu-west: killed by signal 9 (SIGKILL); restarting in 0.2 s (restart 1 of 1; its log: "
            ),
            "{lines:?}"
        );
        assert!(matches!(&seen[1], Event::Restarted { who: w, pid: Some(_) } if *w == who));
        assert_eq!(seen[2], Event::Ready { who: who.clone() });
        assert_eq!(seen.len(), 3, "{lines:?}");
        assert_eq!(
            process::proc_state(worker_pid),
            None,
            "the killed worker was reaped"
        );
        assert!(stack.regions[0].worker.is_ready());

        // Killed again: no restart left, the stack cannot go on.
        let worker_pid = stack.regions[0].worker.pid().unwrap();
        test_support::kill(worker_pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        let given_up = loop {
            let mut events = supervisor.poll(&mut stack, Instant::now());
            if let Some(event) = events.pop() {
                assert!(events.is_empty(), "{events:?}");
                break event;
            }
            assert!(Instant::now() < deadline, "the second kill went unnoticed");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(given_up.is_fatal(), "{given_up:?}");
        assert!(
            given_up.to_string().starts_with(
                "worker eu-west: killed by signal 9 (SIGKILL); given up after 1 restart in a row, stopping the stack (its log: "
            ),
            "{given_up}"
        );
        assert_eq!(process::proc_state(worker_pid), None, "reaped");
        std::thread::sleep(policy.first_backoff * 2);
        assert_eq!(
            supervisor.poll(&mut stack, Instant::now()),
            vec![],
            "no restart"
        );
        assert_eq!(stack.regions[0].worker.pid(), None);

        // Its PostgreSQL server killed: a zombie until the watch reaps it.
        let server_pid = stack.regions[0].server.pid().unwrap();
        test_support::kill(server_pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while process::proc_state(server_pid) != Some('Z') {
            assert!(
                Instant::now() < deadline,
                "the killed server never became a zombie"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut reported = Vec::new();
        let started = Instant::now();
        let ended = runtime.block_on(watch(&mut stack, policy, std::future::pending(), |e| {
            reported.push(e.to_string())
        }));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "reported at once"
        );
        let Ended::Failed(event) = ended else {
            panic!("the watch went on after its server died: {ended:?}")
        };
        assert_eq!(*event.who(), Who::Server("eu-west".into()));
        assert!(event.is_fatal());
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(
            reported[0].starts_with(
                "region eu-west: PostgreSQL killed by signal 9 (SIGKILL); stopping the stack (its log: "
            ),
            "{reported:?}"
        );
        assert_ne!(
            process::proc_state(server_pid),
            Some('Z'),
            "the dead server is reaped"
        );

        // The outcome: the stack stops cleanly, leaving nothing behind.
        let others: Vec<u32> = [stack.central.pid(), stack.gateway.pid()]
            .into_iter()
            .map(|p| p.expect("still running"))
            .collect();
        stack.stop();
        for pid in others {
            assert_eq!(process::proc_state(pid), None, "pid {pid} left behind");
        }
        drop(stack);
    }
}
