//! The auth endpoints: register (which provisions the clinic through its region's
//! worker), login, refresh with rotation and reuse detection, and logout.

use crate::error::GatewayError;
use crate::password;
use crate::proxy::Ctx;
use crate::server::Gateway;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::token::Role;
use common::{ClinicId, Email, UserId};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_postgres::error::SqlState;

#[derive(Deserialize)]
pub struct RegisterRequest {
    clinic_name: String,
    email: String,
    password: String,
    #[serde(default)]
    region: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

fn db(e: tokio_postgres::Error) -> GatewayError {
    GatewayError::from_db(e)
}

fn parse_email(raw: &str) -> Result<Email, GatewayError> {
    Email::parse(raw)
        .ok_or_else(|| GatewayError::BadRequest("`email` must be an e-mail address.".into()))
}

/// Records an authentication event in the central audit trail (best effort: a
/// failure is logged, the sign-in itself is not refused for it).
async fn audit_auth(
    gw: &Gateway,
    ctx: &Ctx,
    clinic: ClinicId,
    user: Option<UserId>,
    action: &str,
    outcome: &str,
) {
    let result = async {
        let client = gw.central.get().await?;
        client
            .execute(
                "INSERT INTO audit_logs (clinic_id, user_id, action, resource, resource_id, client_ip, request_id, outcome, occurred_at) \
                 VALUES ($1, $2, $3, 'session', NULL, $4, $5, $6, now())",
                &[
                    clinic.as_uuid(),
                    &user.map(|u| *u.as_uuid()),
                    &action,
                    &ctx.client_ip,
                    &ctx.request_id.as_str(),
                    &outcome,
                ],
            )
            .await
            .map_err(db)?;
        Ok::<_, GatewayError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record an authentication event");
    }
}

async fn choose_region(gw: &Gateway, asked: Option<&str>) -> Result<String, GatewayError> {
    let client = gw.central.get().await?;
    let wanted = asked.or(gw.config.default_region.as_deref());
    let shown =
        |name: &str| -> String { name.chars().filter(|c| !c.is_control()).take(64).collect() };
    if let Some(name) = asked.filter(|n| n.contains('\0')) {
        // No region has such a name (PostgreSQL text cannot even hold a NUL).
        return Err(GatewayError::UnknownRegion(shown(name)));
    }
    let row = match wanted {
        Some(name) => client
            .query_opt("SELECT name FROM regions WHERE name = $1", &[&name])
            .await
            .map_err(db)?,
        None => client
            .query_opt("SELECT name FROM regions ORDER BY name LIMIT 1", &[])
            .await
            .map_err(db)?,
    };
    match (row, asked) {
        (Some(r), _) => Ok(r.get(0)),
        (None, Some(name)) => Err(GatewayError::UnknownRegion(shown(name))),
        (None, None) => Err(GatewayError::CentralUnavailable(
            "no region is configured".into(),
        )),
    }
}

/// `POST /api/v1/auth/register`.
pub async fn register(
    gw: &Gateway,
    ctx: &Ctx,
    body: RegisterRequest,
) -> Result<Value, GatewayError> {
    let clinic_name = body.clinic_name.trim().to_owned();
    if clinic_name.is_empty() || clinic_name.chars().count() > 200 || clinic_name.contains('\0') {
        return Err(GatewayError::BadRequest(
            "`clinic_name` must be 1 to 200 characters.".into(),
        ));
    }
    let email = parse_email(&body.email)?;
    password::check_new(&body.password)?;
    let asked = body.region.as_deref().filter(|r| !r.is_empty());
    let region = choose_region(gw, asked).await?;

    // An earlier registration of the same account that did not finish is resumed.
    let existing = {
        let client = gw.central.get().await?;
        client
            .query_opt(
                "SELECT u.id, u.company_id, u.password_hash, c.status, c.region FROM users u \
                 JOIN companies c ON c.id = u.company_id WHERE lower(u.email) = $1",
                &[&email.as_str()],
            )
            .await
            .map_err(db)?
    };
    let (clinic, user, region) = match existing {
        Some(row) => {
            let hash: String = row.get(2);
            let status: String = row.get(3);
            let same_owner = gw.hasher.verify(Some(hash), &body.password).await?;
            if !same_owner || !matches!(status.as_str(), "provisioning" | "active") {
                return Err(GatewayError::EmailTaken);
            }
            if status == "active" {
                // A retry of a registration that was finished meanwhile (by the
                // worker's reconciler, or an answer lost on the way): same answer.
                let (clinic, user) = (
                    ClinicId::from_uuid(row.get(1)),
                    UserId::from_uuid(row.get(0)),
                );
                return Ok(
                    json!({"clinic_id": clinic, "user_id": user, "region": row.get::<_, String>(4)}),
                );
            }
            (
                ClinicId::from_uuid(row.get(1)),
                UserId::from_uuid(row.get(0)),
                row.get::<_, String>(4),
            )
        }
        None => {
            let hash = gw.hasher.hash(&body.password).await?;
            let clinic = ClinicId::generate();
            let user = UserId::generate();
            let mut client = gw.central.get().await?;
            let tx = client.transaction().await.map_err(db)?;
            tx.execute(
                "INSERT INTO companies (id, name, region, db_name, db_role, status) VALUES ($1, $2, $3, $4, $5, 'provisioning')",
                &[clinic.as_uuid(), &clinic_name, &region, &clinic.database_name(), &clinic.role_name()],
            )
            .await
            .map_err(db)?;
            let inserted = tx
                .execute(
                    "INSERT INTO users (id, company_id, email, password_hash, role) VALUES ($1, $2, $3, $4, 'admin')",
                    &[user.as_uuid(), clinic.as_uuid(), &email.as_str(), &hash],
                )
                .await;
            match inserted {
                Ok(_) => {}
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(GatewayError::EmailTaken)
                }
                Err(e) => return Err(db(e)),
            }
            tx.commit().await.map_err(db)?;
            (clinic, user, region)
        }
    };

