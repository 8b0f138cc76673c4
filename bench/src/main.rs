//! The bench binary: `cargo run --release -p bench` starts a local stack, seeds one
//! clinic and patient, and compares the product's authenticated patient read
//! (gateway → worker → PostgreSQL) with a bare hyper + tokio-postgres server reading
//! the same row. Settings come from `BENCH_*` variables (see [`settings`]); the
//! stack re-executes this binary as `bench __component gateway|worker`.

mod baseline;
mod breakdown;
mod cpu;
mod load;
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
