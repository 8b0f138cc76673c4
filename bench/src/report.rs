//! The printed report: the machine and settings; ONE summary table with every
//! figure as a ratio of its in-run reference and its goal; then the details: each
//! throughput run (all rounds together, plus each round's throughput), the mixed
//! scenario by operation, errors, CPU per request by component for every run, the
//! read's latency as its services measure it, and each figure's notes (setup
//! times, statements by origin, memory before and after).

use crate::breakdown::Snapshot;
use crate::cpu::{self, Usage};
use crate::load::Stats;
use crate::settings::{Figure, Settings};
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
    /// The services' own measurements over the measured runs (`None` when a
    /// scrape failed or the run does not go through the services).
    pub service: Option<Snapshot>,
    /// New sessions the regional PostgreSQL server counted during the measured
    /// runs (`None` when it could not be read).
    pub sessions: Option<i64>,
    observed: bool,
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
            service: None,
            sessions: None,
            observed: true,
        }
    }

    /// Adds what the services and the regional server measured during one run;
    /// one missing reading makes the whole row's unknown.
    pub fn observe(&mut self, service: Option<Snapshot>, sessions: Option<i64>) {
        if !self.observed {
            return;
        }
        match (service, sessions) {
            (Some(s), Some(n)) => {
                self.service = Some(self.service.map_or(s, |acc| acc.plus(s)));
                self.sessions = Some(self.sessions.unwrap_or(0) + n);
            }
            _ => {
                self.observed = false;
                self.service = None;
                self.sessions = None;
            }
        }
    }

    pub fn add(&mut self, run: Stats, cpu: &Usage) {
        self.rounds.push(run.rps());
        self.total.merge(run);
        self.cpu.add(cpu);
    }

    /// CPU microseconds per completed request of `group` (a [`cpu_table`] row),
    /// if it ran at all.
    pub fn cpu_us(&self, group: &str) -> Option<f64> {
        self.cpu.ticks.get(group).map(|t| self.per_request(*t).0)
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
        "{:<46} {:<10.1} {:<8} {:<8} {:<8} {}",
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
        "baseline server" | "bare proxy" => 1,
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

/// One line of the summary table: a figure, its in-run reference, their ratio
/// and the goal.
#[derive(Clone, Debug)]
pub struct Line {
    pub figure: Figure,
    pub what: String,
    pub value: String,
    pub reference: String,
    pub ratio: Option<f64>,
    /// The goal as text, and whether this run met it.
    pub goal: Option<(String, bool)>,
}

impl Line {
    pub fn new(
        figure: Figure,
        what: impl Into<String>,
        value: impl Into<String>,
        reference: impl Into<String>,
        ratio: Option<f64>,
    ) -> Self {
        Self {
            figure,
            what: what.into(),
            value: value.into(),
            reference: reference.into(),
            ratio,
            goal: None,
        }
    }

    /// The ratio must be at least `min` (and `also` must hold).
    pub fn at_least(mut self, min: f64, also: Option<(&str, bool)>) -> Self {
        let ok = self.ratio.is_some_and(|r| r >= min);
        self.goal = Some(match also {
            Some((text, holds)) => (format!(">= {min:.2}, {text}"), ok && holds),
            None => (format!(">= {min:.2}"), ok),
        });
        self
    }

    /// The ratio must be at most `max`.
    pub fn at_most(mut self, max: f64) -> Self {
        let ok = self.ratio.is_some_and(|r| r <= max);
        self.goal = Some((format!("<= {max:.2}"), ok));
        self
    }

    /// A goal judged by the caller: its text and whether this run met it.
    pub fn judged(mut self, text: impl Into<String>, met: bool) -> Self {
        self.goal = Some((text.into(), met));
        self
    }

    /// The ratio must be zero.
    pub fn zero(mut self) -> Self {
        let ok = self.ratio.is_some_and(|r| r == 0.0);
        self.goal = Some(("= 0".into(), ok));
        self
    }
}

/// What kept the machine busy over `wall`, in cores, by group (largest first,
/// groups under 0.01 core left out).
pub fn busy(usage: &Usage, wall: std::time::Duration) -> String {
    let secs = wall.as_secs_f64().max(f64::EPSILON);
    let mut groups: Vec<(&str, f64)> = usage
        .ticks
        .iter()
        .map(|(g, t)| (g.as_str(), *t as f64 / cpu::ticks_per_sec() / secs))
        .filter(|(_, cores)| *cores >= 0.01)
        .collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    let parts: Vec<String> = groups
        .iter()
        .map(|(g, cores)| format!("{g} {cores:.2}"))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// `ratio` of `value` to `reference`, if the reference is not zero.
pub fn ratio(value: f64, reference: f64) -> Option<f64> {
    (reference > 0.0 && value.is_finite()).then(|| value / reference)
}

/// A number with thin groups of three digits (`14 906`), `decimals` after the point.
pub fn num(v: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    let sign = if v < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: f64) -> String {
    format!("{} MiB", num(bytes / 1_048_576.0, 1))
}

fn ratio_cell(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r != 0.0 && r.abs() < 0.01 => format!("{r:.4}"),
        Some(r) => format!("{r:.2}"),
    }
}

/// Everything measured in one bench run.
#[derive(Debug, Default)]
pub struct Results {
    /// Throughput runs, the baseline first.
    pub rows: Vec<Row>,
    /// The summary table.
    pub lines: Vec<Line>,
    /// Details of the figures, printed after the tables.
    pub notes: Vec<String>,
}

/// Where a request's time goes, per run, as the services measure it, and how
/// many clinic connections had to be made for it.
fn service_table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    let observed: Vec<&Row> = rows.iter().filter(|r| r.service.is_some()).collect();
    if observed.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "per measured request (means; ms unless said): seen by the load generator, the gateway's proxied request (incl. worker hop), the worker's patient read, its clinic-connection wait; pool evictions and new regional PostgreSQL sessions per request:"
    )?;
    writeln!(
        out,
        "  {:<46} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "", "client", "gateway", "worker", "pool wait", "evictions", "sessions"
    )?;
    for r in observed {
        let Some(b) = r.service else { continue };
        let requests = (r.total.ok + r.total.errors).max(1) as f64;
        let cell = |h: crate::breakdown::Histo| ms(h.mean_ms());
        writeln!(
            out,
            "  {:<46} {:>9} {:>9} {:>9} {:>9} {:>10.3} {:>10}",
            r.name,
            ms(r.total.mean_ms()),
            cell(b.gateway_proxy),
            cell(b.worker_read),
            cell(b.pool_acquire),
            b.evictions / requests,
            r.sessions
                .map_or_else(|| "-".into(), |n| format!("{:.3}", n as f64 / requests)),
        )?;
    }
    Ok(())
}

