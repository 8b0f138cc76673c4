//! Outside programs some tests run (`promtool`, `prometheus`, `haproxy`,
//! `kubectl`): found on `PATH`, or skipped with one line saying how to install
//! them, except under `CI=true`, where a missing one fails the test.

use std::io::Write;
use std::path::PathBuf;

/// `name` on `PATH`, or `None` after printing one line saying what is skipped and
/// how to get it (`install`, e.g. `apt-get install prometheus`). Under `CI=true`
/// a missing tool fails the calling test instead.
pub fn tool(name: &str, skipped: &str, install: &str) -> Option<PathBuf> {
    if let Some(path) = find(name) {
        return Some(path);
    }
    let line = format!("skipped: {skipped}: {name} not found — {install}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{line} (CI=true: required)");
    }
    // Straight to stderr, past the harness's capture: seen even when tests pass.
    let _ = writeln!(std::io::stderr(), "{line}");
    None
}

fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
