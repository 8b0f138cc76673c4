//! `cargo run --release -p devstack`: the whole stack on one machine.

/// mimalloc: the services allocate and free many small objects per request, which
/// glibc's allocator spent a tenth of the worker's CPU on (see `bench/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Starts throwaway PostgreSQL servers (central + one per region), a worker per
/// region and the gateway, prints where they are, and runs until Ctrl-C or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "devstack", version)]
struct Args {
    /// The gateway's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the servers keep their data and logs (wiped at start).
    #[arg(long, default_value = "./.devstack")]
    data_dir: PathBuf,
    /// Create a demo clinic with a few patients and print a login.
    #[arg(long)]
    demo: bool,
    /// Region names (one PostgreSQL server and worker each).
    #[arg(long, value_delimiter = ',', default_value = "eu-west,eu-central")]
    regions: Vec<String>,
}

fn main() {
    devstack::run_component_if_asked();
    let args = Args::parse();
    if let Err(e) = devstack::cli::run(args.listen, args.data_dir, args.demo, args.regions) {
        eprintln!("devstack: {e:#}");
        std::process::exit(1);
    }
}
