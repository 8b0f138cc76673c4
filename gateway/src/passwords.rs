//! Passwords: a signed-in user changes its own (the current one required), and a
//! forgotten one is reset through a single-use link sent by e-mail.
//!
//! A change or a reset raises the user's token version and revokes every refresh
//! token, so every session ends; a change answers the caller a fresh token pair.
//! A reset request answers the same `202` whether or not the address is known:
//! the lookup, the token and the mail happen off the request path. Only the
//! token's SHA-256 hash is stored (`password_resets`); it expires after
//! [`RESET_TTL_SECS`] and works once. Every step is audited.

use crate::audit::{record, session_record};
use crate::auth::{count_sign_in, issue_tokens, Principal};
use crate::error::GatewayError;
use crate::password;
use crate::state::{Ctx, Gateway};
use crate::throttle;
use crate::users::lock_and_check_caller;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::token::Claims;
use common::{ClinicId, Email, UserId};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use zeroize::Zeroizing;

/// How long a reset link works.
pub const RESET_TTL_SECS: f64 = 30.0 * 60.0;
/// The longest reset token accepted (they are 43 characters).
const RESET_TOKEN_MAX: usize = 128;

#[derive(Deserialize)]
pub struct ChangeRequest {
    current_password: Zeroizing<String>,
    new_password: Zeroizing<String>,
}

#[derive(Deserialize)]
pub struct ResetRequest {
    email: String,
}

#[derive(Deserialize)]
pub struct ConfirmRequest {
    token: String,
    new_password: Zeroizing<String>,
}

fn db(e: tokio_postgres::Error) -> GatewayError {
    GatewayError::from_db(e)
}

/// The statements that end every session of `user` in `tx`: a new token version
/// (access tokens stop working) and every refresh token revoked.
async fn end_sessions(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &uuid::Uuid,
    hash: &str,
) -> Result<i64, GatewayError> {
    let version: i64 = tx
        .query_one(
            "UPDATE users SET password_hash = $2, token_version = token_version + 1, \
             token_version_at = now() WHERE id = $1 RETURNING token_version",
            &[user, &hash],
        )
        .await
        .map_err(db)?
        .get(0);
    tx.execute(
        "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = $1",
        &[user],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        &[user],
    )
    .await
    .map_err(db)?;
    Ok(version)
}

/// `POST /api/v1/auth/password`: the caller's own password, the current one
/// required; every other session ends, the caller gets a new token pair.
pub async fn change(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    body: ChangeRequest,
) -> Result<Value, GatewayError> {
    if body.current_password.chars().count() > password::MAX_LEN {
        return Err(GatewayError::BadCredentials);
    }
    password::check_new(&body.new_password)?;
    let row = gw
        .central
        .get()
        .await?
        .query_opt(
            "SELECT lower(email), password_hash FROM users WHERE id = $1 AND company_id = $2",
            &[claims.sub.as_uuid(), claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?
        .ok_or(GatewayError::BadCredentials)?;
    let account: String = row.get(0);
    let counted = count_sign_in(gw, ctx, &account).await?;
    if !gw
        .hasher
        .verify(Some(row.get(1)), &body.current_password)
        .await?
    {
        record(
            gw,
            claims.clinic,
            &session_record(ctx, Some(claims.sub), "change_password", "failure"),
        )
        .await?;
        return Err(GatewayError::BadCredentials);
    }
    let hash = gw.hasher.hash(&body.new_password).await?;
    let mut client = gw.central.get().await?;
    throttle::refund(&client, &counted).await?;
    let tx = client.transaction().await.map_err(db)?;
    lock_and_check_caller(&tx, claims, false).await?;
    let version = end_sessions(&tx, claims.sub.as_uuid(), &hash).await?;
    let who = Principal {
        user: claims.sub,
        clinic: claims.clinic,
        role: claims.role,
        version,
    };
    let tokens = issue_tokens(gw, &tx, &who, uuid::Uuid::new_v4()).await?;
    let r = session_record(ctx, Some(claims.sub), "change_password", "success");
    pgconn::audit::append(&*tx, &gw.config.audit_keys, claims.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(tokens)
}

/// The one answer to every accepted reset request.
pub fn reset_answer() -> Value {
    json!({
        "status": "accepted",
        "detail": "If an account uses this address, a link to reset its password has been sent to it.",
    })
}

/// `POST /api/v1/auth/password-reset`: counted like a sign-in on the address; the
/// rest happens off the request path, so known and unknown addresses answer alike.
pub async fn request_reset(
    gw: &Arc<Gateway>,
    ctx: &Ctx,
    body: ResetRequest,
) -> Result<Value, GatewayError> {
    let account = body.email.trim().to_lowercase();
    if account.len() > Email::MAX_LEN || account.contains('\0') || Email::parse(&account).is_none()
    {
        return Err(GatewayError::BadRequest(
            "`email` must be an e-mail address.".into(),
        ));
    }
    // Counted like sign-ins, under keys of their own: per e-mail address, and
    // per client address.
    let limits = &gw.config.limits;
    let checks = [
        throttle::Check::new(
            format!("reset:acct:{account}"),
            limits.login_window,
            limits.login_per_account_address,
        ),
        throttle::Check::new(
            format!("reset:addr:{}", throttle::address_key(ctx.client_ip)),
            limits.login_window,
            limits.login_per_address,
        ),
    ];
    throttle::hit(&gw.central.get().await?, &checks).await?;
    let gw = gw.clone();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&gw, &ctx, &account).await {
            tracing::warn!(error = %e, "password reset not sent");
        }
    });
    Ok(reset_answer())
}

