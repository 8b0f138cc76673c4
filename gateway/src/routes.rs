//! The gateway's own endpoints (auth, users, audit trail, JWKS, OpenAPI) and, for
//! every other `/api/v1/` path, forwarding to the clinic's worker; around them, what
//! every request gets: its request id, client address, span, panic catching, error
//! rendering and metrics.

use crate::auth;
use crate::caller::active_caller;
use crate::error::GatewayError;
use crate::http::{self as h, Body};
use crate::proxy;
use crate::state::{client_ip, Ctx, Gateway};
use common::metric_names as m;
use common::RequestId;
use futures_util::FutureExt;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

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
            let (claims, _) = active_caller(gw, ctx, req.headers()).await?;
            let query = req.uri().query().unwrap_or("").to_owned();
            Ok(h::json(
                StatusCode::OK,
                &crate::trail::list(gw, ctx, &claims, &query).await?,
            ))
        }
        (_, "/api/v1/audit-logs") => Err(GatewayError::MethodNotAllowed),
        (_, p) if p == "/api/v1/users" || p.starts_with("/api/v1/users/") => {
            let (claims, _) = active_caller(gw, ctx, req.headers()).await?;
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
        client_ip: client_ip(&gw.config, peer.ip(), req.headers()),
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
