//! The bench binary: `cargo run --release -p bench` starts a local stack and
//! measures, in the same run, each figure against an in-run reference: the
//! product's authenticated patient read (gateway → worker → PostgreSQL), the same
//! read straight to the worker, and a mixed clinic workload against a bare hyper +
//! tokio-postgres server reading one patient row (the baseline), with the read's
//! p99 and its CPU per component; the read's p99 with logins in the background;
//! thousands of client connections against a few dozen (wrk); the audit outbox
//! under a minute of full load; patient search in a clinic of 100 000 patients;
//! reads spread over a thousand clinics on a server of a hundred connections
//! (uniform, Zipf-skewed, and on a server and worker sized by the deployment rule)
//! against the single-clinic read and against connecting per request; central
//! statements per warm request; registration to first patient against a bare
//! database clone plus one password hash; the read through the gateway against
//! straight to the worker and through a bare proxy; gateway memory per cached
//! placement and worker memory per clinic pool.
//! It prints one summary table, then the details. Settings come from `BENCH_*`
//! variables (see [`settings`]); the stack re-executes this binary as
//! `bench __component gateway|worker`.

/// mimalloc: the services allocate and free many small objects per request, which
/// glibc's allocator spent a tenth of the worker's CPU on (see `bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backlog;
mod baseline;
mod breakdown;
mod budget;
mod bulk;
mod central;
mod clinics;
mod connect;
mod cpu;
mod load;
mod logins;
mod memory;
mod mixed;
mod placement;
mod provisioning;
mod proxy;
mod report;
mod scenario;
mod search;
mod settings;
mod setup;
mod slots;
mod webhooks;
mod wrk;

use std::process::ExitCode;

fn main() -> ExitCode {
    devstack::run_component_if_asked();
    match settings::Settings::from_env().and_then(scenario::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
