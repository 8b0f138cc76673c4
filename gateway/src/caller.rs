//! Who is asking: the request's bearer access token verified, its clinic's placement
//! found and active. A signed token refused because it was revoked, or because its
//! clinic is unavailable, is recorded in that clinic's audit trail before the
//! refusal is answered.

use crate::audit;
use crate::error::GatewayError;
use crate::placement::Placement;
use crate::state::{note_caller, Ctx, Gateway};
use common::metric_names as m;
use common::token::{Claims, TokenError};
use common::{ClinicId, UserId};
use std::sync::Arc;

/// The verified claims of the request's bearer access token, and the placement of
/// its clinic, which must be active.
pub async fn active_caller(
    gw: &Gateway,
    ctx: &Ctx,
    headers: &http::HeaderMap,
) -> Result<(Claims, Arc<Placement>), GatewayError> {
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
                note_caller(*clinic, *user);
                refused(gw, ctx, *clinic, *user, "revoked").await?;
            }
            return Err(GatewayError::Token(e));
        }
    };
    note_caller(claims.clinic, claims.sub);
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
    user: UserId,
    outcome: &str,
) -> Result<(), GatewayError> {
    let record = audit::request_record(ctx, user, "access", "api", outcome);
    audit::record(gw, clinic, &record).await
}
