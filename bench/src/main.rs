//! The bench binary: `cargo run --release -p bench` starts a local stack and
//! measures, in the same run, each figure against an in-run reference: the
//! product's authenticated patient read (gateway → worker → PostgreSQL) and a
//! mixed clinic workload against a bare hyper + tokio-postgres server reading one
//! patient row (the baseline); reads spread over a thousand clinics on a server of
//! a hundred connections against the single-clinic read; central statements per
//! warm request; registration to first patient against a bare database clone; the
//! read through the gateway against straight to the worker and through a bare
//! proxy; gateway memory per cached placement and worker memory per clinic pool.
//! It prints one summary table, then the details. Settings come from `BENCH_*`
//! variables (see [`settings`]); the stack re-executes this binary as
//! `bench __component gateway|worker`.

/// mimalloc: the services allocate and free many small objects per request, which
/// glibc's allocator spent a tenth of the worker's CPU on (see `bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod baseline;
mod breakdown;
mod budget;
mod central;
mod clinics;
mod cpu;
mod load;
mod memory;
mod mixed;
mod placement;
mod provisioning;
mod proxy;
mod report;
mod scenario;
mod settings;
mod setup;

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