    crate::server::note_caller(clinic, user);
    crate::proxy::provision(gw, ctx, clinic, &region).await?;
    gw.cache.invalidate(clinic);
    audit_auth(gw, ctx, clinic, Some(user), "register", "success").await;
    Ok(json!({"clinic_id": clinic, "user_id": user, "region": region}))
}

fn new_refresh_token() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    (token, hash)
}

async fn issue_tokens(
    gw: &Gateway,
    client: &impl deadpool_postgres::GenericClient,
    user: UserId,
    clinic: ClinicId,
    role: Role,
    family: uuid::Uuid,
) -> Result<Value, GatewayError> {
    let (access, expires_in) = gw
        .tokens
        .issue(user, clinic, role)
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    let (refresh, hash) = new_refresh_token();
    let ttl = gw.config.refresh_ttl.as_secs() as f64;
    client
        .execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            &[&hash, &family, user.as_uuid(), &ttl],
        )
        .await
        .map_err(db)?;
    Ok(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": refresh,
    }))
}

/// `POST /api/v1/auth/login`.
pub async fn login(gw: &Gateway, ctx: &Ctx, body: LoginRequest) -> Result<Value, GatewayError> {
    // No account has such an e-mail (PostgreSQL text cannot even hold a NUL).
    if body.password.chars().count() > password::MAX_LEN
        || body.email.len() > Email::MAX_LEN
        || body.email.contains('\0')
    {
        return Err(GatewayError::BadCredentials);
    }
    let account = body.email.trim().to_lowercase();
    if let Some(wait) = gw.throttle.blocked(&account, ctx.client_ip) {
        metrics::counter!(common::metric_names::LOGIN_FAILURES, "reason" => "throttled")
            .increment(1);
        return Err(GatewayError::Throttled(wait));
    }
    let client = gw.central.get().await?;
    let row = client
        .query_opt(
            "SELECT u.id, u.company_id, u.password_hash, u.role, u.disabled_at IS NOT NULL, c.status \
             FROM users u JOIN companies c ON c.id = u.company_id WHERE lower(u.email) = $1",
            &[&account],
        )
        .await
        .map_err(db)?;
    let hash = row.as_ref().map(|r| r.get::<_, String>(2));
    let verified = gw.hasher.verify(hash, &body.password).await?;
    let known = row
        .as_ref()
        .map(|r| (ClinicId::from_uuid(r.get(1)), UserId::from_uuid(r.get(0))));
    let Some(row) = row.filter(|r| verified && !r.get::<_, bool>(4)) else {
        gw.throttle.failed(&account, ctx.client_ip);
        metrics::counter!(common::metric_names::LOGIN_FAILURES, "reason" => "bad_credentials")
            .increment(1);
        // A failure against a real account lands in that clinic's audit trail.
        if let Some((clinic, user)) = known {
            audit_auth(gw, ctx, clinic, Some(user), "login", "failure").await;
        }
        return Err(GatewayError::BadCredentials);
    };
    let user = UserId::from_uuid(row.get(0));
    let clinic = ClinicId::from_uuid(row.get(1));
    let role = Role::parse(row.get::<_, &str>(3))
        .ok_or_else(|| GatewayError::Internal("unknown role".into()))?;
    if !matches!(row.get::<_, &str>(5), "active" | "relocating") {
        return Err(GatewayError::ClinicUnavailable);
    }
    gw.throttle.succeeded(&account);
    crate::server::note_caller(clinic, user);
    let tokens = issue_tokens(gw, &client, user, clinic, role, uuid::Uuid::new_v4()).await?;
    audit_auth(gw, ctx, clinic, Some(user), "login", "success").await;
    Ok(tokens)
}

