//! Small HTTP helpers: the response body type, JSON responses, and reading a
//! bounded request body within a time limit.

use crate::error::GatewayError;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

/// Every body the gateway sends or receives: its own or a worker's, streamed.
pub type Body = axum::body::Body;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::from(bytes.into())
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
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

/// Reads a whole body of at most `limit` bytes within `timeout`: a declared
/// `content-length` over the limit is refused before reading, a chunked body as
/// soon as it passes it, and a client sending it too slowly gets `408`.
pub async fn read_body(
    headers: &http::HeaderMap,
    body: Body,
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
    req: http::Request<Body>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<T, GatewayError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, limit, timeout).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::BadRequest(format!("Invalid JSON body: {e}.")))
}