fn summary(out: &mut impl Write, lines: &[Line]) -> io::Result<()> {
    let width = |cell: fn(&Line) -> &str, title: &str| {
        lines
            .iter()
            .map(|l| cell(l).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let figure = width(|l| l.figure.name(), "figure");
    let what = width(|l| &l.what, "measured");
    let value = width(|l| &l.value, "value");
    let reference = width(|l| &l.reference, "in-run reference");
    writeln!(
        out,
        "{:<figure$}  {:<what$}  {:<value$}  {:<reference$}  {:>7}  goal",
        "figure", "measured", "value", "in-run reference", "ratio"
    )?;
    for l in lines {
        let goal = match &l.goal {
            Some((text, true)) => format!("{text}: met"),
            Some((text, false)) => format!("{text}: MISSED"),
            None => "-".into(),
        };
        writeln!(
            out,
            "{:<figure$}  {:<what$}  {:<value$}  {:<reference$}  {:>7}  {goal}",
            l.figure.name(),
            l.what,
            l.value,
            l.reference,
            ratio_cell(l.ratio)
        )?;
    }
    Ok(())
}

/// Prints the whole report.
pub fn print(
    out: &mut impl Write,
    settings: &Settings,
    nproc: usize,
    results: &mut Results,
) -> io::Result<()> {
    let figures: Vec<&str> = settings.figures.iter().map(|f| f.name()).collect();
    writeln!(
        out,
        "machine: {nproc} CPUs (available_parallelism); figures: {}; concurrency {}; {} round(s) x {:.1} s per throughput run, {:.1} s warm-up before each; max_connections {}, CLINIC_POOL_BUDGET {}; baseline uses {} PostgreSQL connection(s)",
        figures.join(","),
        settings.concurrency,
        settings.rounds,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        settings.max_connections,
        settings.pool_budget,
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
    writeln!(out)?;
    summary(out, &results.lines)?;
    writeln!(out)?;

    writeln!(
        out,
        "{:<46} {:<10} {:<8} {:<8} {:<8} req/s per round",
        "throughput run", "req/s", "p50 ms", "p99 ms", "errors"
    )?;
    for r in &mut results.rows {
        row(out, r)?;
    }
    for r in &mut results.rows {
        operations(out, r)?;
    }
    for r in &results.rows {
        errors(out, r)?;
    }
    let rows: Vec<&Row> = results.rows.iter().collect();
    cpu_table(out, &rows)?;

    service_table(out, &results.rows)?;
    if !results.notes.is_empty() {
        writeln!(out, "notes:")?;
        for note in &results.notes {
            writeln!(out, "  {note}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands_and_judges_goals() {
        assert_eq!(num(14906.4, 0), "14 906");
        assert_eq!(num(1234567.891, 2), "1 234 567.89");
        assert_eq!(num(-1500.0, 0), "-1 500");
        assert_eq!(num(12.0, 1), "12.0");
        let l = Line::new(Figure::Read, "r", "1", "2", ratio(1.0, 2.0)).at_least(0.5, None);
        assert_eq!(l.goal.map(|g| g.1), Some(true));
        let l = Line::new(Figure::Budget, "b", "1", "2", ratio(1.0, 2.0))
            .at_least(0.5, Some(("0 errors", false)));
        assert_eq!(l.goal.map(|g| g.1), Some(false));
        let l = Line::new(Figure::Placement, "p", "0", "10", ratio(0.0, 10.0)).zero();
        assert_eq!(l.goal.map(|g| g.1), Some(true));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio_cell(Some(0.0001)), "0.0001");
    }
}
