//! Wiring: builds the state, the routers and the background tasks, and runs them
//! under one cancellation token until shutdown.

use crate::api;
use crate::audit;
use crate::config::Config;
use crate::error::WorkerError;
use crate::export;
use crate::provision::{self, Provisioner};
use crate::registry::Registry;
use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::crypto::KeyRing;
use common::internal::InternalKey;
use common::metric_names as m;
use common::token::TokenVerifier;
use common::ClinicId;
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub provisioner: Arc<Provisioner>,
    pub tokens: Arc<TokenVerifier>,
    pub internal: InternalKey,
    pub keys: Arc<KeyRing>,
    pub max_body_bytes: usize,
    /// Streamed exports running, bounded per clinic and per worker.
    pub exports: Arc<crate::export::ExportGate>,
    audit_wake: mpsc::UnboundedSender<ClinicId>,
}

impl AppState {
    /// Tells the audit shipper a clinic has new outbox rows.
    pub fn wake_shipper(&self, clinic: ClinicId) {
        let _ = self.audit_wake.send(clinic);
    }
}

fn route_class(method: &axum::http::Method, path: &str) -> &'static str {
    let segments = path.trim_matches('/').split('/').count();
    if path.starts_with("/internal/") {
        return "provision";
    }
    if method == axum::http::Method::GET && path.ends_with("/export") {
        return "export";
    }
    match (method.as_str(), segments) {
        ("POST", 5) => "action",
        ("GET", 3) => "list",
        ("POST", 3) => "create",
        ("GET", 4) => "read",
        ("PUT", 4) | ("PATCH", 4) => "update",
        ("DELETE", 4) => "delete",
        _ => "other",
    }
}

/// Times, counts and logs every request, inside a `request` span carrying the
/// request id (the gateway's, sanitised), method and route class; the `Caller`
/// extractor adds `clinic` and `user` once the token is verified. Never the query
/// string, a header value or a body.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_class(req.method(), req.uri().path());
    let request_id = req
        .headers()
        .get(common::internal::HEADER_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(common::RequestId::parse);
    // At error level, so the span is on whenever any line of the request is logged.
    let span = tracing::error_span!(
        "request",
        request_id = request_id.as_ref().map(|r| r.as_str()),
        method = %req.method(),
        route,
        clinic = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    // A bug must cost one request a 500, never the connection or the process.
    let response = match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(_) => {
            span.in_scope(|| WorkerError::Internal("a handler panicked".into()).into_response())
        }
    };
    let elapsed = started.elapsed();
    let status = m::status_class(response.status().as_u16());
    metrics::histogram!(m::HTTP_REQUEST_DURATION, "component" => "worker", "route" => route, "status" => status)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}

/// The public router (forwarded requests only).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/export", get(export::clinic))
        .route("/api/v1/{resource}", get(api::list).post(api::create))
        .route(
            "/api/v1/{resource}/{id}",
            get(api::get_one)
                .put(api::replace)
                .patch(api::patch)
                .delete(api::delete),
        )
        .route(
            "/api/v1/{resource}/{id}/{action}",
            post(api::act).get(api::export),
        )
        .route("/internal/v1/clinics/{id}/provision", post(api::provision))
        .fallback(api::not_found)
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

#[derive(Clone)]
struct AdminState {
    metrics: PrometheusHandle,
    admin: deadpool_postgres::Pool,
    registry: Arc<Registry>,
}

/// Ready while the regional server answers. Not the central database: open clinics
/// keep being served while it is down, so its outage must not take workers out of
/// their load balancer.
async fn ready(State(s): State<AdminState>) -> Response {
    let check = async {
        s.admin
            .get()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(WorkerError::from_db)?;
        Ok::<_, WorkerError>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => "ready\n".into_response(),
        _ => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
    }
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                s.registry.publish_gauges();
                s.metrics.render()
            }),
        )
        .with_state(state)
}

/// Closes every connection the public listener accepts until the returned token is
/// cancelled (the task then ends): while the worker starts up, a gateway is refused
/// at once and answers `503`, instead of waiting in the listen backlog for as long
/// as the start-up takes.
fn refuse_while_starting(
    listener: &TcpListener,
) -> std::io::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    use std::os::fd::AsFd;
    let same_socket = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
    let same_socket = TcpListener::from_std(same_socket)?;
    let starting = CancellationToken::new();
    let until = starting.clone();
    let refusing = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = until.cancelled() => return,
                accepted = same_socket.accept() => drop(accepted),
            }
        }
    });
    Ok((starting, refusing))
}

