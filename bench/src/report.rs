//! The printed report: the machine and settings, one table row per scenario (all
//! rounds together, plus each round's throughput), each scenario's throughput as a
//! ratio of the baseline (the read scenario against its goal), the mixed scenario
//! by operation, errors in detail, and where the time goes: CPU per request by
//! component for every scenario, and the read's latency as its services measure it.

use crate::breakdown::Snapshot;
use crate::cpu::{self, Usage};
use crate::load::Stats;
use crate::settings::{Settings, GOAL_RATIO};
use std::io::{self, Write};

/// One scenario's results over all rounds.
#[derive(Debug)]
pub struct Row {
    pub name: String,
    /// A short name for the CPU table's column.
    pub label: &'static str,
    /// The intended share of each operation in percent, for workloads of several.
    pub weights: Vec<(&'static str, u32)>,
    pub total: Stats,
    /// Throughput of each measured round, in order.
    pub rounds: Vec<f64>,
    /// CPU used during the measured runs.
    pub cpu: Usage,
}

impl Row {
    pub fn new(name: impl Into<String>, label: &'static str) -> Self {
        Self {
            name: name.into(),
            label,
            weights: Vec::new(),
            total: Stats::default(),
            rounds: Vec::new(),
            cpu: Usage::default(),
        }
    }

    pub fn add(&mut self, run: Stats, cpu: &Usage) {
        self.rounds.push(run.rps());
        self.total.merge(run);
        self.cpu.add(cpu);
    }

    /// CPU microseconds per completed request, and cores kept busy, of `ticks`.
    fn per_request(&self, ticks: u64) -> (f64, f64) {
        let cpu_secs = ticks as f64 / cpu::ticks_per_sec();
        let requests = (self.total.ok + self.total.errors).max(1) as f64;
        let wall = self.total.elapsed.as_secs_f64().max(f64::EPSILON);
        (cpu_secs * 1e6 / requests, cpu_secs / wall)
    }

