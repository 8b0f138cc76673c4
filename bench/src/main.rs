//! The bench binary: `cargo run --release -p bench` starts a local stack and
//! measures, in the same run and against a bare hyper + tokio-postgres server
//! reading one patient row (the baseline), the product's authenticated patient
//! read (gateway → worker → PostgreSQL) and a mixed clinic workload of searches,
//! lists, reads and writes over several clinics. Settings come from `BENCH_*`
//! variables (see [`settings`]); the stack re-executes this binary as
//! `bench __component gateway|worker`.

mod baseline;
mod breakdown;
mod clinics;
mod cpu;
mod load;
mod mixed;
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
