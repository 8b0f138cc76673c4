//! Wiring: the shared state, the router, the accept loop with graceful shutdown, the
//! admin listener, and the binary's entry point.

use crate::auth;
use crate::config::Config;
use crate::error::GatewayError;
use crate::http::{self as h, Body};
use crate::password::Hasher;
use crate::placement::PlacementCache;
use crate::proxy::{self, Ctx, UpstreamClient};
use anyhow::Context;
use bytes::Bytes;
use common::internal::InternalKey;
use common::metric_names as m;
use common::RequestId;
use deadpool_postgres::Pool;
use futures_util::FutureExt;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Everything a request may need.
pub struct Gateway {
    pub config: Config,
    pub central: Pool,
    pub internal: InternalKey,
    pub hasher: Hasher,
    pub cache: Arc<PlacementCache>,
    pub client: UpstreamClient,
    openapi: Bytes,
    jwks: Bytes,
    /// Set once shutdown began: `/readyz` turns 503 so load balancers stop sending.
    draining: std::sync::atomic::AtomicBool,
}

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

/// The client's address: the socket peer, or the last untrusted `X-Forwarded-For`
/// hop when the peer is a configured trusted proxy.
fn client_ip(config: &Config, peer: IpAddr, req: &Request<Incoming>) -> IpAddr {
    if !config.trusted_proxies.contains(&peer) {
        return peer;
    }
    req.headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .rev()
        .find(|ip| !config.trusted_proxies.contains(ip))
        .unwrap_or(peer)
}

fn route_class(path: &str) -> &'static str {
    if path.starts_with("/api/v1/auth/") {
        "auth"
    } else if path == "/api/v1/audit-logs" || path.starts_with("/api/v1/users") {
        "admin"
    } else if path == "/api/v1/openapi.json" {
        "openapi"
    } else if path.starts_with("/api/v1/") {
        "proxy"
    } else {
        "other"
    }
}

async fn route(
    gw: &Gateway,
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let limit = gw.config.max_body_bytes;
    let timeout = gw.config.connections.body_read_timeout;
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/api/v1/auth/register") => {
            let body = h::read_json(req, limit, timeout).await?;
            let out = auth::register(gw, ctx, body).await?;
            Ok(h::json(StatusCode::CREATED, &out))
        }
        (Method::POST, "/api/v1/auth/login") => {
            let body = h::read_json(req, limit, timeout).await?;
            Ok(h::json(StatusCode::OK, &auth::login(gw, ctx, body).await?))
        }
        (Method::POST, "/api/v1/auth/refresh") => {
            let body = h::read_json(req, limit, timeout).await?;
            Ok(h::json(
                StatusCode::OK,
                &auth::refresh(gw, ctx, body).await?,
            ))
        }
        (Method::POST, "/api/v1/auth/logout") => {
            let body = h::read_json(req, limit, timeout).await?;
            auth::logout(gw, ctx, body).await?;
            Ok(h::empty(StatusCode::NO_CONTENT))
        }
        (_, p) if p.starts_with("/api/v1/auth/") => match p {
            "/api/v1/auth/register"
            | "/api/v1/auth/login"
            | "/api/v1/auth/refresh"
            | "/api/v1/auth/logout" => Err(GatewayError::MethodNotAllowed),
            _ => Err(GatewayError::NotFound),
        },
        (Method::GET, "/.well-known/jwks.json") => {
            let mut r = Response::new(h::full(gw.jwks.clone()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            );
            Ok(r)
        }
        (_, "/.well-known/jwks.json") => Err(GatewayError::MethodNotAllowed),
        (Method::GET, "/api/v1/audit-logs") => {
            let (claims, _) = proxy::active_caller(gw, ctx, req.headers()).await?;
            let query = req.uri().query().unwrap_or("").to_owned();
            Ok(h::json(
                StatusCode::OK,
                &crate::trail::list(gw, ctx, &claims, &query).await?,
            ))
        }
        (_, "/api/v1/audit-logs") => Err(GatewayError::MethodNotAllowed),
        (_, p) if p == "/api/v1/users" || p.starts_with("/api/v1/users/") => {
            let (claims, _) = proxy::active_caller(gw, ctx, req.headers()).await?;
            let segments: Vec<String> = p
                .trim_start_matches("/api/v1/users")
                .split('/')
                .skip(1)
                .map(str::to_owned)
                .collect();
            let method = req.method().clone();
            use crate::users::{self, Change};
            match (method, segments.as_slice()) {
                (Method::GET, []) => Ok(h::json(StatusCode::OK, &users::list(gw, &claims).await?)),
                (Method::POST, []) => {
                    // The role first: a non-admin learns nothing from body checks.
                    users::admin_only(&claims)?;
                    let body = h::read_json(req, limit, timeout).await?;
                    Ok(h::json(
                        StatusCode::CREATED,
                        &users::create(gw, ctx, &claims, body).await?,
                    ))
                }
                (Method::PATCH, [id]) => {
                    users::admin_only(&claims)?;
                    let body = h::read_json(req, limit, timeout).await?;
                    Ok(h::json(
                        StatusCode::OK,
                        &users::patch(gw, ctx, &claims, id, body).await?,
                    ))
                }
                (Method::POST, [id, action]) => {
                    let change = match action.as_str() {
                        "disable" => Change::Disable,
                        "enable" => Change::Enable,
                        "sign-out" => Change::SignOut,
                        _ => return Err(GatewayError::NotFound),
                    };
                    let user = users::change(gw, ctx, &claims, id, change).await?;
                    Ok(h::json(StatusCode::OK, &user))
                }
                (_, []) | (_, [_]) => Err(GatewayError::MethodNotAllowed),
                (_, [_, action])
                    if matches!(action.as_str(), "disable" | "enable" | "sign-out") =>
                {
                    Err(GatewayError::MethodNotAllowed)
                }
                _ => Err(GatewayError::NotFound),
            }
        }
        (Method::GET, "/api/v1/openapi.json") => {
            let mut r = Response::new(h::full(gw.openapi.clone()));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        (_, p) if p.starts_with("/api/v1/") => proxy::forward(gw, ctx, req).await,
        _ => Err(GatewayError::NotFound),
    }
}

