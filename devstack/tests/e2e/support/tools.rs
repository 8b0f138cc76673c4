//! Outside programs some tests run (`promtool`, `prometheus`, `haproxy`,
//! `kubectl`, Python's `aiosmtpd`): found on `PATH` (or by `python3`), or
//! skipped with one line saying how to install them, except under `CI=true`,
//! where a missing one fails the test.

use std::io::Write;
use std::path::PathBuf;

/// `name` on `PATH`, or `None` after printing one line saying what is skipped and
/// how to get it (`install`, e.g. `apt-get install prometheus`). Under `CI=true`
/// a missing tool fails the calling test instead.
pub fn tool(name: &str, skipped: &str, install: &str) -> Option<PathBuf> {
    if let Some(path) = find(name) {
        return Some(path);
    }
    missing(&format!("skipped: {skipped}: {name} not found — {install}"));
    None
}

/// Whether `python3` imports `module`; when it does not, as [`tool`] does for a
/// missing program.
pub fn python_module(module: &str, skipped: &str, install: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        missing(&format!(
            "skipped: {skipped}: python3 cannot import {module} — {install}"
        ));
    }
    found
}

/// Says what is skipped, or fails the test under `CI=true`.
fn missing(line: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{line} (CI=true: required)");
    }
    // Straight to stderr, past the harness's capture: seen even when tests pass.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
