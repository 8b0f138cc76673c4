//! The gateway's routes: its own endpoints (auth, users, audit trail, JWKS, OpenAPI)
//! on an axum [`Router`], and forwarding to the clinic's worker as the router's
//! fallback for every other `/api/v1/` path; the admin listener's router; and the
//! envelope every public request goes through: the shared observation
//! (`httpkit::observe`: request id, span, panic catching, `x-request-id`, metrics)
//! given the gateway's rules and the client's address.
//!
//! Each own endpoint answers the methods it serves and `405` (problem+json, no
//! `allow` header, `HEAD` included) for any other. The users endpoints check the
//! caller's token before anything else, whatever the method or path.

use crate::api_clients::{self, TokenRefusal};
use crate::auth;
use crate::caller::active_caller;
use crate::error::GatewayError;
use crate::http::{self as h, Body};
use crate::mfa;
use crate::passwords;
use crate::proxy;
use crate::state::{client_ip, Ctx, Gateway};
use crate::trail;
use crate::users::{self, Change};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use common::metric_names as m;
use common::RequestId;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::Service;

type Shared = State<Arc<Gateway>>;
type Answer = Result<Response, GatewayError>;

const REGISTER: &str = "/api/v1/auth/register";
const LOGIN: &str = "/api/v1/auth/login";
const REFRESH: &str = "/api/v1/auth/refresh";
const LOGOUT: &str = "/api/v1/auth/logout";
const MFA_ENROLL: &str = "/api/v1/auth/mfa/enroll";
const MFA_CONFIRM: &str = "/api/v1/auth/mfa/confirm";
const MFA_VERIFY: &str = "/api/v1/auth/mfa/verify";
const MFA_DISABLE: &str = "/api/v1/auth/mfa/disable";
const PASSWORD: &str = "/api/v1/auth/password";
const PASSWORD_RESET: &str = "/api/v1/auth/password-reset";
const PASSWORD_RESET_CONFIRM: &str = "/api/v1/auth/password-reset/confirm";
const CLINIC_SECURITY: &str = "/api/v1/clinic-security";
const AUTH_OTHER: &str = "/api/v1/auth/{*rest}";
const AUTH_BARE: &str = "/api/v1/auth/";
const JWKS: &str = "/.well-known/jwks.json";
const AUDIT_LOGS: &str = "/api/v1/audit-logs";
const USERS: &str = "/api/v1/users";
/// One user (`{id}`) or an action on one (`{id}/{action}`): a catch-all, since
/// what is not either (`//disable`, more segments) is the handler's to refuse.
const USERS_BELOW: &str = "/api/v1/users/{*rest}";
const USERS_BARE: &str = "/api/v1/users/";
const OPENAPI: &str = "/api/v1/openapi.json";
const API_CLIENTS: &str = "/api/v1/api-clients";
/// One API client's action (`{id}/revoke`): a catch-all, like the users'.
const API_CLIENTS_BELOW: &str = "/api/v1/api-clients/{*rest}";
const API_CLIENTS_BARE: &str = "/api/v1/api-clients/";
const OAUTH_TOKEN: &str = "/api/v1/oauth/token";

/// Every own route, as matched (`MatchedPath`): the `endpoint` label of metrics.
const ROUTES: &[&str] = &[
    REGISTER,
    LOGIN,
    REFRESH,
    LOGOUT,
    MFA_ENROLL,
    MFA_CONFIRM,
    MFA_VERIFY,
    MFA_DISABLE,
    PASSWORD,
    PASSWORD_RESET,
    PASSWORD_RESET_CONFIRM,
    CLINIC_SECURITY,
    AUTH_OTHER,
    AUTH_BARE,
    JWKS,
    AUDIT_LOGS,
    USERS,
    USERS_BELOW,
    USERS_BARE,
    OPENAPI,
    API_CLIENTS,
    API_CLIENTS_BELOW,
    API_CLIENTS_BARE,
    OAUTH_TOKEN,
];