    fn cpu_cell(&self, ticks: Option<u64>) -> String {
        match ticks {
            Some(t) => {
                let (us, cores) = self.per_request(t);
                format!("{us:>7.0} ({cores:.2})")
            }
            None => format!("{:>7}", "-"),
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn row(out: &mut impl Write, row: &mut Row) -> io::Result<()> {
    let rounds: Vec<String> = row.rounds.iter().map(|r| format!("{r:.1}")).collect();
    let p50 = ms(row.total.percentile_ms(50.0));
    let p99 = ms(row.total.percentile_ms(99.0));
    writeln!(
        out,
        "{:<38} {:<10.1} {:<8} {:<8} {:<8} {}",
        row.name,
        row.total.rps(),
        p50,
        p99,
        row.total.errors,
        rounds.join(" ")
    )
}

fn errors(out: &mut impl Write, row: &Row) -> io::Result<()> {
    if row.total.errors == 0 {
        return Ok(());
    }
    let kinds: Vec<String> = row
        .total
        .error_kinds
        .iter()
        .map(|(kind, n)| format!("{kind} x{n}"))
        .collect();
    writeln!(out, "errors of {}: {}", row.name, kinds.join(", "))?;
    if let Some(first) = &row.total.first_error {
        writeln!(out, "  first: {first}")?;
    }
    Ok(())
}

/// Where the groups go in the CPU table: the bench's own parts, the services,
/// the databases, then anything else.
fn group_rank(name: &str) -> (u8, &str) {
    let rank = match name {
        "load generator" => 0,
        "baseline server" => 1,
        "gateway" => 2,
        "worker" => 3,
        n if n.starts_with("postgres central") => 5,
        n if n.starts_with("postgres") => 4,
        _ => 6,
    };
    (rank, name)
}

fn cpu_table(out: &mut impl Write, rows: &[&Row]) -> io::Result<()> {
    let mut groups: Vec<&str> = rows
        .iter()
        .flat_map(|r| r.cpu.ticks.keys())
        .map(String::as_str)
        .filter(|g| *g != cpu::OTHER)
        .collect();
    groups.sort_by_key(|g| group_rank(g));
    groups.dedup();
    writeln!(
        out,
        "CPU per request in microseconds (cores busy), measured runs; {:.0} ticks/s:",
        cpu::ticks_per_sec()
    )?;
    let header: String = rows.iter().map(|r| format!(" {:>16}", r.label)).collect();
    writeln!(out, "  {:<36}{header}", "")?;
    let line = |out: &mut dyn Write, label: &str, ticks: &dyn Fn(&Row) -> Option<u64>| {
        let cells: String = rows
            .iter()
            .map(|r| format!(" {:>16}", r.cpu_cell(ticks(r))))
            .collect();
        writeln!(out, "  {label:<36}{cells}")
    };
    // Groups that used less than a microsecond per request are left out.
    let used = |row: &Row, g: &str| {
        row.cpu
            .ticks
            .get(g)
            .copied()
            .filter(|t| row.per_request(*t).0 >= 0.5)
    };
    for g in groups {
        if rows.iter().any(|r| used(r, g).is_some()) {
            line(out, g, &|r| used(r, g))?;
        }
    }
    line(out, "total, bench and its children", &|r| {
        Some(r.cpu.ours())
    })?;
    line(out, cpu::OTHER, &|r| r.cpu.ticks.get(cpu::OTHER).copied())?;
    Ok(())
}

/// The operations of a workload of several: intended weight, share of the
/// completed requests, throughput, latency and errors of each.
fn operations(out: &mut impl Write, row: &mut Row) -> io::Result<()> {
    if row.total.ops.is_empty() {
        return Ok(());
    }
    let done = (row.total.ok + row.total.errors).max(1) as f64;
    writeln!(out, "{} by operation:", row.name)?;
    writeln!(
        out,
        "  {:<30} {:>6} {:>6} {:>9} {:>8} {:>8} {:>7}",
        "operation", "weight", "share", "req/s", "p50 ms", "p99 ms", "errors"
    )?;
    for (name, stats) in &mut row.total.ops {
        let weight = row
            .weights
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| "-".into(), |(_, w)| format!("{w}%"));
        let share = (stats.ok + stats.errors) as f64 * 100.0 / done;
        let p50 = ms(stats.percentile_ms(50.0));
        let p99 = ms(stats.percentile_ms(99.0));
        writeln!(
            out,
            "  {:<30} {:>6} {:>5.1}% {:>9.1} {:>8} {:>8} {:>7}",
            name,
            weight,
            share,
            stats.rps(),
            p50,
            p99,
            stats.errors
        )?;
    }
    Ok(())
}

/// Everything measured in one bench run.
#[derive(Debug)]
pub struct Results {
    pub baseline: Row,
    /// The single-read scenario, when run.
    pub read: Option<Row>,
    /// The mixed scenario, when run.
    pub mixed: Option<Row>,
    /// The read scenario's service metrics, when run and scraped.
    pub breakdown: Option<Snapshot>,
}

fn ratio(out: &mut impl Write, base: f64, row: &Row, goal: Option<f64>) -> io::Result<()> {
    let name = row.label;
    if base <= 0.0 {
        return writeln!(
            out,
            "ratio {name}/baseline: - (the baseline served nothing)"
        );
    }
    let ratio = row.total.rps() / base;
    match goal {
        Some(goal) => {
            let verdict = if ratio >= goal { "met" } else { "missed" };
            writeln!(
                out,
                "ratio {name}/baseline: {ratio:.2} (goal >= {goal:.2}: {verdict})"
            )
        }
        None => writeln!(out, "ratio {name}/baseline: {ratio:.2}"),
    }
}

/// Prints the whole report.
pub fn print(
    out: &mut impl Write,
    settings: &Settings,
    nproc: usize,
    results: &mut Results,
) -> io::Result<()> {
    writeln!(
        out,
        "machine: {nproc} CPUs (available_parallelism); concurrency {}; {} round(s) x {:.1} s per scenario, {:.1} s warm-up before each; baseline uses {} PostgreSQL connection(s)",
        settings.concurrency,
        settings.rounds,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        settings.pg_conns,
    )?;
    if !settings.service_env.is_empty() {
        let env: Vec<String> = settings
            .service_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(out, "service environment: {}", env.join(" "))?;
    }
    writeln!(
        out,
        "{:<38} {:<10} {:<8} {:<8} {:<8} req/s per round",
        "scenario", "req/s", "p50 ms", "p99 ms", "errors"
    )?;
    row(out, &mut results.baseline)?;
    for r in [&mut results.read, &mut results.mixed]
        .into_iter()
        .flatten()
    {
        row(out, r)?;
    }
    let base = results.baseline.total.rps();
    if let Some(read) = &results.read {
        ratio(out, base, read, Some(GOAL_RATIO))?;
    }
    if let Some(mixed) = &results.mixed {
        ratio(out, base, mixed, None)?;
    }
    if let Some(mixed) = &mut results.mixed {
        operations(out, mixed)?;
    }
    errors(out, &results.baseline)?;
    for r in [&results.read, &results.mixed].into_iter().flatten() {
        errors(out, r)?;
    }
    let rows: Vec<&Row> = std::iter::once(&results.baseline)
        .chain(results.read.iter())
        .chain(results.mixed.iter())
        .collect();
    cpu_table(out, &rows)?;

    let Some(read) = &results.read else {
        return Ok(());
    };
    writeln!(out, "read scenario time, mean per measured request:")?;
    writeln!(
        out,
        "  {:<46} {:>8} ms",
        "seen by the load generator",
        ms(read.total.mean_ms())
    )?;
    match results.breakdown {
        Some(b) => {
            let lines = [
                (
                    "gateway: proxied request (incl. worker hop)",
                    b.gateway_proxy,
                ),
                (
                    "worker: patient read (checks, pool, audited SQL)",
                    b.worker_read,
                ),
                ("worker: clinic pool acquire", b.pool_acquire),
            ];
            for (label, h) in lines {
                writeln!(
                    out,
                    "  {label:<46} {:>8} ms  ({} samples)",
                    ms(h.mean_ms()),
                    h.count
                )?;
            }
        }
        None => writeln!(out, "  (service metrics could not be scraped)")?,
    }
    Ok(())
}
