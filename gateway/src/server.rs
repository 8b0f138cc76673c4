//! Running the gateway: the state built, the background tasks (LISTEN/NOTIFY,
//! pruning attempt counters), the public and admin listeners with their connection
//! limits and graceful shutdown, and the binary's entry point.

use crate::config::Config;
use crate::http::Body;
use crate::password::Hasher;
use crate::placement::{CentralPlacements, PlacementCache};
use crate::routes;
use crate::state::Gateway;
use crate::upstream;
use anyhow::Context;
use bytes::Bytes;
use common::metric_names as m;
use deadpool_postgres::Pool;
use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;

fn central_pool(config: &Config) -> anyhow::Result<Pool> {
    Ok(pgconn::pool(
        &config.central,
        pgconn::limited(
            &config.central,
            "medicalpro-gateway",
            pgconn::SessionLimits::SERVICE,
        ),
        16,
        Duration::from_secs(5),
    )?)
}

/// Once the listener is closed, how long a kept-alive connection that is idle may
/// still bring a request (one its client may be sending right now) before it is
/// closed.
const LINGER: Duration = Duration::from_secs(1);

/// Serves connections from `listener` with `service` until `shutdown`, then lets
/// in-flight requests finish for at most `grace`.
///
/// Closing a kept-alive connection that looks idle would drop a request its client
/// is sending at that moment. So once the listener is closed every answer says
/// `connection: close` (the connection ends after it and the client knows not to
/// send another on it), and idle connections get a moment (`LINGER`) to bring a
/// request before the remaining ones are shut down.
///
/// Against slow and greedy clients: at most `limits.max_connections` connections
/// are open at once (past it, new ones are closed as soon as accepted); a request
/// head must arrive within `limits.header_read_timeout` (which also ends a
/// kept-alive connection idle for that long); heads are at most 64 KiB; HTTP/2
/// connections carry at most 128 concurrent streams; a TLS handshake must finish
/// within 5 s.
async fn serve<S, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
    grace: Duration,
    limits: crate::config::ConnectionLimits,
    service: S,
) where
    S: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!(m::CLIENTS_CUT_OFF, "component" => "gateway", "reason" => "connection_cap")
                .increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let closing = closing.clone();
        let svc = service_fn(move |req| {
            let answer = service(peer, req);
            let closing = closing.clone();
            async move {
                let mut response = answer.await?;
                if closing.load(std::sync::atomic::Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    closing.store(true, std::sync::atomic::Ordering::Relaxed);
    let draining = Instant::now();
    while graceful.count() > 0 && draining.elapsed() < LINGER.min(grace) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace.saturating_sub(draining.elapsed())) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Runs the gateway on listeners the caller bound, until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let prometheus = common::service::metrics_handle();
    // At zero from the start, so the first failure is an increase Prometheus sees.
    for reason in ["bad_credentials", "throttled"] {
        metrics::counter!(m::LOGIN_FAILURES, "reason" => reason).increment(0);
    }
    metrics::counter!(m::PASSWORD_HASH_SHED).increment(0);
    {
        let client = pgconn::connect(&config.central, "medicalpro-gateway")
            .await
            .with_context(|| pgconn::describe(&config.central, "the central database", "DB_"))?;
        migrations::require_current(&client, migrations::CENTRAL).await?;
    }
    let central = central_pool(&config)?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let cache = Arc::new(PlacementCache::new(
        CentralPlacements::new(central.clone()),
        config.cache_size,
        config.cache_ttl,
    ));
    let events = Arc::new(crate::events::CentralEvents {
        cache: cache.clone(),
        revocations: pgconn::revocations::Follow {
            state: config.verifier.revocations().clone(),
            horizon_secs: config.verifier.revocation_horizon_secs(),
        },
    });
    // Revocations are in place before the first request is served.
    let listening = pgconn::notify::start(
        &config.central,
        "medicalpro-gateway-listen",
        events.as_ref(),
    )
    .await?;
    let gw = Arc::new(Gateway {
        central,
        internal: config.internal.clone(),
        hasher: Hasher::new(config.limits.hash_queue)?,
        cache: cache.clone(),
        client: upstream::client(
            config
                .upstream_tls
                .as_ref()
                .map(|t| t.client_config())
                .transpose()?,
        )?,
        openapi: Bytes::from(serde_json::to_vec(&common::openapi::document())?),
        jwks: Bytes::from(serde_json::to_vec(&config.verifier.jwks())?),
        draining: std::sync::atomic::AtomicBool::new(false),
        uploads: Arc::new(tokio::sync::Semaphore::new(
            config
                .upload_buffer_bytes
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        config,
    });

    let mut tasks = JoinSet::new();
    let stop_accepting = CancellationToken::new();
    tasks.spawn(pgconn::notify::run(
        listening,
        gw.config.central.clone(),
        "medicalpro-gateway-listen".into(),
        events,
        shutdown.clone(),
    ));
    {
        // Spent attempt counters and sign-in challenges are deleted now and then.
        let gw = gw.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            while tokio::select! { _ = shutdown.cancelled() => false, _ = tick.tick() => true } {
                if let Ok(client) = gw.central.get().await {
                    if let Err(e) = crate::throttle::prune(&client).await {
                        tracing::debug!(error = %e, "could not prune attempt counters");
                    }
                    if let Err(e) = crate::totp::prune(&client).await {
                        tracing::debug!(error = %e, "could not prune sign-in challenges");
                    }
                }
            }
        });
    }
    {
        let gw = gw.clone();
        let stop_accepting = stop_accepting.clone();
        tasks.spawn(async move {
            let limits = gw.config.connections;
            let router = routes::admin_router(gw.clone(), prometheus);
            let service = move |_peer: SocketAddr, req: Request<Incoming>| {
                let mut router = router.clone();
                async move { router.call(req).await }
            };
            serve(
                admin_listener,
                None,
                stop_accepting,
                Duration::from_secs(1),
                limits,
                service,
            )
            .await;
        });
    }
    tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "gateway serving");
    // On shutdown: report not-ready, keep accepting for SHUTDOWN_DELAY_SECS so the
    // load balancer notices, then stop accepting and drain for SHUTDOWN_GRACE_SECS.
    {
        let gw = gw.clone();
        let shutdown = shutdown.clone();
        let stop_accepting = stop_accepting.clone();
        tasks.spawn(async move {
            shutdown.cancelled().await;
            gw.start_draining();
            tokio::time::sleep(gw.config.shutdown_delay).await;
            stop_accepting.cancel();
        });
    }
    let grace = gw.config.shutdown_grace;
    let service = {
        let gw = gw.clone();
        let router = routes::router(gw.clone());
        move |peer: SocketAddr, req| {
            let (router, gw) = (router.clone(), gw.clone());
            async move { routes::envelope(router, &gw, peer, req).await }
        }
    };
    let limits = gw.config.connections;
    serve(listener, tls, stop_accepting, grace, limits, service).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

impl common::service::Service for Config {
    const NAME: &'static str = "gateway";

    fn load(source: &common::config::Source) -> Result<Self, common::config::ConfigError> {
        Config::from_source(source)
    }

    fn addresses(&self) -> (SocketAddr, SocketAddr) {
        (self.listen, self.admin_listen)
    }

    fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        run(self, listener, admin, shutdown)
    }
}

/// The gateway binary: `--check` validates the configuration and exits (64 when refused).
pub fn main_entry() {
    common::service::main_entry::<Config>();
}