/// The public router: the own endpoints, then forwarding as the fallback.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(REGISTER, any(register))
        .route(LOGIN, any(login))
        .route(REFRESH, any(refresh))
        .route(LOGOUT, any(logout))
        .route(MFA_ENROLL, any(mfa_enroll))
        .route(MFA_CONFIRM, any(mfa_confirm))
        .route(MFA_VERIFY, any(mfa_verify))
        .route(MFA_DISABLE, any(mfa_disable))
        .route(PASSWORD, any(change_password))
        .route(PASSWORD_RESET, any(password_reset))
        .route(PASSWORD_RESET_CONFIRM, any(password_reset_confirm))
        .route(CLINIC_SECURITY, any(clinic_security))
        .route(AUTH_OTHER, any(no_such_endpoint))
        .route(AUTH_BARE, any(no_such_endpoint))
        .route(JWKS, any(jwks))
        .route(AUDIT_LOGS, any(audit_logs))
        .route(USERS, any(users))
        .route(USERS_BELOW, any(users))
        .route(USERS_BARE, any(users))
        .route(OPENAPI, any(openapi))
        .route(API_CLIENTS, any(api_clients))
        .route(API_CLIENTS_BELOW, any(api_clients))
        .route(API_CLIENTS_BARE, any(api_clients))
        .route(OAUTH_TOKEN, any(oauth_token))
        .route_layer(middleware::from_fn(own_endpoint))
        .fallback(forward)
        .with_state(gw)
}

/// The route class of a path: the `route` label of metrics and of the request span
/// (a fixed, small set: `auth`, `admin`, `openapi`, `proxy`, `other`).
fn route_class(path: &str) -> &'static str {
    if path.starts_with("/api/v1/auth/") || path == OAUTH_TOKEN {
        "auth"
    } else if path == AUDIT_LOGS
        || path == CLINIC_SECURITY
        || path.starts_with(USERS)
        || path.starts_with(API_CLIENTS)
    {
        "admin"
    } else if path == OPENAPI {
        "openapi"
    } else if path.starts_with("/api/v1/") {
        "proxy"
    } else {
        "other"
    }
}

/// Keeps the matched route of an own endpoint on its response, for the envelope's
/// metrics.
async fn own_endpoint(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// The `endpoint` metric label of an answer: its own route, or empty (forwarded).
fn endpoint(response: &Response) -> &'static str {
    response
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()))
        .copied()
        .unwrap_or("")
}

/// What the gateway says about a public request to the shared observation
/// ([`httpkit::observe`]): the client's request id when sane, else a new one, echoed
/// as `x-request-id`; the route class; the request's [`Ctx`] (request id, client
/// address) put in its extensions; the matched own endpoint as the `endpoint` label
/// (empty when forwarded); a panic answered as any other internal error.
struct Public<'a> {
    gw: &'a Gateway,
    peer: SocketAddr,
}

impl httpkit::Observer for Public<'_> {
    const COMPONENT: &'static str = "gateway";
    const ECHO_REQUEST_ID: bool = true;
    type Body = Body;

    fn request_id<B>(&self, req: &http::Request<B>) -> Option<RequestId> {
        Some(
            req.headers()
                .get(common::internal::HEADER_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(RequestId::parse)
                .unwrap_or_else(RequestId::generate),
        )
    }

    fn route<B>(&self, req: &http::Request<B>) -> &'static str {
        route_class(req.uri().path())
    }

    fn admit<B>(&self, req: &mut http::Request<B>, request_id: Option<RequestId>) {
        if let Some(request_id) = request_id {
            let ctx = Ctx {
                request_id,
                client_ip: client_ip(&self.gw.config, self.peer.ip(), req.headers()),
            };
            req.extensions_mut().insert(ctx);
        }
    }

    fn endpoint(response: &Response) -> Option<&'static str> {
        Some(endpoint(response))
    }

    fn panicked() -> Response {
        GatewayError::Internal("a handler panicked".into()).into_response()
    }

    fn finished(status: StatusCode, elapsed: std::time::Duration) {
        httpkit::request_line!(status, elapsed);
    }
}

