//! Who is calling: the extractor that checks the gateway's signature and the user's
//! token before any handler runs, and yields the clinic from the token only.

use crate::error::WorkerError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use common::internal::{self, Forwarded};
use common::token::{self, Role};
use common::{ClinicId, RequestId, UserId};
use std::net::IpAddr;

/// Facts about a forwarded request that the gateway signed.
#[derive(Clone, Debug)]
pub struct Forward {
    pub client_ip: IpAddr,
    pub request_id: RequestId,
}

/// An authenticated user of a clinic.
#[derive(Clone, Debug)]
pub struct Caller {
    pub clinic: ClinicId,
    pub user: UserId,
    pub role: Role,
    pub client_ip: IpAddr,
    pub request_id: RequestId,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

impl FromRequestParts<AppState> for Forward {
    type Rejection = WorkerError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use common::internal::CredentialError::Missing;
        let missing = || WorkerError::GatewayCredential(Missing);
        let timestamp: i64 = header(parts, internal::HEADER_TIMESTAMP)
            .and_then(|v| v.parse().ok())
            .ok_or_else(missing)?;
        let client_ip: IpAddr = header(parts, internal::HEADER_CLIENT_IP)
            .and_then(|v| v.parse().ok())
            .ok_or_else(missing)?;
        let request_id = header(parts, internal::HEADER_REQUEST_ID)
            .and_then(RequestId::parse)
            .ok_or_else(missing)?;
        let signature = header(parts, internal::HEADER_SIGNATURE).ok_or_else(missing)?;
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let forwarded = Forwarded {
            timestamp,
            request_id: request_id.as_str(),
            client_ip,
            method: parts.method.as_str(),
            path_and_query,
        };
        state
            .internal
            .verify(&forwarded, signature, token::now_secs())
            .map_err(WorkerError::GatewayCredential)?;
        Ok(Forward {
            client_ip,
            request_id,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = WorkerError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let forward = Forward::from_request_parts(parts, state).await?;
        let token = header(parts, "authorization")
            .and_then(token::bearer)
            .ok_or(WorkerError::Token(token::TokenError::Invalid))?;
        let claims = state.tokens.verify(token).map_err(|e| {
            let reason = match &e {
                token::TokenError::Expired => "expired",
                token::TokenError::Invalid => "invalid",
                token::TokenError::Revoked { .. } => "revoked",
            };
            metrics::counter!(common::metric_names::ACCESS_REFUSED, "component" => "worker", "reason" => reason)
                .increment(1);
            WorkerError::Token(e)
        })?;
        // The request's log lines name the verified clinic and user from here on.
        let span = tracing::Span::current();
        span.record("clinic", tracing::field::display(claims.clinic));
        span.record("user", tracing::field::display(claims.sub));
        Ok(Caller {
            clinic: claims.clinic,
            user: claims.sub,
            role: claims.role,
            client_ip: forward.client_ip,
            request_id: forward.request_id,
        })
    }
}
