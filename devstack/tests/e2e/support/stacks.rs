//! Where the tests' stacks come from, and whose turn it is.
//!
//! - The **shared stack** ([`stack`]): started on first use, kept to the end. For
//!   tests that need a normal stack and create their own clinics.
//! - A **setup's stack** ([`Setup`], [`hold`]): for a module that runs its stack with
//!   settings of its own (low sign-up limits, a short upstream timeout, JSON logs…)
//!   or changes something stack-wide (a new master key, a region's template, a
//!   region-wide backup). Every test of such a module starts with
//!   `let _stack = hold(&SETUP);` and its helpers reach the stack with
//!   `stack_of(&SETUP)`. Started by the first holder; once nobody holds it, it is
//!   stopped as soon as a test of another setup begins (tests run in name order,
//!   so a module's tests run together and at most two setups' stacks are up besides
//!   the shared one).
//! - A test's **own stack** ([`options`], [`start`]): for a test that kills,
//!   restarts or stops processes; dropped at the end of the test.
//!
//! Turns: the harness runs two tests at a time. Every test that starts processes
//! or uses a stack first takes a [`turn`] (taken by [`hold`] too); a test whose
//! timings or load need the machine to itself takes [`alone`] instead, and runs
//! once the running tests are done, with no other test beside it.

use devstack::{Stack, StackOptions};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// The shared stack, started on first use.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| start(test_options("shared", &[], &[])))
}

/// The settings a module's stack runs with, on top of [`test_options`]'.
pub struct Setup {
    /// Names the stack's data directory; one per module.
    pub name: &'static str,
    /// Added to every service's environment.
    pub env: &'static [(&'static str, &'static str)],
    /// Added to every PostgreSQL server's configuration.
    pub server_conf: &'static [(&'static str, &'static str)],
}

/// A test's hold on its setup's stack (and its turn): taken first thing in the
/// test, released when the test ends, pass or fail.
pub struct Hold {
    setup: &'static str,
    stack: Arc<Stack>,
    _turn: Turn,
}

impl std::ops::Deref for Hold {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut stacks = lock(&STACKS);
        if let Some(e) = stacks.iter_mut().find(|e| e.setup == self.setup) {
            e.holders -= 1;
        }
    }
}

struct Entry {
    setup: &'static str,
    holders: usize,
    /// Filled once started; its own lock, so that starting one stack does not make
    /// the tests of another wait.
    stack: Arc<Mutex<Option<Arc<Stack>>>>,
}

static STACKS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a turn and holds `setup`'s stack, starting it if needed; stacks of other
/// setups that nobody holds are stopped first.
pub fn hold(setup: &'static Setup) -> Hold {
    let turn = take_turn(false);
    let slot = {
        let mut stacks = lock(&STACKS);
        match stacks.iter_mut().find(|e| e.setup == setup.name) {
            Some(e) => {
                e.holders += 1;
                e.stack.clone()
            }
            None => {
                let stack = Arc::new(Mutex::new(None));
                stacks.push(Entry {
                    setup: setup.name,
                    holders: 1,
                    stack: stack.clone(),
                });
                stack
            }
        }
    };
    stop_idle();
    let stack = lock(&slot)
        .get_or_insert_with(|| {
            Arc::new(start(test_options(
                setup.name,
                setup.env,
                setup.server_conf,
            )))
        })
        .clone();
    Hold {
        setup: setup.name,
        stack,
        _turn: turn,
    }
}

/// Stops the setups' stacks that no test holds. Outside the registry's lock: the
/// gateway and workers drain first.
fn stop_idle() {
    let idle: Vec<_> = {
        let mut stacks = lock(&STACKS);
        let mut idle = Vec::new();
        stacks.retain(|e| {
            if e.holders == 0 {
                idle.push(e.stack.clone());
            }
            e.holders > 0
        });
        idle
    };
    for stopped in idle {
        drop(lock(&stopped).take());
    }
}

/// `setup`'s stack, for the helpers of a test that holds it ([`hold`]).
pub fn stack_of(setup: &'static Setup) -> Arc<Stack> {
    let slot = lock(&STACKS)
        .iter()
        .find(|e| e.setup == setup.name)
        .map(|e| e.stack.clone())
        .unwrap_or_else(|| panic!("no test holds the {} stack: hold(&SETUP) first", setup.name));
    let stack = lock(&slot).clone();
    stack.unwrap_or_else(|| panic!("the {} stack is not started", setup.name))
}

