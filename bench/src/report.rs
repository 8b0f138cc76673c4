//! The printed report: the machine and settings, one table row per scenario (all
//! rounds together, plus each round's throughput), the throughput ratio against the
//! goal, errors in detail, and where the time goes: CPU per request by component
//! for both scenarios, and the product's latency as its services measure it.

use crate::breakdown::Snapshot;
use crate::cpu::{self, Usage};
use crate::load::Stats;
use crate::settings::{Settings, GOAL_RATIO};
use std::io::{self, Write};

/// One scenario's results over all rounds.
#[derive(Debug)]
pub struct Row {
    pub name: &'static str,
    pub total: Stats,
    /// Throughput of each measured round, in order.
    pub rounds: Vec<f64>,
    /// CPU used during the measured runs.
    pub cpu: Usage,
}

impl Row {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
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

fn cpu_table(out: &mut impl Write, baseline: &Row, product: &Row) -> io::Result<()> {
    let mut groups: Vec<&str> = baseline
        .cpu
        .ticks
        .keys()
        .chain(product.cpu.ticks.keys())
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
    writeln!(out, "  {:<36} {:>16} {:>16}", "", "baseline", "product")?;
    let line = |out: &mut dyn Write, label: &str, b: Option<u64>, p: Option<u64>| {
        writeln!(
            out,
            "  {label:<36} {:>16} {:>16}",
            baseline.cpu_cell(b),
            product.cpu_cell(p)
        )
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
        let b = used(baseline, g);
        let p = used(product, g);
        if b.is_some() || p.is_some() {
            line(out, g, b, p)?;
        }
    }
    line(
        out,
        "total, bench and its children",
        Some(baseline.cpu.ours()),
        Some(product.cpu.ours()),
    )?;
    line(
        out,
        cpu::OTHER,
        baseline.cpu.ticks.get(cpu::OTHER).copied(),
        product.cpu.ticks.get(cpu::OTHER).copied(),
    )?;
    Ok(())
}

/// Prints the whole report.
pub fn print(
    out: &mut impl Write,
    settings: &Settings,
    nproc: usize,
    baseline: &mut Row,
    product: &mut Row,
    breakdown: Option<Snapshot>,
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
    row(out, baseline)?;
    row(out, product)?;
    let base = baseline.total.rps();
    if base > 0.0 {
        let ratio = product.total.rps() / base;
        let verdict = if ratio >= GOAL_RATIO { "met" } else { "missed" };
        writeln!(
            out,
            "ratio product/baseline: {ratio:.2} (goal >= {GOAL_RATIO:.2}: {verdict})"
        )?;
    } else {
        writeln!(
            out,
            "ratio product/baseline: - (the baseline served nothing)"
        )?;
    }
    errors(out, baseline)?;
    errors(out, product)?;
    cpu_table(out, baseline, product)?;

    writeln!(out, "product time, mean per measured request:")?;
    writeln!(
        out,
        "  {:<46} {:>8} ms",
        "seen by the load generator",
        ms(product.total.mean_ms())
    )?;
    match breakdown {
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
