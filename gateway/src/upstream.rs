//! The way to the regional workers: a kept-alive HTTP client (HTTPS with the
//! gateway's client certificate for `https` workers), the signed internal headers,
//! hop-by-hop and internal headers stripped, and upstream failures told apart
//! (unreachable, connection lost, timeout, not proper HTTP).

use crate::error::GatewayError;
use bytes::Bytes;
use common::internal::{self, Forwarded, InternalKey};
use common::RequestId;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The body type sent upstream: the client's body, read whole and bounded.
pub type UpstreamBody = Full<Bytes>;
pub type UpstreamClient = httpkit::Client<UpstreamBody>;

/// The pooled client for workers (`httpkit::client`): plain HTTP for `http` worker
/// URLs, mutual TLS with `tls` (from `UPSTREAM_TLS_*`) for `https` ones; without
/// `tls` an `https` worker is refused at the handshake rather than reached without
/// a certificate. TLS sessions are kept alive and reused like plain connections.
pub fn client(tls: Option<Arc<rustls::ClientConfig>>) -> Result<UpstreamClient, GatewayError> {
    let tls = match tls {
        Some(tls) => tls,
        None => common::tls::client_trusting_nothing()
            .map_err(|e| GatewayError::Internal(e.to_string()))?,
    };
    let settings = httpkit::ClientSettings {
        connect_timeout: Some(Duration::from_secs(2)),
        tcp_keepalive: Some(Duration::from_secs(60)),
        pool_idle_timeout: Some(Duration::from_secs(90)),
        pool_max_idle_per_host: Some(1024),
        public_only: false,
    };
    Ok(httpkit::client(&settings, Some(tls)))
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

/// Removes hop-by-hop headers and every internal (`x-medicalpro-…`) header.
pub fn strip(headers: &mut http::HeaderMap) {
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

/// Adds the signed facts a worker trusts: time, request id, client IP, and the
/// signature over them with the method and path.
pub fn sign(
    key: &InternalKey,
    request_id: &RequestId,
    client_ip: IpAddr,
    method: &str,
    path_and_query: &str,
    headers: &mut http::HeaderMap,
) -> Result<(), GatewayError> {
    let timestamp = common::token::now_secs();
    let signature = key.sign(&Forwarded {
        timestamp,
        request_id: request_id.as_str(),
        client_ip,
        method,
        path_and_query,
    });
    let value =
        |s: String| HeaderValue::try_from(s).map_err(|e| GatewayError::Internal(e.to_string()));
    headers.insert(internal::HEADER_TIMESTAMP, value(timestamp.to_string())?);
    headers.insert(internal::HEADER_CLIENT_IP, value(client_ip.to_string())?);
    headers.insert(internal::HEADER_REQUEST_ID, value(request_id.to_string())?);
    headers.insert(internal::HEADER_SIGNATURE, value(signature)?);
    Ok(())
}

/// A worker's URL for `path_and_query`.
pub fn uri(worker_url: &str, path_and_query: &str) -> Result<Uri, GatewayError> {
    format!("{}{}", worker_url.trim_end_matches('/'), path_and_query)
        .parse()
        .map_err(|_| GatewayError::Internal(format!("bad worker url {worker_url}")))
}

/// Sends a request upstream. The timeout covers the worker's answer up to its head
/// only: a body (a clinic export can stream for minutes) is relayed frame by frame,
/// never buffered and never cut by a timeout.
pub async fn send(
    client: &UpstreamClient,
    timeout: Duration,
    req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, GatewayError> {
    match tokio::time::timeout(timeout, client.request(req)).await {
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