/// One public request, start to finish: the router observed as every request of
/// both services is ([`httpkit::Observed`]: request id, span, panic guard — a bug
/// costs one request a `500`, never the connection or the process —
/// `x-request-id` on the answer, duration recorded by route class and endpoint),
/// with the client's address for its [`Ctx`]. Every log line of the request carries
/// the span's fields; `clinic` and `user` are recorded once a token or a login
/// names them (`note_caller`).
pub async fn envelope(
    router: Router,
    gw: &Gateway,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response, Infallible> {
    // The router is always ready (axum's `Router::poll_ready`), as before.
    httpkit::Observed::new(router, Public { gw, peer })
        .call(req)
        .await
}

/// `405` unless the request's method is `method`.
fn only(req: &Request, method: Method) -> Result<(), GatewayError> {
    if *req.method() == method {
        Ok(())
    } else {
        Err(GatewayError::MethodNotAllowed)
    }
}

/// The request's JSON body, bounded (`MAX_BODY_BYTES`) and timed.
async fn body<T: DeserializeOwned>(gw: &Gateway, req: Request) -> Result<T, GatewayError> {
    h::read_json(
        req,
        gw.config.max_body_bytes,
        gw.config.connections.body_read_timeout,
    )
    .await
}

async fn register(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let body = body(&gw, req).await?;
    let out = auth::register(&gw, &ctx, body).await?;
    Ok(h::json(StatusCode::CREATED, &out))
}

async fn login(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let body = body(&gw, req).await?;
    Ok(h::json(
        StatusCode::OK,
        &auth::login(&gw, &ctx, body).await?,
    ))
}

async fn refresh(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let body = body(&gw, req).await?;
    Ok(h::json(
        StatusCode::OK,
        &auth::refresh(&gw, &ctx, body).await?,
    ))
}

async fn logout(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let body = body(&gw, req).await?;
    auth::logout(&gw, &ctx, body).await?;
    Ok(h::empty(StatusCode::NO_CONTENT))
}

/// Whether the request sends a bearer token (or anything in `Authorization`).
fn sends_token(req: &Request) -> bool {
    req.headers().contains_key(http::header::AUTHORIZATION)
}

/// The JSON body of a request that sent no token: without one either (an empty
/// body), it is `401` like any call that needs a token.
async fn body_instead_of_token<T: DeserializeOwned>(
    gw: &Gateway,
    req: Request,
) -> Result<T, GatewayError> {
    let (parts, raw) = req.into_parts();
    let bytes = h::read_body(
        &parts.headers,
        raw,
        gw.config.max_body_bytes,
        gw.config.connections.body_read_timeout,
    )
    .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::MissingToken);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::BadRequest(format!("Invalid JSON body: {e}.")))
}

/// With a bearer token: the signed-in user enrols; without one, the sign-in the
/// body's `mfa_token` names (its clinic requires MFA).
async fn mfa_enroll(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let who = if sends_token(&req) {
        mfa::Enrolling::Signed(active_caller(&gw, &ctx, req.headers()).await?.0)
    } else {
        body_instead_of_token::<mfa::EnrollRequest>(&gw, req)
            .await?
            .enrolling()
    };
    Ok(h::json(StatusCode::OK, &mfa::enroll(&gw, &ctx, who).await?))
}

async fn mfa_confirm(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let (claims, body) = if sends_token(&req) {
        let claims = active_caller(&gw, &ctx, req.headers()).await?.0;
        (Some(claims), body(&gw, req).await?)
    } else {
        (None, body_instead_of_token(&gw, req).await?)
    };
    Ok(h::json(
        StatusCode::OK,
        &mfa::confirm(&gw, &ctx, claims, body).await?,
    ))
}

async fn mfa_verify(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let body = body(&gw, req).await?;
    Ok(h::json(
        StatusCode::OK,
        &mfa::verify(&gw, &ctx, body).await?,
    ))
}

async fn mfa_disable(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let (claims, _) = active_caller(&gw, &ctx, req.headers()).await?;
    let body = body(&gw, req).await?;
    mfa::disable(&gw, &ctx, &claims, body).await?;
    Ok(h::empty(StatusCode::NO_CONTENT))
}

/// The signed-in user's own password: a fresh token pair, every other session ended.
async fn change_password(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let (claims, _) = active_caller(&gw, &ctx, req.headers()).await?;
    let body = body(&gw, req).await?;
    Ok(h::json(
        StatusCode::OK,
        &passwords::change(&gw, &ctx, &claims, body).await?,
    ))
}

/// Always `202` with the same body, whether or not the address is known.
async fn password_reset(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let body = body(&gw, req).await?;
    Ok(h::json(
        StatusCode::ACCEPTED,
        &passwords::request_reset(&gw, &ctx, body).await?,
    ))
}

async fn password_reset_confirm(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let body = body(&gw, req).await?;
    passwords::confirm_reset(&gw, &ctx, body).await?;
    Ok(h::empty(StatusCode::NO_CONTENT))
}

