//! The auth endpoints: register (which provisions the clinic through its region's
//! worker), login, refresh with rotation and reuse detection, and logout.
//!
//! Sign-up follows `REGISTRATION` (`open` within per-address and fleet-wide hourly
//! limits and a bound on clinics being set up, `invite` with a single-use code,
//! `closed`). Sign-in attempts, and registrations naming an existing account, are
//! counted in the central database before any password is checked
//! ([`crate::throttle`]). Every sign-in, refresh, sign-out and sign-up is recorded
//! in the central audit trail in the same transaction as its effect. A right
//! password of a user with a second factor (or of a clinic that requires one)
//! answers a challenge instead of tokens (the second step is in `mfa.rs`).

use crate::audit::{record, session_record};
use crate::config::Registration;
use crate::error::GatewayError;
use crate::password;
use crate::provision::provision;
use crate::state::{note_caller, Ctx, Gateway};
use crate::throttle;
use crate::totp;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::limits;
use common::metric_names as m;
use common::token::Role;
use common::{ClinicId, Email, UserId};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use zeroize::Zeroizing;

#[derive(Deserialize)]
pub struct RegisterRequest {
    clinic_name: String,
    email: String,
    password: Zeroizing<String>,
    #[serde(default)]
    region: Option<String>,
    /// The sign-up code of an invitation (`REGISTRATION=invite`).
    #[serde(default)]
    invite_code: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: Zeroizing<String>,
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

/// The hash under which a sign-up code is stored.
fn invite_hash(code: &str) -> Vec<u8> {
    common::crypto::signup_code_hash(code)
}

/// Counts a sign-in attempt on `account` from the caller's address (both groups
/// of checks, see [`throttle::sign_in_checks`]); the checks to refund on success.
pub(crate) async fn count_sign_in(
    gw: &Gateway,
    ctx: &Ctx,
    account: &str,
) -> Result<Vec<throttle::Check>, GatewayError> {
    let client = gw.central.get().await?;
    let mut counted = Vec::new();
    for group in throttle::sign_in_checks(&gw.config.limits, account, ctx.client_ip) {
        if let Err(e) = throttle::hit(&client, &group).await {
            metrics::counter!(m::LOGIN_FAILURES, "reason" => "throttled").increment(1);
            return Err(e);
        }
        counted.extend(group);
    }
    Ok(counted)
}

fn refused_signup(reason: &'static str) {
    metrics::counter!(m::SIGNUPS_REFUSED, "reason" => reason).increment(1);
}

/// `POST /api/v1/auth/register`.
pub async fn register(
    gw: &Gateway,
    ctx: &Ctx,
    body: RegisterRequest,
) -> Result<Value, GatewayError> {
    let clinic_name = body.clinic_name.trim().to_owned();
    if clinic_name.is_empty()
        || clinic_name.chars().count() > limits::CLINIC_NAME_MAX
        || clinic_name.contains('\0')
    {
        return Err(GatewayError::BadRequest(format!(
            "`clinic_name` must be 1 to {} characters.",
            limits::CLINIC_NAME_MAX
        )));
    }
    let email = parse_email(&body.email)?;
    password::check_new(&body.password)?;
    if gw.config.registration == Registration::Closed {
        refused_signup("closed");
        return Err(GatewayError::RegistrationClosed);
    }

    // An earlier registration of the same account that did not finish is resumed:
    // that takes its password, so the attempt is counted like a sign-in first.
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
            let counted = count_sign_in(gw, ctx, email.as_str()).await?;
            let hash: String = row.get(2);
            let status: String = row.get(3);
            let same_owner = gw.hasher.verify(Some(hash), &body.password).await?;
            if !same_owner || !matches!(status.as_str(), "provisioning" | "active") {
                return Err(GatewayError::EmailTaken);
            }
            throttle::refund(&gw.central.get().await?, &counted).await?;
            let (clinic, user, region) = (
                ClinicId::from_uuid(row.get(1)),
                UserId::from_uuid(row.get(0)),
                row.get::<_, String>(4),
            );
            if status == "active" {
                // A retry of a registration that was finished meanwhile (by the
                // worker's reconciler, or an answer lost on the way): same answer.
                return registered(gw, ctx, clinic, user, &region).await;
            }
            (clinic, user, region)
        }
        None => create(gw, ctx, &body, &clinic_name, &email).await?,
    };

    note_caller(clinic, user);
    provision(gw, ctx, clinic, &region).await?;
    gw.cache.invalidate(clinic);
    registered(gw, ctx, clinic, user, &region).await
}

