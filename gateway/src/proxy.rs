//! Forwarding to regional workers: a kept-alive HTTP client (HTTPS with the
//! gateway's client certificate for `https` workers), the signed internal
//! headers, the hop-by-hop and internal headers stripped both ways, bounded bodies
//! and timeouts, and upstream failures mapped to 502/503/504.

use crate::error::GatewayError;
use crate::http::read_body;
use crate::http::{full, problem, Body};
use crate::placement::Placement;
use crate::server::Gateway;
use bytes::Bytes;
use common::internal::{self, Forwarded};
use common::problem::Problem;
use common::{ClinicId, RequestId};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Facts about the current request that the gateway established itself.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub request_id: RequestId,
    pub client_ip: IpAddr,
}

/// The body type sent upstream: the client's body, read whole and bounded.
pub type UpstreamBody = Full<Bytes>;
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// The pooled client for workers: plain HTTP for `http` worker URLs, mutual TLS
/// with `tls` (from `UPSTREAM_TLS_*`) for `https` ones; without `tls` an `https`
/// worker is refused at the handshake rather than reached without a certificate.
/// TLS sessions are kept alive and reused like plain connections.
pub fn client(tls: Option<Arc<rustls::ClientConfig>>) -> Result<UpstreamClient, GatewayError> {
    let tls = match tls {
        Some(tls) => tls,
        None => common::tls::client_trusting_nothing()
            .map_err(|e| GatewayError::Internal(e.to_string()))?,
    };
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(HttpsConnector::from((connector, tls))))
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip(headers: &mut http::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(internal::HEADER_PREFIX))
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
}

fn sign(
    gw: &Gateway,
    ctx: &Ctx,
    method: &str,
    path_and_query: &str,
    headers: &mut http::HeaderMap,
) -> Result<(), GatewayError> {
    let timestamp = common::token::now_secs();
    let signature = gw.internal.sign(&Forwarded {
        timestamp,
        request_id: ctx.request_id.as_str(),
        client_ip: ctx.client_ip,
        method,
        path_and_query,
    });
    let value =
        |s: String| HeaderValue::try_from(s).map_err(|e| GatewayError::Internal(e.to_string()));
    headers.insert(internal::HEADER_TIMESTAMP, value(timestamp.to_string())?);
    headers.insert(
        internal::HEADER_CLIENT_IP,
        value(ctx.client_ip.to_string())?,
    );
    headers.insert(
        internal::HEADER_REQUEST_ID,
        value(ctx.request_id.to_string())?,
    );
    headers.insert(internal::HEADER_SIGNATURE, value(signature)?);
    Ok(())
}

fn upstream_uri(worker_url: &str, path_and_query: &str) -> Result<Uri, GatewayError> {
    format!("{}{}", worker_url.trim_end_matches('/'), path_and_query)
        .parse()
        .map_err(|_| GatewayError::Internal(format!("bad worker url {worker_url}")))
}

/// Sends a request upstream. The timeout covers the worker's answer up to its head
/// only: a body (a clinic export can stream for minutes) is relayed frame by frame,
/// never buffered and never cut by a timeout.
async fn send(
    gw: &Gateway,
    req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, GatewayError> {
    match tokio::time::timeout(gw.config.upstream_timeout, gw.client.request(req)).await {
        Err(_) => Err(GatewayError::WorkerTimeout),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) if e.is_connect() => Err(GatewayError::WorkerUnreachable(e.to_string())),
        Ok(Err(e)) if connection_lost(&e) => Err(GatewayError::WorkerLost(e.to_string())),
        Ok(Err(e)) => Err(GatewayError::BadGateway(e.to_string())),
    }
}

