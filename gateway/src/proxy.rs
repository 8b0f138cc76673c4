//! Forwarding an authenticated clinic request to its worker: the body bounded and
//! read whole, the request signed, the answer streamed back, a bare upstream error
//! turned into problem+json, and a misrouted answer dropping the cached placement.
//!
//! A file uploaded onto a patient (`POST /api/v1/patients/{id}/attachments`) is
//! read whole too, up to its own limit (`MAX_ATTACHMENT_BYTES`, 25 MiB) within its
//! own time (`ATTACHMENT_READ_TIMEOUT_SECS`, 5 minutes: 25 MiB over a slow uplink),
//! rather than streamed through: a time limit keeps applying to slow clients,
//! a worker that refuses early (`403`, `404`, `415`) cannot break the exchange,
//! and the worker, which writes the content in one transaction as it reads it,
//! never holds a clinic connection open at the pace of a client's upload — it
//! reads from the gateway at local network speed. Downloads stream.

use crate::caller::active_caller;
use crate::error::GatewayError;
use crate::http::{full, read_body, Body};
use crate::state::{Ctx, Gateway};
use crate::upstream;
use common::problem::Problem;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response};
use http_body_util::Full;

/// Forwards an authenticated clinic request to its worker and streams the answer back.
pub async fn forward(
    gw: &Gateway,
    ctx: &Ctx,
    req: Request<Body>,
) -> Result<Response<Body>, GatewayError> {
    let (claims, placement) = active_caller(gw, ctx, req.headers()).await?;
    if placement.read_only && !req.method().is_safe() {
        return Err(GatewayError::ClinicRelocating);
    }
    let (mut parts, body) = req.into_parts();
    // Bodies are bounded (MAX_BODY_BYTES) and read whole before forwarding, so an
    // oversized chunked body is a clean 413 and a worker that answers before reading
    // the body (a 400 for a bad path) cannot break the exchange. Responses stream.
    let read_timeout = gw.config.connections.body_read_timeout;
    let (limit, read_timeout) = if parts.uri.path() == "/api/v1/patients/import" {
        (gw.config.max_import_bytes, read_timeout)
    } else if is_attachment_upload(&parts.method, parts.uri.path()) {
        (
            gw.config.max_attachment_bytes,
            gw.config.attachment_read_timeout,
        )
    } else {
        (gw.config.max_body_bytes, read_timeout)
    };
    // Large bodies (imports, files) are held whole: their bytes come out of one
    // gateway-wide budget, reserved before reading (the declared length, or the
    // limit when none is declared), so no number of clients can exhaust memory.
    let _reserved = if limit > gw.config.max_body_bytes {
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(limit)
            .min(limit);
        let permits = u32::try_from(declared).unwrap_or(u32::MAX);
        Some(
            gw.uploads
                .clone()
                .try_acquire_many_owned(permits)
                .map_err(|_| GatewayError::UploadsBusy)?,
        )
    } else {
        None
    };
    let bytes = read_body(&parts.headers, body, limit, read_timeout).await?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = upstream::uri(&placement.worker_url, &path_and_query)?;
    parts.headers.remove(HOST);
    upstream::strip(&mut parts.headers);
    upstream::sign(
        &gw.internal,
        &ctx.request_id,
        ctx.client_ip,
        parts.method.as_str(),
        &path_and_query,
        &mut parts.headers,
    )?;
    parts.version = http::Version::HTTP_11;
    let request = Request::from_parts(parts, Full::new(bytes));
    let answer = upstream::send(&gw.client, gw.config.upstream_timeout, request).await?;

    if answer.status() == http::StatusCode::MISDIRECTED_REQUEST {
        // The clinic moved since we cached its placement.
        gw.cache.invalidate(claims.clinic);
        return Err(GatewayError::Misrouted);
    }
    let (mut parts, body) = answer.into_parts();
    upstream::strip(&mut parts.headers);
    if is_bare_error(&parts) {
        return Ok(as_problem(parts));
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Whether a request uploads a file onto a patient: `POST
/// /api/v1/patients/{id}/attachments` (any id: the worker checks it).
fn is_attachment_upload(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST
        && path
            .strip_prefix("/api/v1/patients/")
            .and_then(|rest| rest.strip_suffix("/attachments"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_upload_onto_one_patient_takes_the_attachment_limit() {
        let post = http::Method::POST;
        assert!(is_attachment_upload(
            &post,
            "/api/v1/patients/0190a1b2-0000-7000-8000-000000000000/attachments"
        ));
        assert!(!is_attachment_upload(
            &http::Method::GET,
            "/api/v1/patients/x/attachments"
        ));
        assert!(!is_attachment_upload(
            &post,
            "/api/v1/patients//attachments"
        ));
        assert!(!is_attachment_upload(
            &post,
            "/api/v1/patients/a/b/attachments"
        ));
        assert!(!is_attachment_upload(&post, "/api/v1/patients/import"));
    }
}
