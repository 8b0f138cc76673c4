//! Child processes that die with the stack: every child is spawned from one
//! long-lived thread with `PR_SET_PDEATHSIG`, so a test binary or a devstack that
//! exits (or crashes) takes its PostgreSQL servers and services with it. Each child
//! leads a process group of its own, so a Ctrl-C at the terminal reaches the
//! devstack alone, which then stops its children in order (gateway, workers,
//! PostgreSQL) instead of all of them at once. [`describe`] says how a child ended.

use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// The argument that turns a stack-aware binary into a gateway or worker.
pub const COMPONENT_ARG: &str = "__component";

type Request = (Command, libc::c_int, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("devstack-spawner".into())
            .spawn(move || {
                for (mut cmd, signal, reply) in rx {
                    let _ = reply.send(spawn_here(&mut cmd, signal));
                }
                // Keep the thread (the children's parent) alive for the process.
                loop {
                    std::thread::park();
                }
            });
        if let Err(e) = thread {
            eprintln!("devstack: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

fn spawn_here(cmd: &mut Command, signal: libc::c_int) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.process_group(0);
    cmd.spawn()
}

/// Spawns `cmd`; the child receives `signal` when this process ends.
pub fn spawn(cmd: Command, signal: libc::c_int) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((cmd, signal, tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// Sends `signal` to a child.
pub fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Signals a child and waits up to `timeout` for it, then kills it.
pub fn stop(child: &mut Child, sig: libc::c_int, timeout: std::time::Duration) {
    signal(child, sig);
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How a child ended, for the console: `exited with status 1`, `killed by signal 9
/// (SIGKILL)`.
pub fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = signal_name(sig)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("killed by signal {sig}{name}{core}")
        }
        None => status.to_string(),
    }
}

fn signal_name(sig: libc::c_int) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// The state letter of process `pid` from `/proc/<pid>/stat` (`R`, `S`, `Z` for a
/// zombie…), or `None` when there is no such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn statuses_are_described_for_people() {
        assert_eq!(
            describe(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
        assert_eq!(describe(ExitStatus::from_raw(0)), "exited with status 0");
        assert_eq!(
            describe(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(11 | 0x80)),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
        assert_eq!(describe(ExitStatus::from_raw(64)), "killed by signal 64");
    }

    #[test]
    fn proc_state_reads_this_process() {
        assert!(matches!(proc_state(std::process::id()), Some('R' | 'S')));
        assert_eq!(proc_state(u32::MAX), None);
    }
}
