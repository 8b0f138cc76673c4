//! The local stack, as a library: throwaway PostgreSQL servers (a central one and
//! one per region), a worker process per region and a gateway process, talking
//! mutual TLS to each other with certificates made for the run. The
//! `devstack` binary, the integration tests and the bench all start it through
//! [`Stack::start`]. While the command runs, [`supervise`] watches every child;
//! [`admin_env`] writes the settings `medicalpro-admin` needs against the stack.

pub mod admin_env;
pub mod certs;
pub mod cli;
pub mod client;
pub mod pg;
pub mod process;
pub mod stack;
pub mod supervise;
#[cfg(test)]
mod test_support;

pub use client::{Http, Reply};
pub use pg::PgServer;
pub use stack::{Stack, StackOptions};

/// Runs a gateway or worker in this process when called as
/// `<exe> __component gateway|worker` (how the stack starts its children), and
/// exits; otherwise returns. Call it first thing in `main`.
pub fn run_component_if_asked() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(process::COMPONENT_ARG) {
        return;
    }
    match args.next().as_deref() {
        Some("gateway") => gateway::main_entry(),
        Some("worker") => worker::main_entry(),
        other => {
            eprintln!("unknown component {other:?}");
            std::process::exit(2);
        }
    }
    std::process::exit(0);
}
