//! What the library's own tests need to start a real stack: the test binary runs
//! the gateway and workers itself. A stack started here is given a small script as
//! its `exe`, which runs this test binary again with `--exact` on [`component`]
//! and the component named in `MEDICALPRO_TEST_COMPONENT`: that test runs the
//! gateway or worker in place of a test, and exits with it. (`cargo test -p
//! devstack --lib` then needs no other binary, nor one built beforehand.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{Stack, StackOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

const COMPONENT_ENV: &str = "MEDICALPRO_TEST_COMPONENT";

/// In the test process: passes. Run by a stack's script: the gateway or worker.
#[test]
fn component() {
    let Ok(kind) = std::env::var(COMPONENT_ENV) else {
        return;
    };
    match kind.as_str() {
        "gateway" => gateway::main_entry(),
        "worker" => worker::main_entry(),
        other => {
            eprintln!("unknown component {other:?}");
            std::process::exit(2);
        }
    }
    std::process::exit(0);
}

/// This test's full name, as `--exact` wants it.
fn component_test_name() -> String {
    let module = module_path!();
    let path = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{path}::component")
}

/// Where a test's stack lives: under the temp directory, named after the test and
/// this process.
fn data_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("medicalpro-unit-{}-{name}", std::process::id()))
}

/// A stack started by [`start`]: stopped, and its directory removed, when dropped
/// (a failing test too).
pub struct TestStack(Option<Stack>);

impl std::ops::Deref for TestStack {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        self.0.as_ref().expect("the stack is there until dropped")
    }
}

impl std::ops::DerefMut for TestStack {
    fn deref_mut(&mut self) -> &mut Stack {
        self.0.as_mut().expect("the stack is there until dropped")
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if let Some(stack) = self.0.take() {
            let dir = stack.options.data_dir.clone();
            drop(stack);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts a stack of `regions` (fast, unsafe PostgreSQL; the gateway on a free
/// port) in a directory of its own. Call it outside any async runtime.
pub fn start(name: &str, regions: &[&str]) -> TestStack {
    clean_stale_dirs();
    let dir = data_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("component.sh");
    let exe = std::env::current_exe().unwrap();
    let quoted = exe.display().to_string().replace('\'', r"'\''");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# $1 is `{arg}`, $2 the component.\n{COMPONENT_ENV}=\"$2\" exec '{quoted}' --exact --nocapture --test-threads=1 {test}\n",
            arg = crate::process::COMPONENT_ARG,
            test = component_test_name(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut options = StackOptions::new(script, dir.clone());
    options.listen = ([127, 0, 0, 1], 0).into();
    options.regions = regions.iter().map(|r| (*r).to_owned()).collect();
    options.fast_unsafe = true;
    options.log_level = "warn".into();
    match Stack::start(options) {
        Ok(stack) => TestStack(Some(stack)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("the stack did not start: {e:#}");
        }
    }
}

/// Removes the directories of test processes that are gone.
fn clean_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("medicalpro-unit-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a process the test's stack started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}