/// `GET` (any user of the clinic) and `PATCH` (its admins) of the sign-in policy.
async fn clinic_security(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    let (claims, _) = active_caller(&gw, &ctx, req.headers()).await?;
    match *req.method() {
        Method::GET => Ok(h::json(StatusCode::OK, &mfa::security(&gw, &claims).await?)),
        Method::PATCH => {
            users::admin_only(&claims)?;
            let body = body(&gw, req).await?;
            Ok(h::json(
                StatusCode::OK,
                &mfa::change_security(&gw, &ctx, &claims, body).await?,
            ))
        }
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

async fn no_such_endpoint() -> GatewayError {
    GatewayError::NotFound
}

/// A serialised document with its content type.
fn document(bytes: &bytes::Bytes, content_type: &'static str) -> Response {
    let mut r = Response::new(h::full(bytes.clone()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn jwks(State(gw): Shared, req: Request) -> Answer {
    only(&req, Method::GET)?;
    Ok(document(&gw.jwks, "application/jwk-set+json"))
}

/// `GET` is the gateway's document; any other method is forwarded (the worker
/// answers it).
async fn openapi(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    if req.method() == Method::GET {
        Ok(document(&gw.openapi, "application/json"))
    } else {
        proxy::forward(&gw, &ctx, req).await
    }
}

async fn audit_logs(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::GET)?;
    let (claims, _) = active_caller(&gw, &ctx, req.headers()).await?;
    let query = req.uri().query().unwrap_or("");
    Ok(h::json(
        StatusCode::OK,
        &trail::list(&gw, &ctx, &claims, query).await?,
    ))
}

/// `/api/v1/users` and below: the caller's token first, then by method and the
/// path's segments after `/api/v1/users` (taken as sent, not percent-decoded).
async fn users(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    let (claims, _) = active_caller(&gw, &ctx, req.headers()).await?;
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_start_matches(USERS)
        .split('/')
        .skip(1)
        .map(str::to_owned)
        .collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, []) => Ok(h::json(StatusCode::OK, &users::list(&gw, &claims).await?)),
        (Method::POST, []) => {
            // The role first: a non-admin learns nothing from body checks.
            users::admin_only(&claims)?;
            let body = body(&gw, req).await?;
            Ok(h::json(
                StatusCode::CREATED,
                &users::create(&gw, &ctx, &claims, body).await?,
            ))
        }
        (Method::PATCH, [id]) => {
            users::admin_only(&claims)?;
            let body = body(&gw, req).await?;
            Ok(h::json(
                StatusCode::OK,
                &users::patch(&gw, &ctx, &claims, id, body).await?,
            ))
        }
        (Method::POST, [id, action]) => {
            let change = match action.as_str() {
                "disable" => Change::Disable,
                "enable" => Change::Enable,
                "sign-out" => Change::SignOut,
                _ => return Err(GatewayError::NotFound),
            };
            let user = users::change(&gw, &ctx, &claims, id, change).await?;
            Ok(h::json(StatusCode::OK, &user))
        }
        (Method::POST, [id, mfa, reset]) if mfa == "mfa" && reset == "reset" => {
            mfa::reset(&gw, &ctx, &claims, id).await?;
            Ok(h::empty(StatusCode::NO_CONTENT))
        }
        (_, [_, mfa, reset]) if mfa == "mfa" && reset == "reset" => {
            Err(GatewayError::MethodNotAllowed)
        }
        (_, []) | (_, [_]) => Err(GatewayError::MethodNotAllowed),
        (_, [_, action]) if matches!(action.as_str(), "disable" | "enable" | "sign-out") => {
            Err(GatewayError::MethodNotAllowed)
        }
        _ => Err(GatewayError::NotFound),
    }
}

/// `/api/v1/api-clients` and below: a clinic admin's API clients.
async fn api_clients(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    let (claims, _) = active_caller(&gw, &ctx, req.headers()).await?;
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_start_matches(API_CLIENTS)
        .split('/')
        .skip(1)
        .map(str::to_owned)
        .collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, []) => Ok(h::json(
            StatusCode::OK,
            &api_clients::list(&gw, &claims).await?,
        )),
        (Method::POST, []) => {
            users::admin_only(&claims)?;
            let body = body(&gw, req).await?;
            Ok(h::json(
                StatusCode::CREATED,
                &api_clients::create(&gw, &ctx, &claims, body).await?,
            ))
        }
        (Method::POST, [id, action]) if action == "revoke" => Ok(h::json(
            StatusCode::OK,
            &api_clients::revoke(&gw, &ctx, &claims, id).await?,
        )),
        (_, []) => Err(GatewayError::MethodNotAllowed),
        (_, [_, action]) if action == "revoke" => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

/// `POST /api/v1/oauth/token`: RFC 6749 errors, except throttling and outages,
/// which are answered as problem+json like everywhere else.
async fn oauth_token(State(gw): Shared, ctx: Ctx, req: Request) -> Answer {
    only(&req, Method::POST)?;
    let (parts, raw) = req.into_parts();
    let bytes = h::read_body(
        &parts.headers,
        raw,
        gw.config.max_body_bytes,
        gw.config.connections.body_read_timeout,
    )
    .await?;
    match api_clients::token(&gw, &ctx, &parts.headers, &bytes).await {
        Ok(out) => {
            let mut res = h::json(StatusCode::OK, &out);
            res.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            Ok(res)
        }
        Err(TokenRefusal::OAuth(status, error)) => Ok(api_clients::oauth_error(status, error)),
        Err(TokenRefusal::Gateway(e)) => Err(e),
    }
}

/// The fallback: every other `/api/v1/` path goes to the clinic's worker; anything
/// else is `404`. Kept lean: no extractor but the state, the request's `Ctx` taken
/// out of its extensions rather than cloned.
async fn forward(State(gw): Shared, mut req: Request) -> Answer {
    if !req.uri().path().starts_with("/api/v1/") {
        return Err(GatewayError::NotFound);
    }
    let ctx = req
        .extensions_mut()
        .remove::<Ctx>()
        .ok_or_else(|| GatewayError::Internal("no request context".into()))?;
    proxy::forward(&gw, &ctx, req).await
}

/// The admin listener's router: `/healthz`, `/readyz` (`503` once draining; not
/// tied to the central database, whose outage cached placements ride out) and
/// `/metrics`, for any method; anything else is a plain `404`.
pub fn admin_router(gw: Arc<Gateway>, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", any(|| async { text(StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            any(|State(gw): Shared| async move {
                if gw.is_draining() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else {
                    text(StatusCode::OK, "ready\n")
                }
            }),
        )
        .route(
            "/metrics",
            any(move |State(gw): Shared| async move {
                metrics::gauge!(m::PLACEMENT_CACHE_SIZE).set(gw.cache.len() as f64);
                let mut r = text(StatusCode::OK, prometheus.render());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }),
        )
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n") })
        .with_state(gw)
}