/// The options every test stack starts from: a directory of its own under the
/// temp directory (named after `name` and this process), the gateway on a free
/// port, PostgreSQL fast and unsafe, short pool timers (the registry's trimming is
/// observable) and sign-up limits high enough for many clinics from one address
/// (the limits themselves are tested on a stack of their own, `attacks`), then
/// `env` and `server_conf`.
pub fn test_options(
    name: &str,
    env: &[(&str, &str)],
    server_conf: &[(&str, &str)],
) -> StackOptions {
    let mut options = options(name, &["eu-west", "eu-central"], &[]);
    options.log_level = "warn,worker=info,gateway=info".into();
    let defaults = [
        ("CLINIC_POOL_IDLE_SECS", "1"),
        ("CLINIC_POOL_INACTIVE_SECS", "4"),
        ("SIGNUPS_PER_ADDRESS_PER_HOUR", "100000"),
        ("SIGNUPS_PER_HOUR", "100000"),
        ("SIGNUPS_PROVISIONING_MAX", "1000"),
    ];
    options.extra_env = pairs(defaults.iter().chain(env));
    options.server_conf = pairs(server_conf.iter());
    options
}

/// The options of a test's own stack: `regions`, `env` and nothing else set
/// (logs at `warn`), in a directory named after `name` and this process.
pub fn options(name: &str, regions: &[&str], env: &[(&str, &str)]) -> StackOptions {
    clean_stale_dirs();
    let dir = std::env::temp_dir().join(format!("medicalpro-test-{}-{name}", std::process::id()));
    let mut options = StackOptions::new(env!("CARGO_BIN_EXE_devstack").into(), dir);
    options.listen = ([127, 0, 0, 1], 0).into();
    options.fast_unsafe = true;
    options.regions = regions.iter().map(|r| (*r).to_owned()).collect();
    options.log_level = "warn".into();
    options.extra_env = pairs(env.iter());
    options
}

fn pairs<'a>(kv: impl Iterator<Item = &'a (&'a str, &'a str)>) -> Vec<(String, String)> {
    kv.map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Starts a stack. `Stack::start` blocks on a runtime of its own: it runs on a
/// thread of its own, so this may be called from inside a test's runtime too.
pub fn start(options: StackOptions) -> Stack {
    std::thread::spawn(move || Stack::start(options))
        .join()
        .expect("stack thread")
        .expect("stack starts")
}

/// Removes the data directories left by test processes that are gone.
fn clean_stale_dirs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("medicalpro-test-") else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// A test's turn (see the module docs); released when dropped.
pub struct Turn {
    alone: bool,
}

#[derive(Default)]
struct Turns {
    running: usize,
    alone: bool,
    alone_waiting: usize,
}

static TURNS: Mutex<Turns> = Mutex::new(Turns {
    running: 0,
    alone: false,
    alone_waiting: 0,
});
static TURN_CHANGED: Condvar = Condvar::new();

/// A turn beside other tests: waits while a test runs alone or waits to. Stops
/// the setups' stacks nobody holds any more.
pub fn turn() -> Turn {
    let turn = take_turn(false);
    stop_idle();
    turn
}

/// A turn alone: waits for the running tests to end; none starts meanwhile.
/// Stops the setups' stacks nobody holds any more.
pub fn alone() -> Turn {
    let turn = take_turn(true);
    stop_idle();
    turn
}

fn take_turn(alone: bool) -> Turn {
    let mut t = lock(&TURNS);
    if !alone {
        while t.alone || t.alone_waiting > 0 {
            t = TURN_CHANGED.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        t.running += 1;
        return Turn { alone: false };
    }
    t.alone_waiting += 1;
    while t.alone || t.running > 0 {
        t = TURN_CHANGED.wait(t).unwrap_or_else(|e| e.into_inner());
    }
    t.alone_waiting -= 1;
    t.alone = true;
    Turn { alone: true }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut t = lock(&TURNS);
        if self.alone {
            t.alone = false;
        } else {
            t.running -= 1;
        }
        TURN_CHANGED.notify_all();
    }
}