/// Whether an upstream exchange failed because the worker's connection ended (the
/// worker was killed, or closed a kept-alive connection as it stopped) rather than
/// because the worker answered something that is not HTTP.
fn connection_lost(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

/// The verified claims of the request's bearer access token, and the placement of
/// its clinic, which must be active. A signed token refused because it was revoked,
/// or because its clinic is unavailable, is recorded in that clinic's audit trail
/// before the refusal is answered.
pub async fn active_caller(
    gw: &Gateway,
    ctx: &Ctx,
    headers: &http::HeaderMap,
) -> Result<(common::token::Claims, Arc<Placement>), GatewayError> {
    use common::metric_names as m;
    use common::token::TokenError;
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(common::token::bearer)
        .ok_or(GatewayError::MissingToken)?;
    let claims = match gw.config.verifier.verify(token) {
        Ok(claims) => claims,
        Err(e) => {
            let reason = match &e {
                TokenError::Expired => "expired",
                TokenError::Invalid => "invalid",
                TokenError::Revoked { .. } => "revoked",
            };
            metrics::counter!(m::ACCESS_REFUSED, "component" => "gateway", "reason" => reason)
                .increment(1);
            if let TokenError::Revoked { user, clinic } = &e {
                crate::server::note_caller(*clinic, *user);
                refused(gw, ctx, *clinic, *user, "revoked").await?;
            }
            return Err(GatewayError::Token(e));
        }
    };
    crate::server::note_caller(claims.clinic, claims.sub);
    match gw.cache.active(claims.clinic).await {
        Ok(placement) => Ok((claims, placement)),
        Err(GatewayError::ClinicUnavailable) => {
            metrics::counter!(m::ACCESS_REFUSED, "component" => "gateway", "reason" => "clinic_unavailable")
                .increment(1);
            refused(gw, ctx, claims.clinic, claims.sub, "clinic_unavailable").await?;
            Err(GatewayError::ClinicUnavailable)
        }
        Err(e) => Err(e),
    }
}

/// Records a refused access in the clinic's trail.
async fn refused(
    gw: &Gateway,
    ctx: &Ctx,
    clinic: ClinicId,
    user: common::UserId,
    outcome: &str,
) -> Result<(), GatewayError> {
    let mut record = common::audit::Record::now("access", "api", outcome);
    record.user_id = Some(*user.as_uuid());
    record.client_ip = Some(ctx.client_ip);
    record.request_id = Some(ctx.request_id.to_string());
    crate::auth::record(gw, clinic, &record).await
}

/// Forwards an authenticated clinic request to its worker and streams the answer back.
pub async fn forward(
    gw: &Gateway,
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let (claims, placement) = active_caller(gw, ctx, req.headers()).await?;
    if placement.read_only && !req.method().is_safe() {
        return Err(GatewayError::ClinicRelocating);
    }
    let (mut parts, body) = req.into_parts();
    // Bodies are bounded (MAX_BODY_BYTES) and read whole before forwarding, so an
    // oversized chunked body is a clean 413 and a worker that answers before reading
    // the body (a 400 for a bad path) cannot break the exchange. Responses stream.
    let bytes = read_body(
        &parts.headers,
        body,
        gw.config.max_body_bytes,
        gw.config.connections.body_read_timeout,
    )
    .await?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = upstream_uri(&placement.worker_url, &path_and_query)?;
    parts.headers.remove(HOST);
    strip(&mut parts.headers);
    sign(
        gw,
        ctx,
        parts.method.as_str(),
        &path_and_query,
        &mut parts.headers,
    )?;
    parts.version = http::Version::HTTP_11;
    let upstream = send(gw, Request::from_parts(parts, Full::new(bytes))).await?;

    if upstream.status() == http::StatusCode::MISDIRECTED_REQUEST {
        // The clinic moved since we cached its placement.
        gw.cache.invalidate(claims.clinic);
        return Err(GatewayError::Misrouted);
    }
    let (mut parts, body) = upstream.into_parts();
    strip(&mut parts.headers);
    if is_bare_error(&parts) {
        return Ok(as_problem(parts));
    }
    Ok(Response::from_parts(parts, body.boxed()))
}

/// Whether a worker answer is an error without a problem+json body: one its HTTP
/// framework gave by itself (`405` for a method a route does not serve, `400` for
/// a path segment that is not UTF-8 once percent-decoded).
fn is_bare_error(parts: &http::response::Parts) -> bool {
    let problem = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(common::problem::CONTENT_TYPE));
    (parts.status.is_client_error() || parts.status.is_server_error()) && !problem
}

/// Replaces a bare error's body with a problem of the same status, so that every
/// error a client reads is problem+json. Headers such as `allow` are kept.
fn as_problem(mut parts: http::response::Parts) -> Response<Body> {
    let status = parts.status;
    let title = status.canonical_reason().unwrap_or("Error");
    let slug = title.to_ascii_lowercase().replace(' ', "-");
    let problem = Problem::new(status.as_u16(), &slug, title).with_detail(if status
        == http::StatusCode::METHOD_NOT_ALLOWED
    {
        "This endpoint does not serve that method; see the `allow` header and /api/v1/openapi.json."
    } else {
        "The request could not be served; see /api/v1/openapi.json."
    });
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(common::problem::CONTENT_TYPE),
    );
    Response::from_parts(parts, full(problem.to_json()))
}

/// Asks a region's worker to provision a clinic (registration).
pub async fn provision(
    gw: &Gateway,
    ctx: &Ctx,
    clinic: ClinicId,
    region: &str,
) -> Result<(), GatewayError> {
    let worker_url = {
        let client = gw.central.get().await?;
        let row = client
            .query_one("SELECT worker_url FROM regions WHERE name = $1", &[&region])
            .await
            .map_err(GatewayError::from_db)?;
        row.get::<_, String>(0)
    };
    let path = format!("/internal/v1/clinics/{clinic}/provision");
    let mut headers = http::HeaderMap::new();
    sign(gw, ctx, "POST", &path, &mut headers)?;
    let mut req = Request::post(upstream_uri(&worker_url, &path)?)
        .body(Full::new(Bytes::new()))
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    *req.headers_mut() = headers;
    let outcome =
        tokio::time::timeout(crate::auth::PROVISION_TIMEOUT, gw.client.request(req)).await;
    match outcome {
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => {
            let status = r.status();
            let body = r
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Err(GatewayError::ProvisioningIncomplete(format!(
                "worker answered {status}: {}",
                String::from_utf8_lossy(&body)
            )))
        }
        Ok(Err(e)) => Err(GatewayError::ProvisioningIncomplete(e.to_string())),
        Err(_) => Err(GatewayError::ProvisioningIncomplete("timed out".into())),
    }
}

/// Renders an error for the client (used by the router).
pub fn error_response(e: &GatewayError) -> Response<Body> {
    problem(e)
}