/// The answer to a finished registration: the clinic, and the admin signed in (the
/// password was just checked or hashed; a second hash to sign in would only cost).
async fn registered(
    gw: &Gateway,
    ctx: &Ctx,
    clinic: ClinicId,
    user: UserId,
    region: &str,
) -> Result<Value, GatewayError> {
    let row = gw
        .central
        .get()
        .await?
        .query_one(
            "SELECT u.role, u.token_version, u.mfa_enabled_at IS NOT NULL, c.mfa_required \
             FROM users u JOIN companies c ON c.id = u.company_id WHERE u.id = $1 AND u.company_id = $2",
            &[user.as_uuid(), clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    let who = Principal {
        user,
        clinic,
        role: Role::parse(row.get::<_, &str>(0))
            .ok_or_else(|| GatewayError::Internal("unknown role".into()))?,
        version: row.get(1),
    };
    // A registration sent again for an account that has a second factor by now
    // signs in no further than a login would.
    let (mfa_enabled, mfa_required): (bool, bool) = (row.get(2), row.get(3));
    let mut answer = if mfa_enabled || mfa_required {
        second_factor_due(gw, ctx, &who, mfa_enabled).await?
    } else {
        start_session(gw, ctx, &who).await?
    };
    if let Some(fields) = answer.as_object_mut() {
        fields.insert("clinic_id".into(), json!(clinic));
        fields.insert("user_id".into(), json!(user));
        fields.insert("region".into(), json!(region));
    }
    Ok(answer)
}

/// A new clinic and its admin, `provisioning`, within the sign-up policy.
async fn create(
    gw: &Gateway,
    ctx: &Ctx,
    body: &RegisterRequest,
    clinic_name: &str,
    email: &Email,
) -> Result<(ClinicId, UserId, String), GatewayError> {
    let mut asked = body
        .region
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let code = body
        .invite_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    match gw.config.registration {
        Registration::Closed => {
            refused_signup("closed");
            return Err(GatewayError::RegistrationClosed);
        }
        Registration::Invite => {
            let Some(code) = code else {
                refused_signup("invite");
                return Err(GatewayError::InviteRequired(
                    "Sign-up here is by invitation: send the `invite_code` you were given.",
                ));
            };
            // Guessing codes is throttled like guessing passwords.
            let client = gw.central.get().await?;
            let checks = throttle::sign_up_checks(&gw.config.limits, ctx.client_ip);
            throttle::hit(&client, &checks[..1])
                .await
                .inspect_err(|_| refused_signup("throttled"))?;
            let invite = client
                .query_opt(
                    "SELECT email, region FROM signup_invites \
                     WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()",
                    &[&invite_hash(code)],
                )
                .await
                .map_err(db)?;
            let Some(invite) = invite else {
                refused_signup("invite");
                return Err(GatewayError::InviteRequired(
                    "This invitation code is unknown, used or expired; ask for a new one.",
                ));
            };
            let bound: Option<String> = invite.get(0);
            if bound.is_some_and(|e| !e.eq_ignore_ascii_case(email.as_str())) {
                refused_signup("invite");
                return Err(GatewayError::InviteRequired(
                    "This invitation is for another e-mail address.",
                ));
            }
            if let Some(region) = invite.get::<_, Option<String>>(1) {
                asked = Some(region);
            }
        }
        Registration::Open => {
            let client = gw.central.get().await?;
            let checks = throttle::sign_up_checks(&gw.config.limits, ctx.client_ip);
            throttle::hit(&client, &checks)
                .await
                .inspect_err(|_| refused_signup("throttled"))?;
            let setting_up: i64 = client
                .query_one(
                    "SELECT count(*) FROM companies WHERE status = 'provisioning' AND created_at > now() - interval '1 hour'",
                    &[],
                )
                .await
                .map_err(db)?
                .get(0);
            if setting_up >= i64::from(gw.config.limits.provisioning_max) {
                refused_signup("provisioning");
                return Err(GatewayError::SignupsPaused);
            }
        }
    }
    let region = choose_region(gw, asked.as_deref()).await?;
    let hash = gw.hasher.hash(&body.password).await?;
    let clinic = ClinicId::generate();
    let user = UserId::generate();
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    if let (Registration::Invite, Some(code)) = (gw.config.registration, code) {
        // Consumed in the same transaction: two sign-ups racing on one code, one wins.
        let used = tx
            .execute(
                "UPDATE signup_invites SET used_at = now(), clinic_id = NULL \
                 WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()",
                &[&invite_hash(code)],
            )
            .await
            .map_err(db)?;
        if used == 0 {
            refused_signup("invite");
            return Err(GatewayError::InviteRequired(
                "This invitation code is unknown, used or expired; ask for a new one.",
            ));
        }
    }
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
    if let (Registration::Invite, Some(code)) = (gw.config.registration, code) {
        tx.execute(
            "UPDATE signup_invites SET clinic_id = $2 WHERE code_hash = $1",
            &[&invite_hash(code), clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    }
    let record = session_record(ctx, Some(user), "register", "success");
    pgconn::audit::append(
        &*tx,
        &gw.config.audit_keys,
        clinic,
        std::slice::from_ref(&record),
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok((clinic, user, region))
}

fn new_refresh_token() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    (token, hash)
}

/// The signed-in user a token pair is issued for.
pub(crate) struct Principal {
    pub user: UserId,
    pub clinic: ClinicId,
    pub role: Role,
    /// The user's current token version.
    pub version: i64,
}

pub(crate) async fn issue_tokens(
    gw: &Gateway,
    client: &impl deadpool_postgres::GenericClient,
    who: &Principal,
    family: uuid::Uuid,
) -> Result<Value, GatewayError> {
    let (access, expires_in) = gw
        .config
        .signer
        .issue(who.user, who.clinic, who.role, who.version)
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    let (refresh, hash) = new_refresh_token();
    let ttl = gw.config.refresh_ttl.as_secs() as f64;
    client
        .execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            &[&hash, &family, who.user.as_uuid(), &ttl],
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
    let counted = count_sign_in(gw, ctx, &account).await?;
    let row = {
        let client = gw.central.get().await?;
        client
            .query_opt(
                "SELECT u.id, u.company_id, u.password_hash, u.role, u.disabled_at IS NOT NULL, c.status, u.token_version, \
                        u.mfa_enabled_at IS NOT NULL, c.mfa_required \
                 FROM users u JOIN companies c ON c.id = u.company_id WHERE lower(u.email) = $1",
                &[&account],
            )
            .await
            .map_err(db)?
    };
    let hash = row.as_ref().map(|r| r.get::<_, String>(2));
    let verified = gw.hasher.verify(hash, &body.password).await?;
    let known = row
        .as_ref()
        .map(|r| (ClinicId::from_uuid(r.get(1)), UserId::from_uuid(r.get(0))));
    let Some(row) = row.filter(|r| verified && !r.get::<_, bool>(4)) else {
        metrics::counter!(m::LOGIN_FAILURES, "reason" => "bad_credentials").increment(1);
        // A failure against a real account lands in that clinic's audit trail.
        if let Some((clinic, user)) = known {
            record(
                gw,
                clinic,
                &session_record(ctx, Some(user), "login", "failure"),
            )
            .await?;
        }
        return Err(GatewayError::BadCredentials);
    };
    let who = Principal {
        user: UserId::from_uuid(row.get(0)),
        clinic: ClinicId::from_uuid(row.get(1)),
        role: Role::parse(row.get::<_, &str>(3))
            .ok_or_else(|| GatewayError::Internal("unknown role".into()))?,
        version: row.get(6),
    };
    if !matches!(row.get::<_, &str>(5), "active" | "relocating") {
        return Err(GatewayError::ClinicUnavailable);
    }
    note_caller(who.clinic, who.user);
    throttle::refund(&gw.central.get().await?, &counted).await?;
    let (mfa_enabled, mfa_required): (bool, bool) = (row.get(7), row.get(8));
    if mfa_enabled || mfa_required {
        return second_factor_due(gw, ctx, &who, mfa_enabled).await;
    }
    start_session(gw, ctx, &who).await
}

/// The answer to a right password when a second factor is due: a short-lived,
/// single-use `mfa_token` instead of tokens, to send with a code to
/// `/auth/mfa/verify`, or, when the clinic requires MFA and the user has none yet,
/// to enrol with (`/auth/mfa/enroll`, then `/auth/mfa/confirm`, which signs in).
async fn second_factor_due(
    gw: &Gateway,
    ctx: &Ctx,
    who: &Principal,
    enrolled: bool,
) -> Result<Value, GatewayError> {
    let (purpose, outcome, ttl) = if enrolled {
        (totp::Purpose::Verify, "mfa_required", totp::VERIFY_TTL_SECS)
    } else {
        (
            totp::Purpose::Enroll,
            "mfa_enrollment_required",
            totp::ENROLL_TTL_SECS,
        )
    };
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let token = totp::open_challenge(&tx, who.user, purpose).await?;
    let record = session_record(ctx, Some(who.user), "login", outcome);
    pgconn::audit::append(
        &*tx,
        &gw.config.audit_keys,
        who.clinic,
        std::slice::from_ref(&record),
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(json!({
        "mfa_required": true,
        "mfa_enrollment_required": !enrolled,
        "mfa_token": token,
        "expires_in": ttl as u64,
    }))
}

/// A new token family for `who`, committed with its `login` audit record.
pub(crate) async fn start_session(
    gw: &Gateway,
    ctx: &Ctx,
    who: &Principal,
) -> Result<Value, GatewayError> {
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let tokens = issue_tokens(gw, &tx, who, uuid::Uuid::new_v4()).await?;
    let record = session_record(ctx, Some(who.user), "login", "success");
    pgconn::audit::append(
        &*tx,
        &gw.config.audit_keys,
        who.clinic,
        std::slice::from_ref(&record),
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(tokens)
}

fn refresh_hash(token: &str) -> Result<Vec<u8>, GatewayError> {
    if token.is_empty() || token.len() > limits::REFRESH_TOKEN_MAX {
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
                    t.expires_at < now() AS expired, u.disabled_at IS NOT NULL, c.status, u.token_version \
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
    note_caller(clinic, user);
    let keys = &gw.config.audit_keys;
    if row.get::<_, bool>(4) {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family_id = $1",
            &[&family],
        )
        .await
        .map_err(db)?;
        let record = session_record(ctx, Some(user), "refresh_reuse", "revoked");
        pgconn::audit::append(&*tx, keys, clinic, std::slice::from_ref(&record))
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        return Err(GatewayError::BadRefreshToken);
    }
    if row.get::<_, bool>(5)
        || row.get::<_, bool>(6)
        || !matches!(row.get::<_, &str>(7), "active" | "relocating")
    {
        drop(tx);
        record(
            gw,
            clinic,
            &session_record(ctx, Some(user), "refresh", "refused"),
        )
        .await?;
        return Err(GatewayError::BadRefreshToken);
    }
    let who = Principal {
        user,
        clinic,
        role: Role::parse(row.get::<_, &str>(3))
            .ok_or_else(|| GatewayError::Internal("unknown role".into()))?,
        version: row.get(8),
    };
    tx.execute(
        "UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1",
        &[&hash],
    )
    .await
    .map_err(db)?;
    let tokens = issue_tokens(gw, &tx, &who, family).await?;
    let record = session_record(ctx, Some(user), "refresh", "success");
    pgconn::audit::append(&*tx, keys, clinic, std::slice::from_ref(&record))
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(tokens)
}

/// `POST /api/v1/auth/logout`: revokes the token's whole family. Always `204`.
pub async fn logout(gw: &Gateway, ctx: &Ctx, body: RefreshRequest) -> Result<(), GatewayError> {
    let Ok(hash) = refresh_hash(&body.refresh_token) else {
        return Ok(());
    };
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let rows = tx
        .query(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) \
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) \
             RETURNING user_id, (SELECT company_id FROM users u WHERE u.id = user_id)",
            &[&hash],
        )
        .await
        .map_err(db)?;
    if let Some(row) = rows.first() {
        let (user, clinic) = (
            UserId::from_uuid(row.get(0)),
            ClinicId::from_uuid(row.get(1)),
        );
        let record = session_record(ctx, Some(user), "logout", "success");
        pgconn::audit::append(
            &*tx,
            &gw.config.audit_keys,
            clinic,
            std::slice::from_ref(&record),
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}
