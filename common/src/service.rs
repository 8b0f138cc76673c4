//! Process plumbing shared by the service binaries: logging, signals, and one `main`
//! that loads the typed configuration (exit 64 when refused), answers `--check`
//! and `--probe [PATH]` (a health check of the running process's admin listener),
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

/// A gauge not set for this long disappears from `/metrics`. Every gauge is set at
/// least once a minute while it means something (the busiest-clinic pool gauges
/// every reaper tick, the backup gauges every minute), so only series that stopped
/// being reported — a clinic that left the top, a refresh that keeps failing — go.
pub const GAUGE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .idle_timeout(
                    metrics_util::MetricKindMask::GAUGE,
                    Some(GAUGE_IDLE_TIMEOUT),
                )
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

/// `--probe [PATH]` among the arguments: the path to ask of the process's own admin
/// listener (default `/healthz`), for container health checks in images that have
/// no shell or HTTP client.
fn probe_path(args: impl IntoIterator<Item = String>) -> Option<String> {
    let mut args = args.into_iter().skip_while(|a| a != "--probe");
    args.next()?;
    Some(
        args.next()
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/healthz".into()),
    )
}

/// Sends `GET path` to the admin listener bound at `admin` (an unspecified address
/// is reached through loopback) and tells whether it answered `200`.
pub fn probe(admin: SocketAddr, path: &str, timeout: std::time::Duration) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let mut addr = admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    // "HTTP/1.1 200 OK": the version and the status code.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.") && head.ends_with(b" 200"))
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
    if let Some(path) = probe_path(std::env::args()) {
        let (_, admin) = config.addresses();
        match probe(admin, &path, std::time::Duration::from_secs(3)) {
            Ok(true) => return,
            Ok(false) => eprintln!("{}: {path} on {admin} did not answer 200", S::NAME),
            Err(e) => eprintln!("{}: {path} on {admin}: {e}", S::NAME),
        }
        std::process::exit(1);
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
        tracing::error!(
            error = format!("{e:#}"),
            "{} stopped with an error",
            S::NAME
        );
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn probe_path_is_asked_for_or_healthz() {
        assert_eq!(probe_path(args(&["gateway"])), None);
        assert_eq!(probe_path(args(&["gateway", "--check"])), None);
        assert_eq!(
            probe_path(args(&["worker", "--probe"])).as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            probe_path(args(&["worker", "--probe", "/readyz"])).as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            probe_path(args(&["worker", "--probe", "--check"])).as_deref(),
            Some("/healthz")
        );
    }

    /// A one-connection server answering `status_line`; returns its address and the
    /// request it received.
    fn answer_once(
        bind: &str,
        status_line: &'static str,
    ) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&buf[..n]);
            }
            write!(conn, "{status_line}\r\ncontent-length: 0\r\n\r\n").unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, server)
    }

    #[test]
    fn probe_asks_the_path_and_wants_200() {
        let timeout = Duration::from_secs(5);
        let (addr, server) = answer_once("127.0.0.1:0", "HTTP/1.1 200 OK");
        // Bound to every address: reached through loopback.
        let unspecified = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert!(probe(unspecified, "/readyz", timeout).unwrap());
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /readyz HTTP/1.1\r\n"));

        let (addr, server) = answer_once("127.0.0.1:0", "HTTP/1.1 503 Service Unavailable");
        assert!(!probe(addr, "/readyz", timeout).unwrap());
        server.join().unwrap();

        // Nobody listening: an error, so the check fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(probe(addr, "/healthz", timeout).is_err());
    }
}
