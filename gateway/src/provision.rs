//! Registration's call to a region's worker: provision the clinic (role, database
//! from the template, grants, first data key), within [`PROVISION_TIMEOUT`].

use crate::error::GatewayError;
use crate::state::{Ctx, Gateway};
use crate::upstream;
use bytes::Bytes;
use common::ClinicId;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// How long a registration may wait for its clinic's provisioning.
pub const PROVISION_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks a region's worker to provision a clinic and waits for its answer.
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
    upstream::sign(
        &gw.internal,
        &ctx.request_id,
        ctx.client_ip,
        "POST",
        &path,
        &mut headers,
    )?;
    let mut req = Request::post(upstream::uri(&worker_url, &path)?)
        .body(Full::new(Bytes::new()))
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    *req.headers_mut() = headers;
    let outcome = tokio::time::timeout(PROVISION_TIMEOUT, gw.client.request(req)).await;
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
