//! CPU and memory accounting from `/proc` (Linux): how many CPU ticks each part of
//! the bench used — the load generator's, the baseline's and the bare proxy's
//! threads in this process, the gateway and worker children, each PostgreSQL
//! server with its backends — and how much the rest of the machine used meanwhile.
//! Snapshots taken around a measured run give the CPU cost of one request per
//! component. Also: which child process is the gateway or a region's worker, and
//! its resident memory.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The part of the machine that is not this bench or its children.
pub const OTHER: &str = "other processes on the machine";

/// Ticks used so far, by group.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub ticks: BTreeMap<String, u64>,
}

impl Usage {
    /// What was used between `earlier` and `self`.
    pub fn minus(&self, earlier: &Usage) -> Usage {
        let ticks = self
            .ticks
            .iter()
            .map(|(k, v)| {
                let before = earlier.ticks.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(before))
            })
            .collect();
        Usage { ticks }
    }

    pub fn add(&mut self, other: &Usage) {
        for (k, v) in &other.ticks {
            *self.ticks.entry(k.clone()).or_default() += v;
        }
    }

    /// Ticks used by this bench and its children (everything but [`OTHER`]).
    pub fn ours(&self) -> u64 {
        self.ticks
            .iter()
            .filter(|(k, _)| k.as_str() != OTHER)
            .map(|(_, v)| v)
            .sum()
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as f64
    } else {
        100.0
    }
}

/// From a `stat` file: the parent, the ticks used (`utime + stime`, plus
/// `cutime + cstime` — reaped children — when `with_children`), and the name.
fn parse_stat(text: &str, with_children: bool) -> Option<(u32, u64, String)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state, ppid, …; utime, stime, cutime and cstime are fields
    // 14 to 17 of the whole line, i.e. 11 to 14 here.
    let ppid = fields.get(1)?.parse().ok()?;
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let mut ticks = field(11)? + field(12)?;
    if with_children {
        ticks += field(13)? + field(14)?;
    }
    Some((ppid, ticks, name))
}

fn read_stat(path: &Path, with_children: bool) -> Option<(u32, u64, String)> {
    parse_stat(&std::fs::read_to_string(path).ok()?, with_children)
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a direct child of the bench is, from its command line.
fn child_group(pid: u32) -> String {
    let args = cmdline(pid);
    if let Some(i) = args.iter().position(|a| a == "__component") {
        return args
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| "component".into());
    }
    if let Some(i) = args.iter().position(|a| a == "-D") {
        let dir = args
            .get(i + 1)
            .and_then(|d| Path::new(d).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let server = dir.strip_prefix("region-").unwrap_or(&dir);
        return format!("postgres {server}");
    }
    args.first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "child".into())
}

/// Busy ticks of the whole machine, from the first line of `/proc/stat`.
fn machine_busy() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user)
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// Reads the current usage. Threads of this process are grouped by their name
/// (the runtimes name theirs); children by what they run, each with its whole
/// process tree (exited descendants count through their parents' child times).
pub fn snapshot() -> Usage {
    let me = std::process::id();
    let mut ticks: BTreeMap<String, u64> = BTreeMap::new();

    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Some((_, t, name)) = read_stat(&task.path().join("stat"), false) {
                let group = match name.as_str() {
                    "bench-load" => "load generator",
                    "bench-baseline" => "baseline server",
                    "bench-proxy" => "bare proxy",
                    _ => "bench (other threads)",
                };
                *ticks.entry(group.to_owned()).or_default() += t;
            }
        }
    }

    let mut procs: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, t, _)) = read_stat(&e.path().join("stat"), true) {
                procs.insert(pid, (ppid, t));
            }
        }
    }
    let mut groups: HashMap<u32, String> = HashMap::new();
    for (&pid, &(_, t)) in &procs {
        // Walk up to the direct child of the bench, if this is a descendant.
        let mut cur = pid;
        let mut child = None;
        for _ in 0..64 {
            let Some(&(ppid, _)) = procs.get(&cur) else {
                break;
            };
            if ppid == me {
                child = Some(cur);
                break;
            }
            if ppid <= 1 {
                break;
            }
            cur = ppid;
        }
        if let Some(child) = child {
            let group = groups
                .entry(child)
                .or_insert_with(|| child_group(child))
                .clone();
            *ticks.entry(group).or_default() += t;
        }
    }

    if let Some(busy) = machine_busy() {
        let ours: u64 = ticks.values().sum();
        // Per-process ticks and machine ticks are sampled slightly apart; the
        // difference of two snapshots is what matters.
        ticks.insert(OTHER.into(), busy.saturating_sub(ours));
    }
    Usage { ticks }
}

/// This process's direct children.
fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            read_stat(Path::new(&format!("/proc/{pid}/stat")), false)
                .is_some_and(|(ppid, _, _)| ppid == me)
        })
        .collect()
}

/// The value of `key` in a process's environment.
fn env_of(pid: u32, key: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

/// The child running `__component <kind>` (`gateway` or `worker`); for a worker,
/// the one serving `region`.
pub fn component_pid(kind: &str, region: Option<&str>) -> Option<u32> {
    children().into_iter().find(|&pid| {
        let args = cmdline(pid);
        let is_kind = args
            .iter()
            .position(|a| a == "__component")
            .and_then(|i| args.get(i + 1))
            .is_some_and(|k| k == kind);
        is_kind && region.is_none_or(|r| env_of(pid, "REGION").as_deref() == Some(r))
    })
}

/// Resident memory of a process in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line =
            "1234 (tokio (rt) w) S 99 1234 1234 0 -1 4194560 100 0 0 0 250 75 7 3 20 0 4 0 5 0 0";
        let (ppid, ticks, name) = parse_stat(line, false).unwrap_or_default();
        assert_eq!(ppid, 99);
        assert_eq!(ticks, 325);
        assert_eq!(name, "tokio (rt) w");
        assert_eq!(parse_stat(line, true).map(|s| s.1), Some(335));
    }
}
