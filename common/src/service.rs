//! Process plumbing shared by the service binaries: logging, signals, and one `main`
//! that loads the typed configuration (exit 64 when refused), answers `--check`,
//! binds the public and admin listeners and runs until SIGINT or SIGTERM.

use crate::config::{ConfigError, Source, EXIT_BAD_CONFIG};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Initialises logging: JSON lines when `LOG_FORMAT=json`, text otherwise, filtered
/// by `RUST_LOG` (default `info`), to stderr.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// What a service binary provides to [`main_entry`].
pub trait Service: Sized {
    /// Its name in messages.
    const NAME: &'static str;
    fn load(source: &Source) -> Result<Self, ConfigError>;
    /// The public and admin addresses to bind.
    fn addresses(&self) -> (SocketAddr, SocketAddr);
    fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The whole `main` of a service binary.
pub fn main_entry<S: Service>() {
    init_tracing();
    let config = match Source::from_env().and_then(|s| S::load(&s)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: configuration refused: {e}", S::NAME);
            std::process::exit(EXIT_BAD_CONFIG);
        }
    };
    if std::env::args().any(|a| a == "--check") {
        println!("{}: configuration ok", S::NAME);
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", S::NAME);
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        let (public, admin) = config.addresses();
        let listener = TcpListener::bind(public).await?;
        let admin = TcpListener::bind(admin).await?;
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            trigger.cancel();
        });
        config.run(listener, admin, shutdown).await
    });
    if let Err(e) = result {
        tracing::error!(error = %e, "{} stopped with an error", S::NAME);
        std::process::exit(1);
    }
}