/// One request, start to finish: request id, client IP, routing, errors, metrics.
pub async fn handle(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(common::internal::HEADER_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    let ctx = Ctx {
        request_id,
        client_ip: client_ip(&gw.config, peer.ip(), &req),
    };
    let class = route_class(req.uri().path());
    // Every log line of the request carries these; `clinic` and `user` are recorded
    // once a token or a login names them (`note_caller`). Never the query string,
    // a header value or a body. At error level, so the span is on whenever any line
    // of the request is logged (`RUST_LOG=warn` included).
    let span = tracing::error_span!(
        "request",
        request_id = ctx.request_id.as_str(),
        method = %req.method(),
        route = class,
        clinic = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    // A bug must cost one request a 500, never the connection or the process.
    let routed = std::panic::AssertUnwindSafe(route(&gw, &ctx, req))
        .catch_unwind()
        .instrument(span.clone())
        .await
        .unwrap_or_else(|_| Err(GatewayError::Internal("a handler panicked".into())));
    let mut response = match routed {
        Ok(r) => r,
        Err(e) => {
            if e.problem().status >= 500 {
                span.in_scope(
                    || tracing::warn!(request_id = %ctx.request_id, error = %e, "request failed"),
                );
            }
            metrics::counter!(m::ERRORS, "component" => "gateway", "kind" => e.kind()).increment(1);
            h::problem(&e)
        }
    };
    if let Ok(v) = HeaderValue::from_str(ctx.request_id.as_str()) {
        response
            .headers_mut()
            .insert(common::internal::HEADER_REQUEST_ID, v);
    }
    let elapsed = started.elapsed();
    let status = m::status_class(response.status().as_u16());
    metrics::histogram!(m::HTTP_REQUEST_DURATION, "component" => "gateway", "route" => class, "status" => status)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    Ok(response)
}

/// Names the request's clinic and user in its log lines, once a verified token, a
/// login or a registration established them.
pub(crate) fn note_caller(clinic: common::ClinicId, user: common::UserId) {
    let span = tracing::Span::current();
    span.record("clinic", tracing::field::display(clinic));
    span.record("user", tracing::field::display(user));
}

async fn admin(
    handle: PrometheusHandle,
    gw: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(h::full(body));
        *r.status_mut() = status;
        r
    };
    Ok(match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        // Ready as long as the process serves: cached placements keep working while
        // the central database is down, so its outage does not pull gateways out.
        "/readyz" if gw.draining.load(std::sync::atomic::Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        }
        "/readyz" => text(StatusCode::OK, "ready\n".into()),
        "/metrics" => {
            metrics::gauge!(m::PLACEMENT_CACHE_SIZE).set(gw.cache.len() as f64);
            let mut r = text(StatusCode::OK, handle.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    })
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
    F: std::future::Future<Output = Result<Response<Body>, hyper::Error>> + Send + 'static,
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
                Ok::<_, hyper::Error>(response)
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
        central.clone(),
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
        client: proxy::client(
            config
                .upstream_tls
                .as_ref()
                .map(|t| t.client_config())
                .transpose()?,
        )?,
        openapi: Bytes::from(serde_json::to_vec(&common::openapi::document())?),
        jwks: Bytes::from(serde_json::to_vec(&config.verifier.jwks())?),
        draining: std::sync::atomic::AtomicBool::new(false),
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
        // Spent attempt counters are deleted now and then.
        let gw = gw.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            while tokio::select! { _ = shutdown.cancelled() => false, _ = tick.tick() => true } {
                if let Ok(client) = gw.central.get().await {
                    if let Err(e) = crate::throttle::prune(&client).await {
                        tracing::debug!(error = %e, "could not prune attempt counters");
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
            let service = move |_peer: SocketAddr, req| admin(prometheus.clone(), gw.clone(), req);
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
            gw.draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(gw.config.shutdown_delay).await;
            stop_accepting.cancel();
        });
    }
    let grace = gw.config.shutdown_grace;
    let service = {
        let gw = gw.clone();
        move |peer: SocketAddr, req| handle(gw.clone(), peer, req)
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