fn refresh_hash(token: &str) -> Result<Vec<u8>, GatewayError> {
    if token.is_empty() || token.len() > 200 {
        return Err(GatewayError::BadRefreshToken);
    }
    Ok(Sha256::digest(token.as_bytes()).to_vec())
}

/// `POST /api/v1/auth/refresh`: rotates the token; a reused token revokes its family.
pub async fn refresh(gw: &Gateway, ctx: &Ctx, body: RefreshRequest) -> Result<Value, GatewayError> {
    let hash = refresh_hash(&body.refresh_token)?;
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let row = tx
        .query_opt(
            "SELECT t.family_id, t.user_id, u.company_id, u.role, \
                    (t.rotated_at IS NOT NULL OR t.revoked_at IS NOT NULL) AS used, \
                    t.expires_at < now() AS expired, u.disabled_at IS NOT NULL, c.status \
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id JOIN companies c ON c.id = u.company_id \
             WHERE t.token_hash = $1 FOR UPDATE OF t",
            &[&hash],
        )
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return Err(GatewayError::BadRefreshToken);
    };
    let family: uuid::Uuid = row.get(0);
    let user = UserId::from_uuid(row.get(1));
    let clinic = ClinicId::from_uuid(row.get(2));
    crate::server::note_caller(clinic, user);
    if row.get::<_, bool>(4) {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family_id = $1",
            &[&family],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        audit_auth(gw, ctx, clinic, Some(user), "refresh_reuse", "revoked").await;
        return Err(GatewayError::BadRefreshToken);
    }
    if row.get::<_, bool>(5)
        || row.get::<_, bool>(6)
        || !matches!(row.get::<_, &str>(7), "active" | "relocating")
    {
        return Err(GatewayError::BadRefreshToken);
    }
    let role = Role::parse(row.get::<_, &str>(3))
        .ok_or_else(|| GatewayError::Internal("unknown role".into()))?;
    tx.execute(
        "UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1",
        &[&hash],
    )
    .await
    .map_err(db)?;
    let tokens = issue_tokens(gw, &tx, user, clinic, role, family).await?;
    tx.commit().await.map_err(db)?;
    Ok(tokens)
}

/// `POST /api/v1/auth/logout`: revokes the token's whole family. Always `204`.
pub async fn logout(gw: &Gateway, body: RefreshRequest) -> Result<(), GatewayError> {
    let Ok(hash) = refresh_hash(&body.refresh_token) else {
        return Ok(());
    };
    let client = gw.central.get().await?;
    client
        .execute(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) \
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
            &[&hash],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// How long a registration may wait for its clinic's provisioning.
pub const PROVISION_TIMEOUT: Duration = Duration::from_secs(60);
