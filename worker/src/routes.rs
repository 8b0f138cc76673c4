//! The routers: the public one (forwarded requests, every route of the clinic API,
//! each request timed, counted and logged in its span by `httpkit`'s observation)
//! and the admin one (health, readiness, metrics).

use crate::api;
use crate::attachments;
use crate::error::WorkerError;
use crate::export;
use crate::import;
use crate::registry::Registry;
use crate::state::AppState;
use crate::webhooks::api as webhooks;
use crate::{calendar, clinic};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;

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

/// What the worker says about its requests to the shared observation
/// ([`httpkit::observe`]: each one timed, counted and logged inside a `request`
/// span, a panic answered `500`): the request id is the gateway's, sanitised, and
/// never made up; the route class is by method and path; no `endpoint` label, no
/// `x-request-id` on answers. The `Caller` extractor adds `clinic` and `user` to
/// the span once the token is verified.
#[derive(Clone, Copy, Debug)]
struct Observe;

impl httpkit::Observer for Observe {
    const COMPONENT: &'static str = "worker";
    type Body = axum::body::Body;

    fn request_id<B>(&self, req: &axum::http::Request<B>) -> Option<common::RequestId> {
        req.headers()
            .get(common::internal::HEADER_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(common::RequestId::parse)
    }

    fn route<B>(&self, req: &axum::http::Request<B>) -> &'static str {
        route_class(req.method(), req.uri().path())
    }

    fn panicked() -> Response {
        WorkerError::Internal("a handler panicked".into()).into_response()
    }

    fn finished(status: axum::http::StatusCode, elapsed: Duration) {
        httpkit::request_line!(status, elapsed);
    }
}

/// The public router (forwarded requests only).
pub fn public(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/export", get(export::clinic))
        .route("/api/v1/clinic", get(clinic::get).put(clinic::put))
        .route("/api/v1/availability", get(calendar::availability))
        .route("/api/v1/appointments/series", post(calendar::book_series))
        .route(
            "/api/v1/appointment-series/{id}",
            get(calendar::get_series).patch(calendar::change_series),
        )
        .route(
            "/api/v1/appointment-series/{id}/cancel",
            post(calendar::cancel_series),
        )
        .route("/api/v1/patients/import", post(import::patients))
        .route(
            "/api/v1/webhook-subscriptions",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/api/v1/webhook-subscriptions/{id}",
            get(webhooks::get)
                .patch(webhooks::change)
                .delete(webhooks::delete),
        )
        .route(
            "/api/v1/webhook-subscriptions/{id}/replay",
            post(webhooks::replay),
        )
        .route(
            "/api/v1/webhook-subscriptions/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route("/api/v1/webhook-events", get(webhooks::events))
        .route(
            "/api/v1/patients/{id}/attachments",
            get(attachments::list).post(attachments::upload),
        )
        .route(
            "/api/v1/attachments/{id}",
            get(attachments::download).delete(attachments::delete),
        )
        .route("/api/v1/{resource}", get(api::list).post(api::create))
        .route(
            "/api/v1/{resource}/{id}",
            get(api::get_one)
                .put(api::update)
                .patch(api::update)
                .delete(api::delete),
        )
        // The row actions answer `POST` only; the two sub-resources that are read
        // have routes of their own, so every other method gets a `405` whose
        // `allow` is true for its path (and an unknown action a `404`).
        .route("/api/v1/patients/{id}/export", get(api::export))
        .route(
            "/api/v1/documents/{id}/payments",
            get(api::list_payments).post(api::record_payment),
        )
        .route("/api/v1/{resource}/{id}/{action}", any(api::row_action))
        .route("/internal/v1/clinics/{id}/provision", post(api::provision))
        .fallback(api::not_found)
        .layer(httpkit::ObserveLayer::new(Observe))
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
