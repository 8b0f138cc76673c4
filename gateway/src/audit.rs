//! The gateway's writes to the central audit trail outside a transaction of their
//! own making: one record committed before the caller answers. Handlers that change
//! something append their record in the transaction of the change instead
//! (`pgconn::audit::append`).

use crate::error::GatewayError;
use crate::state::{Ctx, Gateway};
use common::audit::Record;
use common::{ClinicId, UserId};

/// An audit record of an authentication event by `user`.
pub fn session_record(ctx: &Ctx, user: Option<UserId>, action: &str, outcome: &str) -> Record {
    let mut r = Record::now(action, "session", outcome);
    r.user_id = user.map(|u| *u.as_uuid());
    r.client_ip = Some(ctx.client_ip);
    r.request_id = Some(ctx.request_id.to_string());
    r
}

/// A record of `action` on `resource` by `user`, from the request's client.
pub fn request_record(
    ctx: &Ctx,
    user: UserId,
    action: &str,
    resource: &str,
    outcome: &str,
) -> Record {
    let mut r = Record::now(action, resource, outcome);
    r.user_id = Some(*user.as_uuid());
    r.client_ip = Some(ctx.client_ip);
    r.request_id = Some(ctx.request_id.to_string());
    r
}

/// Records one event in a transaction of its own; the caller answers only once it
/// is recorded (an unrecordable event is a `503`, as for any clinic access).
pub async fn record(gw: &Gateway, clinic: ClinicId, r: &Record) -> Result<(), GatewayError> {
    let client = gw.central.get().await?;
    pgconn::audit::record(&client, &gw.config.audit_keys, clinic, r)
        .await
        .map_err(GatewayError::from_db)
}
