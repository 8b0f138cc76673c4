//! Users of a clinic, managed by its admins: `GET/POST /api/v1/users` and
//! `POST /api/v1/users/{id}/disable|enable`. A disabled user can no longer log in
//! or refresh; their refresh tokens are revoked at once, and their last access
//! token expires within `JWT_EXPIRE`. Every change is audited.

use crate::error::GatewayError;
use crate::password;
use crate::proxy::Ctx;
use crate::server::Gateway;
use chrono::{DateTime, SecondsFormat, Utc};
use common::token::{Claims, Role};
use common::{Email, UserId};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    password: String,
    role: String,
}

pub fn admin_only(claims: &Claims) -> Result<(), GatewayError> {
    if claims.role == Role::Admin {
        Ok(())
    } else {
        Err(GatewayError::Forbidden(
            "Only a clinic admin can manage users.",
        ))
    }
}

fn db(e: tokio_postgres::Error) -> GatewayError {
    GatewayError::from_db(e)
}

const COLUMNS: &str = "id, email, role, disabled_at IS NOT NULL, created_at";

fn user_json(row: &tokio_postgres::Row) -> Result<Value, GatewayError> {
    let created: DateTime<Utc> = row.try_get(4).map_err(db)?;
    Ok(json!({
        "id": row.try_get::<_, Uuid>(0).map_err(db)?,
        "email": row.try_get::<_, String>(1).map_err(db)?,
        "role": row.try_get::<_, String>(2).map_err(db)?,
        "disabled": row.try_get::<_, bool>(3).map_err(db)?,
        "created_at": created.to_rfc3339_opts(SecondsFormat::Micros, true),
    }))
}

async fn audit(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    action: &str,
    user: Uuid,
) -> Result<(), GatewayError> {
    let client = gw.central.get().await?;
    client
        .execute(
            "INSERT INTO audit_logs (clinic_id, user_id, action, resource, resource_id, client_ip, request_id, outcome, occurred_at) \
             VALUES ($1, $2, $3, 'users', $4, $5, $6, 'success', now())",
            &[claims.clinic.as_uuid(), claims.sub.as_uuid(), &action, &user, &ctx.client_ip, &ctx.request_id.as_str()],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// `GET /api/v1/users`: every user of the caller's clinic.
pub async fn list(gw: &Gateway, claims: &Claims) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    let client = gw.central.get().await?;
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM users WHERE company_id = $1 ORDER BY created_at, id"),
            &[claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    let data = rows.iter().map(user_json).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"data": data, "next_cursor": null}))
}

/// `POST /api/v1/users`: a new user of the caller's clinic.
pub async fn create(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    body: NewUser,
) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    let email = Email::parse(&body.email)
        .ok_or_else(|| GatewayError::BadRequest("`email` must be an e-mail address.".into()))?;
    password::check_new(&body.password)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        GatewayError::BadRequest("`role` must be one of admin, practitioner, staff.".into())
    })?;
    let hash = gw.hasher.hash(&body.password).await?;
    let id = UserId::generate();
    let client = gw.central.get().await?;
    let row = client
        .query_one(
            &format!(
                "INSERT INTO users (id, company_id, email, password_hash, role) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[id.as_uuid(), claims.clinic.as_uuid(), &email.as_str(), &hash, &role.as_str()],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => GatewayError::EmailTaken,
            _ => db(e),
        })?;
    audit(gw, ctx, claims, "create", *id.as_uuid()).await?;
    user_json(&row)
}

/// `POST /api/v1/users/{id}/disable|enable`.
pub async fn set_disabled(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    id: &str,
    disabled: bool,
) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    let id = Uuid::parse_str(id)
        .map_err(|_| GatewayError::BadRequest("The id in the path must be a UUID.".into()))?;
    if disabled && id == *claims.sub.as_uuid() {
        return Err(GatewayError::BadRequest(
            "You cannot disable your own account.".into(),
        ));
    }
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE users SET disabled_at = CASE WHEN $3 THEN coalesce(disabled_at, now()) END \
                 WHERE id = $1 AND company_id = $2 RETURNING {COLUMNS}"
            ),
            &[&id, claims.clinic.as_uuid(), &disabled],
        )
        .await
        .map_err(db)?
        .ok_or(GatewayError::NotFound)?;
    if disabled {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = $1",
            &[&id],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    audit(
        gw,
        ctx,
        claims,
        if disabled { "disable" } else { "enable" },
        id,
    )
    .await?;
    user_json(&row)
}