/// Runs the worker on listeners the caller bound, until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (starting, refusing) = refuse_while_starting(&listener)?;
    let metrics = common::service::metrics_handle();
    let central = pgconn::pool(
        &config.central,
        pgconn::limited(
            &config.central,
            "medicalpro-worker",
            pgconn::SessionLimits::SERVICE,
        ),
        8,
        Duration::from_secs(5),
    )?;
    {
        let conn = pgconn::connect(&config.central, "medicalpro-worker")
            .await
            .with_context(|| pgconn::describe(&config.central, "the central database", "DB_"))?;
        migrations::require_current(&conn, migrations::CENTRAL).await?;
    }
    // Token revocations are in place before the first request is served.
    let revocations = Arc::new(pgconn::revocations::Follow {
        state: config.tokens.revocations().clone(),
        horizon_secs: config.tokens.revocation_horizon_secs(),
    });
    let listening = pgconn::notify::start(
        &config.central,
        "medicalpro-worker-listen",
        revocations.as_ref(),
    )
    .await?;
    let admin = pgconn::pool(
        &config.regional,
        pgconn::config(&config.regional, "medicalpro-worker-admin"),
        4,
        Duration::from_secs(10),
    )?;
    let version = provision::prepare_region(&admin, &config.regional)
        .await
        .with_context(|| pgconn::describe(&config.regional, "the region's server", "REGION_DB_"))?;
    tracing::info!(region = %config.region, template_version = version, "region template ready");

    central
        .get()
        .await?
        .execute(
            "INSERT INTO regions (name, worker_url, pg_host, pg_port) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET worker_url = EXCLUDED.worker_url, pg_host = EXCLUDED.pg_host, \
             pg_port = EXCLUDED.pg_port, updated_at = now()",
            &[
                &config.region,
                &config.advertise_url,
                &config.regional.host,
                &i32::from(config.regional.port),
            ],
        )
        .await?;

    let registry = Arc::new(Registry::new(
        central.clone(),
        config.region.clone(),
        config.regional.clone(),
        config.keys.clone(),
        config.pool,
    ));
    let provisioner = Arc::new(Provisioner::new(
        registry.clone(),
        admin.clone(),
        config.keys.clone(),
    ));
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let state = AppState {
        registry: registry.clone(),
        provisioner: provisioner.clone(),
        tokens: config.tokens.clone(),
        internal: config.internal.clone(),
        keys: config.keys.clone(),
        max_body_bytes: config.max_body_bytes,
        exports: Arc::new(crate::export::ExportGate::new(config.exports)),
        audit_wake: wake_tx,
    };

    let mut tasks = JoinSet::new();
    tasks.spawn(pgconn::notify::run(
        listening,
        config.central.clone(),
        "medicalpro-worker-listen".into(),
        revocations,
        shutdown.clone(),
    ));
    tasks.spawn(audit::run_shipper(
        registry.clone(),
        config.audit_keys.clone(),
        wake_rx,
        shutdown.clone(),
    ));
    crate::telemetry::set_slow_query_threshold(config.slow_query);
    crate::telemetry::register_counters();
    tasks.spawn(crate::telemetry::run_backup_gauges(
        central.clone(),
        config.region.clone(),
        config.backup_max_age,
        config.backup_check,
        shutdown.clone(),
    ));
    {
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while tokio::select! { _ = shutdown.cancelled() => false, _ = tick.tick() => true } {
                registry.reap();
            }
        });
    }
    {
        let provisioner = provisioner.clone();
        tasks.spawn(async move {
            match provisioner.reconcile().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(completed = n, "resumed interrupted provisioning"),
                Err(e) => tracing::warn!(error = %e, "could not reconcile provisioning"),
            }
        });
    }
    let admin_app = admin_router(AdminState {
        metrics,
        admin: admin.clone(),
        registry: registry.clone(),
    });
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let serve = axum::serve(admin_listener, admin_app)
                .with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }

    let tls = config.tls.as_ref().map(|t| t.server_config()).transpose()?;
    starting.cancel();
    let _ = refusing.await;
    tracing::info!(addr = %listener.local_addr()?, region = %config.region, mutual_tls = tls.is_some(), "worker serving");
    let (app, stop) = (router(state), shutdown.clone().cancelled_owned());
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?
        }
        Some(tls) => {
            axum::serve(crate::tls::TlsListener::new(listener, tls), app)
                .with_graceful_shutdown(stop)
                .await?
        }
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    registry.close_all();
    Ok(())
}

impl common::service::Service for Config {
    const NAME: &'static str = "worker";

    fn load(source: &common::config::Source) -> Result<Self, common::config::ConfigError> {
        Config::from_source(source)
    }

    fn addresses(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
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

/// The worker binary: `--check` validates the configuration and exits.
pub fn main_entry() {
    common::service::main_entry::<Config>();
}