/// A plain-text answer without a content type, as the admin listener gives.
fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut r = Response::new(h::full(body));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which own route each path takes (`None`: the fallback, forwarding).
    #[tokio::test]
    async fn paths_reach_their_routes() {
        let mut table = Router::new();
        for route in ROUTES {
            table = table.route(
                route,
                any(move || async move { (StatusCode::OK, *route).into_response() }),
            );
        }
        let mut table = table.fallback(|| async { StatusCode::IM_A_TEAPOT });
        let cases = [
            ("/api/v1/auth/login", Some(LOGIN)),
            ("/api/v1/auth/login/x", Some(AUTH_OTHER)),
            ("/api/v1/auth/", Some(AUTH_BARE)),
            ("/api/v1/auth/%6Cogin", Some(AUTH_OTHER)),
            ("/api/v1/users", Some(USERS)),
            ("/api/v1/users/", Some(USERS_BARE)),
            ("/api/v1/users/abc", Some(USERS_BELOW)),
            ("/api/v1/users/abc/disable", Some(USERS_BELOW)),
            ("/api/v1/users//disable", Some(USERS_BELOW)),
            ("/api/v1/users/a/b/c", Some(USERS_BELOW)),
            ("/api/v1/users/abc/mfa/reset", Some(USERS_BELOW)),
            ("/api/v1/auth/mfa/enroll", Some(MFA_ENROLL)),
            ("/api/v1/auth/mfa/confirm", Some(MFA_CONFIRM)),
            ("/api/v1/auth/mfa/verify", Some(MFA_VERIFY)),
            ("/api/v1/auth/mfa/disable", Some(MFA_DISABLE)),
            ("/api/v1/auth/mfa/other", Some(AUTH_OTHER)),
            ("/api/v1/clinic-security", Some(CLINIC_SECURITY)),
            ("/api/v1/clinic-security/x", None),
            ("/api/v1/openapi.json", Some(OPENAPI)),
            ("/.well-known/jwks.json", Some(JWKS)),
            ("/api/v1/audit-logs", Some(AUDIT_LOGS)),
            ("/api/v1/audit-logs/x", None),
            ("/api/v1/usersx", None),
            ("/api/v1/patients", None),
            ("/api/v1/auth", None),
            ("/", None),
        ];
        for (path, expected) in cases {
            let req = http::Request::get(path).body(Body::empty()).unwrap();
            let response = table.call(req).await.unwrap();
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            let got = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
            assert_eq!(got.as_deref(), expected, "{path}");
        }
    }
}