async fn send_reset(gw: &Gateway, ctx: &Ctx, account: &str) -> anyhow::Result<()> {
    let client = gw.central.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT u.id, u.company_id, u.email FROM users u JOIN companies c ON c.id = u.company_id \
             WHERE lower(u.email) = $1 AND u.disabled_at IS NULL AND c.status IN ('active', 'relocating')",
            &[&account],
        )
        .await?
    else {
        return Ok(());
    };
    let (user, clinic) = (
        UserId::from_uuid(row.get(0)),
        ClinicId::from_uuid(row.get(1)),
    );
    let email: String = row.get(2);
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    client
        .execute(
            "INSERT INTO password_resets (token_hash, user_id, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3))",
            &[&hash, user.as_uuid(), &RESET_TTL_SECS],
        )
        .await?;
    drop(client);
    record(
        gw,
        clinic,
        &session_record(ctx, Some(user), "password_reset_request", "success"),
    )
    .await?;
    let link = format!("{}/reset-password?token={token}", gw.config.mail.public_url);
    let text = format!(
        "Someone asked to reset the password of your MedicalPro account.\r\n\r\n\
         To choose a new password, open this link within 30 minutes:\r\n\r\n{link}\r\n\r\n\
         Or send this token with your new password to /api/v1/auth/password-reset/confirm:\r\n\r\n\
         token: {token}\r\n\r\n\
         The link works once. If you did not ask for it, ignore this message: your password stays as it is.\r\n"
    );
    crate::mail::send(
        &gw.config.mail,
        &email,
        "Reset your MedicalPro password",
        text,
    )
    .await
}

fn refused() -> GatewayError {
    GatewayError::BadRequest(
        "The reset token is unknown, already used or expired: ask for a new link.".into(),
    )
}

/// `POST /api/v1/auth/password-reset/confirm`: sets the password once; every
/// session of the user ends.
pub async fn confirm_reset(
    gw: &Gateway,
    ctx: &Ctx,
    body: ConfirmRequest,
) -> Result<(), GatewayError> {
    if body.token.is_empty() || body.token.len() > RESET_TOKEN_MAX {
        return Err(refused());
    }
    password::check_new(&body.new_password)?;
    let token_hash = Sha256::digest(body.token.as_bytes()).to_vec();
    let new_hash = gw.hasher.hash(&body.new_password).await?;
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let Some(row) = tx
        .query_opt(
            "SELECT r.user_id, u.company_id, r.used_at IS NOT NULL OR r.expires_at < now() \
                    OR u.disabled_at IS NOT NULL \
             FROM password_resets r JOIN users u ON u.id = r.user_id \
             WHERE r.token_hash = $1 FOR UPDATE OF r, u",
            &[&token_hash],
        )
        .await
        .map_err(db)?
    else {
        return Err(refused());
    };
    let user = UserId::from_uuid(row.get(0));
    let clinic = ClinicId::from_uuid(row.get(1));
    if row.get::<_, bool>(2) {
        drop(tx);
        record(
            gw,
            clinic,
            &session_record(ctx, Some(user), "password_reset", "refused"),
        )
        .await?;
        return Err(refused());
    }
    end_sessions(&tx, user.as_uuid(), &new_hash).await?;
    let r = session_record(ctx, Some(user), "password_reset", "success");
    pgconn::audit::append(&*tx, &gw.config.audit_keys, clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(())
}
