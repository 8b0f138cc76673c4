//! The memory figures. Gateway: resident memory (`VmRSS`) before and after its
//! placement cache is filled with `count` more entries. The clinics are rows put
//! straight into the central `companies` table (a real region, status
//! `suspended`, inserted with `session_replication_role = replica` so that the
//! placement-change trigger does not send 100 000 notifications), each requested
//! once with an access token forged by the stack's token service: the gateway
//! looks each up once and caches it as a positive entry (it caches any clinic it
//! finds, whatever its status) and answers 403 `clinic-unavailable` without
//! reaching a worker. Worker: resident memory per clinic pool, from the pass that
//! opened the budget clinics' pools ([`crate::budget`]).

use crate::breakdown;
use crate::budget::PoolMemory;
use crate::cpu;
use crate::load::{self, Limit, LoadClient, Target, Targets, Workload};
use crate::report::{self, Line};
use crate::settings::{Figure, Settings};
use anyhow::{bail, Context};
use common::metric_names as m;
use common::token::Role;
use common::{ClinicId, UserId};
use devstack::Stack;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Rows inserted per statement.
const CHUNK: usize = 10_000;

/// The figure's lines and notes.
pub struct Outcome {
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

async fn cache_entries(client: &LoadClient, stack: &Stack) -> anyhow::Result<f64> {
    let text = breakdown::metrics_text(client, stack.gateway.admin_addr).await?;
    Ok(breakdown::value(&text, m::PLACEMENT_CACHE_SIZE, &[]))
}

/// Inserts `count` suspended clinics placed in `region`; their ids.
async fn insert_clinics(stack: &Stack, region: &str, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let central = stack
        .central
        .connect(devstack::stack::CENTRAL_DB)
        .await
        .context("connecting to the central database")?;
    central
        .batch_execute("SET session_replication_role = replica")
        .await?;
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    for chunk in ids.chunks(CHUNK) {
        central
            .execute(
                "INSERT INTO companies (id, name, region, db_name, db_role, status) \
                 SELECT id, 'bench cached placement', $2, 'bench_cached_db_' || id, 'bench_cached_role_' || id, 'suspended' \
                 FROM unnest($1::uuid[]) AS id",
                &[&chunk, &region],
            )
            .await
            .context("inserting clinics into the central database")?;
    }
    Ok(ids)
}

/// Fills the gateway's placement cache with `settings.cached_placements` entries;
/// `at_start` is the gateway's resident memory when it had just started.
pub async fn gateway(
    settings: &Settings,
    stack: &Stack,
    client: &LoadClient,
    region: &str,
    at_start: Option<u64>,
) -> anyhow::Result<Outcome> {
    let count = settings.cached_placements;
    let pid = cpu::component_pid("gateway", None).context("the gateway process is not found")?;
    eprintln!("bench: memory: inserting {count} clinics into the central database…");
    let ids = insert_clinics(stack, region, count).await?;
    let tokens = stack.tokens()?;
    let gateway_url = stack.gateway_url();
    let targets = ids
        .iter()
        .map(|id| {
            let (token, _) = tokens.issue(
                UserId::from_uuid(Uuid::new_v4()),
                ClinicId::from_uuid(*id),
                Role::Admin,
                1,
            )?;
            Target::bearer(&format!("{gateway_url}/api/v1/patients?limit=1"), &token)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(ids);

    let entries_before = cache_entries(client, stack).await?;
    let rss_before = cpu::rss_bytes(pid).context("reading the gateway's VmRSS")?;
    eprintln!("bench: memory: requesting each of the {count} clinics once through the gateway…");
    let started = Instant::now();
    let workload: Arc<dyn Workload> = Arc::new(Targets::in_turn(targets));
    let stats = load::run(
        client,
        &workload,
        settings.concurrency,
        Limit::Requests(count as u64),
    )
    .await;
    let took = started.elapsed();
    drop(workload);
    let rss_after = cpu::rss_bytes(pid).context("reading the gateway's VmRSS")?;
    let entries_after = cache_entries(client, stack).await?;
    let unexpected: u64 = stats
        .error_kinds
        .iter()
        .filter(|(kind, _)| kind.as_str() != "status 403")
        .map(|(_, n)| n)
        .sum();
    if unexpected > 0 || stats.ok > 0 {
        bail!(
            "memory: expected only 403 clinic-unavailable answers, got {} ok and {:?}",
            stats.ok,
            stats.error_kinds
        );
    }
    let added = entries_after - entries_before;
    let grown = rss_after as f64 - rss_before as f64;
    let line = Line::new(
        Figure::Memory,
        format!(
            "gateway RSS per cached placement (+{} entries)",
            report::num(added, 0)
        ),
        format!(
            "{} B/entry (RSS {})",
            report::num(grown / added.max(1.0), 0),
            report::mib(rss_after as f64)
        ),
        format!("RSS before filling {}", report::mib(rss_before as f64)),
        report::ratio(rss_after as f64, rss_before as f64),
    );
    let notes = vec![format!(
        "memory: gateway cache {} -> {} entries ({} requests, all 403 clinic-unavailable, in {:.1} s); VmRSS {} -> {} bytes ({} right after start-up)",
        report::num(entries_before, 0),
        report::num(entries_after, 0),
        report::num((stats.ok + stats.errors) as f64, 0),
        took.as_secs_f64(),
        rss_before,
        rss_after,
        at_start.map_or_else(|| "unknown".into(), |b| report::mib(b as f64)),
    )];
    Ok(Outcome {
        lines: vec![line],
        notes,
    })
}

/// The worker's line: memory per clinic pool opened by the budget setup.
pub fn worker(memory: &PoolMemory) -> Line {
    let pools = memory.pools_after - memory.pools_before;
    let grown = memory.rss_after as f64 - memory.rss_before as f64;
    Line::new(
        Figure::Memory,
        format!(
            "worker RSS per opened clinic pool (+{} pools, {} connections)",
            report::num(pools, 0),
            report::num(memory.connections_after, 0)
        ),
        format!(
            "{} KiB/pool (RSS {})",
            report::num(grown / pools.max(1.0) / 1024.0, 1),
            report::mib(memory.rss_after as f64)
        ),
        format!(
            "RSS before opening {}",
            report::mib(memory.rss_before as f64)
        ),
        report::ratio(memory.rss_after as f64, memory.rss_before as f64),
    )
}
