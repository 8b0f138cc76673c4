//! The routers: the public one (forwarded requests, every route of the clinic API,
//! each request timed, counted and logged in its span) and the admin one (health,
//! readiness, metrics).

use crate::api;
use crate::error::WorkerError;
use crate::export;
use crate::registry::Registry;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::metric_names as m;
use futures_util::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

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
pub fn public(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/export", get(export::clinic))
        .route("/api/v1/{resource}", get(api::list).post(api::create))
        .route(
            "/api/v1/{resource}/{id}",
            get(api::get_one)
                .put(api::update)
                .patch(api::update)
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

/// The admin router: `/healthz`, `/readyz` (the regional server answers) and
/// `/metrics`.
pub fn admin(
    metrics: PrometheusHandle,
    admin: deadpool_postgres::Pool,
    registry: Arc<Registry>,
) -> Router {
    let state = AdminState {
        metrics,
        admin,
        registry,
    };
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
