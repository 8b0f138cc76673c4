//! Small HTTP helpers: the response body type, JSON and problem responses, and
//! reading a bounded JSON request body.

use crate::error::GatewayError;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

/// Every response body the gateway sends: its own or a worker's, streamed.
pub type Body = BoxBody<Bytes, hyper::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn problem(e: &GatewayError) -> Response<Body> {
    let p = e.problem();
    let mut r = Response::new(full(p.to_json()));
    *r.status_mut() = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(common::problem::CONTENT_TYPE),
    );
    if let Some(secs) = p.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// Reads a whole body of at most `limit` bytes within `timeout`: a declared
/// `content-length` over the limit is refused before reading, a chunked body as
/// soon as it passes it, and a client sending it too slowly gets `408`.
pub async fn read_body(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            metrics::counter!(common::metric_names::CLIENTS_CUT_OFF, "component" => "gateway", "reason" => "body_timeout")
                .increment(1);
            GatewayError::BodyTimeout
        })?;
    Ok(collected
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                GatewayError::PayloadTooLarge(limit)
            } else {
                GatewayError::BadRequest("The request body could not be read.".into())
            }
        })?
        .to_bytes())
}

/// Reads and parses a JSON body of at most `limit` bytes within `timeout`.
pub async fn read_json<T: DeserializeOwned>(
    req: http::Request<Incoming>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<T, GatewayError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, limit, timeout).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::BadRequest(format!("Invalid JSON body: {e}.")))
}
