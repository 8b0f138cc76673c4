//! What every request can reach: the gateway's shared parts ([`Gateway`]), the facts
//! the gateway established about one request ([`Ctx`]), and how those are found (the
//! client's address behind trusted proxies, the caller named in the request's span).
//! Handlers depend on this module; it depends on no handler.

use crate::config::Config;
use crate::password::Hasher;
use crate::placement::PlacementCache;
use crate::upstream::UpstreamClient;
use bytes::Bytes;
use common::internal::InternalKey;
use common::RequestId;
use deadpool_postgres::Pool;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Everything a request may need.
pub struct Gateway {
    pub config: Config,
    pub central: Pool,
    pub internal: InternalKey,
    pub hasher: Hasher,
    pub cache: Arc<PlacementCache>,
    pub client: UpstreamClient,
    /// The OpenAPI document, serialised once.
    pub openapi: Bytes,
    /// The token verification keys (JWKS), serialised once.
    pub jwks: Bytes,
    /// Set once shutdown began: `/readyz` turns 503 so load balancers stop sending.
    pub draining: AtomicBool,
    /// Bytes of large uploads held in memory (`UPLOAD_BUFFER_BYTES`).
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    /// Whether shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Marks the gateway as shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Facts about the current request that the gateway established itself.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub request_id: RequestId,
    pub client_ip: IpAddr,
}

/// Own endpoints take the request's `Ctx` as an argument; the envelope
/// ([`crate::routes::envelope`]) put it in the request's extensions.
impl<S: Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = crate::error::GatewayError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| crate::error::GatewayError::Internal("no request context".into()))
    }
}

/// The client's address: the socket peer, or the last untrusted `X-Forwarded-For`
/// hop when the peer is a configured trusted proxy.
pub fn client_ip(config: &Config, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
    if !config.trusted_proxies.contains(&peer) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .rev()
        .find(|ip| !config.trusted_proxies.contains(ip))
        .unwrap_or(peer)
}

/// Names the request's clinic and user in its log lines, once a verified token, a
/// login or a registration established them.
pub fn note_caller(clinic: common::ClinicId, user: common::UserId) {
    let span = tracing::Span::current();
    span.record("clinic", tracing::field::display(clinic));
    span.record("user", tracing::field::display(user));
}
