//! Multi-factor sign-in for staff (TOTP, RFC 6238): enrolment, confirmation with
//! recovery codes, the second step of a sign-in, switching it off, an admin's
//! reset of another user's factor, and the clinic's `mfa_required` setting.
//!
//! - `POST /api/v1/auth/mfa/enroll`: a new secret (base32 and `otpauth://` URI,
//!   shown once), pending until `POST /api/v1/auth/mfa/confirm {code}` proves it;
//!   confirming answers 10 single-use recovery codes (shown once). Both take the
//!   bearer token of a signed-in user, or, when the clinic requires MFA and the
//!   user has none yet, the `mfa_token` its sign-in answered: confirming with that
//!   token signs the user in (the answer carries the token pair too).
//! - `POST /api/v1/auth/login` with MFA on answers `{mfa_required, mfa_token}`;
//!   `POST /api/v1/auth/mfa/verify {mfa_token, code | recovery_code}` answers the
//!   token pair. The `mfa_token` lasts 5 minutes and is used up by its success.
//! - `POST /api/v1/auth/mfa/disable {code}`: the signed-in user switches it off
//!   (refused while the clinic requires MFA).
//! - `POST /api/v1/users/{id}/mfa/reset`: a clinic admin clears another user's
//!   factor (never its own), e.g. after a lost phone.
//! - `GET`/`PATCH /api/v1/clinic-security`: `{mfa_required}`, read by any user of
//!   the clinic, changed by its admins. Sessions already open are kept; every
//!   later sign-in asks for the second factor (or for enrolment).
//!
//! Every code checked counts as a sign-in attempt on the account, in the same
//! counters as passwords ([`crate::throttle`]; refunded on success), so guessing is
//! `429` after the same limits. A code is accepted once (its time step is
//! remembered), with one step of clock skew either way. Every event — enrolment,
//! confirmation, verification (success or failure), disabling and reset — is in
//! the clinic's audit trail; changes commit together with their record.

use crate::audit::{record, request_record, session_record};
use crate::auth::{count_sign_in, start_session, Principal};
use crate::error::GatewayError;
use crate::state::{note_caller, Ctx, Gateway};
use crate::throttle;
use crate::totp::{self, Purpose};
use crate::users::{admin_only, lock_and_check_caller, parse_id};
use common::audit::Record;
use common::metric_names as m;
use common::token::{Claims, Role};
use common::{ClinicId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Longest `code` or `recovery_code` looked at.
const CODE_MAX: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    mfa_token: String,
}

impl EnrollRequest {
    /// An enrolment by the sign-in this body's `mfa_token` names.
    pub fn enrolling(self) -> Enrolling {
        Enrolling::Challenge(self.mfa_token)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    code: Zeroizing<String>,
    #[serde(default)]
    mfa_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    code: Zeroizing<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    mfa_token: String,
    #[serde(default)]
    code: Option<Zeroizing<String>>,
    #[serde(default)]
    recovery_code: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityChange {
    mfa_required: bool,
}

/// Who enrols: a signed-in user, or a sign-in that must enrol first.
pub enum Enrolling {
    Signed(Claims),
    /// The `mfa_token` of a sign-in answered `mfa_enrollment_required`.
    Challenge(String),
}

fn db(e: tokio_postgres::Error) -> GatewayError {
    GatewayError::from_db(e)
}

const WRONG_CODE: &str =
    "The code is wrong or was already used; wait for the next code and try again.";

fn bounded(code: &str) -> Result<&str, GatewayError> {
    if code.len() > CODE_MAX {
        Err(GatewayError::BadRequest(format!(
            "A code is at most {CODE_MAX} characters."
        )))
    } else {
        Ok(code)
    }
}

/// What the second factor's handlers read of a user.
struct Account {
    user: UserId,
    clinic: ClinicId,
    /// Lowercased: the key of the sign-in counters.
    email: String,
    role: String,
    version: i64,
    disabled: bool,
    clinic_status: String,
    mfa_required: bool,
    secret: Option<Vec<u8>>,
    pending: Option<Vec<u8>>,
    last_step: Option<i64>,
}

impl Account {
    fn principal(&self) -> Result<Principal, GatewayError> {
        Ok(Principal {
            user: self.user,
            clinic: self.clinic,
            role: Role::parse(&self.role)
                .ok_or_else(|| GatewayError::Internal("unknown role".into()))?,
            version: self.version,
        })
    }

    fn may_sign_in(&self) -> Result<(), GatewayError> {
        if self.disabled {
            return Err(GatewayError::MfaRefused(
                "This account is disabled; ask a clinic admin.",
            ));
        }
        if !matches!(self.clinic_status.as_str(), "active" | "relocating") {
            return Err(GatewayError::ClinicUnavailable);
        }
        Ok(())
    }
}

async fn account(gw: &Gateway, user: UserId) -> Result<Account, GatewayError> {
    let row = gw
        .central
        .get()
        .await?
        .query_opt(
            "SELECT u.company_id, lower(u.email), u.role, u.token_version, u.disabled_at IS NOT NULL, \
                    c.status, c.mfa_required, u.mfa_secret, u.mfa_pending_secret, u.mfa_last_step \
             FROM users u JOIN companies c ON c.id = u.company_id WHERE u.id = $1",
            &[user.as_uuid()],
        )
        .await
        .map_err(db)?
        .ok_or(GatewayError::MfaRefused(
            "The `mfa_token` is invalid, expired or already used; sign in again.",
        ))?;
    let clinic = ClinicId::from_uuid(row.get(0));
    note_caller(clinic, user);
    Ok(Account {
        user,
        clinic,
        email: row.get(1),
        role: row.get(2),
        version: row.get(3),
        disabled: row.get(4),
        clinic_status: row.get(5),
        mfa_required: row.get(6),
        secret: row.get(7),
        pending: row.get(8),
        last_step: row.get(9),
    })
}

/// The user an enrolment is for, and the challenge it came with.
async fn enrolling_user(
    gw: &Gateway,
    who: &Enrolling,
) -> Result<(UserId, Option<String>), GatewayError> {
    match who {
        Enrolling::Signed(claims) => Ok((claims.sub, None)),
        Enrolling::Challenge(token) => {
            let client = gw.central.get().await?;
            let user = totp::challenge_user(&client, token, Purpose::Enroll).await?;
            Ok((user, Some(token.clone())))
        }
    }
}

fn event(ctx: &Ctx, user: UserId, action: &str, outcome: &str) -> Record {
    session_record(ctx, Some(user), action, outcome)
}

/// Records a refused code; the refusal to answer.
async fn refused(gw: &Gateway, ctx: &Ctx, acct: &Account, action: &str) -> GatewayError {
    metrics::counter!(m::LOGIN_FAILURES, "reason" => "mfa").increment(1);
    match record(gw, acct.clinic, &event(ctx, acct.user, action, "failure")).await {
        Ok(()) => GatewayError::MfaRefused(WRONG_CODE),
        Err(e) => e,
    }
}

/// `POST /api/v1/auth/mfa/enroll`: a new pending secret.
pub async fn enroll(gw: &Gateway, ctx: &Ctx, who: Enrolling) -> Result<Value, GatewayError> {
    let (user, _) = enrolling_user(gw, &who).await?;
    let acct = account(gw, user).await?;
    acct.may_sign_in()?;
    if acct.secret.is_some() {
        return Err(GatewayError::Conflict(
            "Multi-factor sign-in is already on for your account; switch it off first to enrol another device.",
        ));
    }
    let secret = totp::new_secret();
    let sealed = totp::seal(&gw.config.mfa_keys, user, &secret);
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let updated = tx
        .execute(
            "UPDATE users SET mfa_pending_secret = $2, mfa_pending_at = now() \
             WHERE id = $1 AND mfa_enabled_at IS NULL",
            &[user.as_uuid(), &sealed],
        )
        .await
        .map_err(db)?;
    if updated != 1 {
        return Err(GatewayError::Conflict(
            "Multi-factor sign-in is already on for your account; switch it off first to enrol another device.",
        ));
    }
    let r = event(ctx, user, "mfa_enroll", "success");
    pgconn::audit::append(&*tx, &gw.config.audit_keys, acct.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(json!({
        "secret": totp::base32(&secret),
        "otpauth_uri": totp::otpauth_uri(&secret, &acct.email),
        "algorithm": "SHA1",
        "digits": totp::DIGITS,
        "period": totp::STEP_SECS,
    }))
}

/// `POST /api/v1/auth/mfa/confirm`: the pending secret proven by a code; MFA on,
/// new recovery codes (and, for a sign-in that had to enrol, the token pair).
pub async fn confirm(
    gw: &Gateway,
    ctx: &Ctx,
    claims: Option<Claims>,
    body: ConfirmRequest,
) -> Result<Value, GatewayError> {
    let code = bounded(&body.code)?;
    let who = match (claims, &body.mfa_token) {
        (Some(claims), _) => Enrolling::Signed(claims),
        (None, Some(token)) => Enrolling::Challenge(token.clone()),
        (None, None) => return Err(GatewayError::MissingToken),
    };
    let (user, challenge) = enrolling_user(gw, &who).await?;
    let acct = account(gw, user).await?;
    if challenge.is_some() {
        acct.may_sign_in()?;
    }
    if acct.secret.is_some() {
        return Err(GatewayError::Conflict(
            "Multi-factor sign-in is already on for your account.",
        ));
    }
    let Some(pending) = acct.pending.as_deref() else {
        return Err(GatewayError::Conflict(
            "No enrolment is pending: start with POST /api/v1/auth/mfa/enroll.",
        ));
    };
    let counted = count_sign_in(gw, ctx, &acct.email).await?;
    let secret = totp::open(&gw.config.mfa_keys, user, pending)?;
    let Some(step) = totp::matching_step(&secret, code, totp::now_secs(), None)? else {
        return Err(refused(gw, ctx, &acct, "mfa_confirm").await);
    };
    let codes = totp::new_recovery_codes();
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| totp::recovery_hash(user, c)).collect();
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    if let Some(token) = &challenge {
        totp::close_challenge(&tx, token).await?;
    }
    let updated = tx
        .execute(
            "UPDATE users SET mfa_secret = mfa_pending_secret, mfa_enabled_at = now(), \
                 mfa_pending_secret = NULL, mfa_pending_at = NULL, mfa_last_step = $3 \
             WHERE id = $1 AND mfa_enabled_at IS NULL AND mfa_pending_secret = $2",
            &[user.as_uuid(), &pending, &step],
        )
        .await
        .map_err(db)?;
    if updated != 1 {
        return Err(GatewayError::Conflict(
            "The enrolment changed meanwhile; start again with POST /api/v1/auth/mfa/enroll.",
        ));
    }
    tx.execute(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[user.as_uuid()],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, h FROM unnest($2::bytea[]) AS h",
        &[user.as_uuid(), &hashes],
    )
    .await
    .map_err(db)?;
    let r = event(ctx, user, "mfa_confirm", "success");
    pgconn::audit::append(&*tx, &gw.config.audit_keys, acct.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    throttle::refund(&gw.central.get().await?, &counted).await?;
    let mut answer = json!({"mfa_enabled": true, "recovery_codes": codes});
    if challenge.is_some() {
        let tokens = start_session(gw, ctx, &acct.principal()?).await?;
        if let (Some(out), Some(tokens)) = (answer.as_object_mut(), tokens.as_object()) {
            out.extend(tokens.clone());
        }
    }
    Ok(answer)
}

/// `POST /api/v1/auth/mfa/verify`: a sign-in's second step; the token pair.
pub async fn verify(gw: &Gateway, ctx: &Ctx, body: VerifyRequest) -> Result<Value, GatewayError> {
    enum Factor<'a> {
        Code(&'a str),
        Recovery(&'a str),
    }
    let factor = match (&body.code, &body.recovery_code) {
        (Some(code), None) => Factor::Code(bounded(code)?),
        (None, Some(code)) => Factor::Recovery(bounded(code)?),
        _ => {
            return Err(GatewayError::BadRequest(
                "Send `mfa_token` with either `code` or `recovery_code`.".into(),
            ))
        }
    };
    let user = {
        let client = gw.central.get().await?;
        totp::challenge_user(&client, &body.mfa_token, Purpose::Verify).await?
    };
    let acct = account(gw, user).await?;
    let counted = count_sign_in(gw, ctx, &acct.email).await?;
    if let Err(e) = acct.may_sign_in() {
        record(gw, acct.clinic, &event(ctx, user, "mfa_verify", "refused")).await?;
        return Err(e);
    }
    let Some(sealed) = acct.secret.as_deref() else {
        // Reset by an admin since the password was checked.
        return Err(GatewayError::MfaRefused(
            "Multi-factor sign-in was reset for this account; sign in again.",
        ));
    };
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    let outcome = match factor {
        Factor::Code(code) => {
            let secret = totp::open(&gw.config.mfa_keys, user, sealed)?;
            match totp::matching_step(&secret, code, totp::now_secs(), acct.last_step)? {
                Some(step) => {
                    // Taken only if no other request took this step meanwhile.
                    let taken = tx
                        .execute(
                            "UPDATE users SET mfa_last_step = $2 \
                             WHERE id = $1 AND (mfa_last_step IS NULL OR mfa_last_step < $2)",
                            &[user.as_uuid(), &step],
                        )
                        .await
                        .map_err(db)?;
                    (taken == 1).then_some("success")
                }
                None => None,
            }
        }
        Factor::Recovery(code) => {
            let used = tx
                .execute(
                    "UPDATE mfa_recovery_codes SET used_at = now() \
                     WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
                    &[user.as_uuid(), &totp::recovery_hash(user, code)],
                )
                .await
                .map_err(db)?;
            (used == 1).then_some("recovery_code")
        }
    };
    let Some(outcome) = outcome else {
        drop(tx);
        return Err(refused(gw, ctx, &acct, "mfa_verify").await);
    };
    totp::close_challenge(&tx, &body.mfa_token).await?;
    let r = event(ctx, user, "mfa_verify", outcome);
    pgconn::audit::append(&*tx, &gw.config.audit_keys, acct.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    throttle::refund(&gw.central.get().await?, &counted).await?;
    start_session(gw, ctx, &acct.principal()?).await
}

/// Clears a user's factor, recovery codes and open challenges (in `tx`); whether
/// the user was found in `clinic`.
async fn clear(
    tx: &deadpool_postgres::Transaction<'_>,
    user: UserId,
    clinic: ClinicId,
) -> Result<bool, GatewayError> {
    let updated = tx
        .execute(
            "UPDATE users SET mfa_secret = NULL, mfa_enabled_at = NULL, mfa_pending_secret = NULL, \
                 mfa_pending_at = NULL, mfa_last_step = NULL \
             WHERE id = $1 AND company_id = $2",
            &[user.as_uuid(), clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    if updated == 0 {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[user.as_uuid()],
    )
    .await
    .map_err(db)?;
    tx.execute(
        "UPDATE mfa_challenges SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        &[user.as_uuid()],
    )
    .await
    .map_err(db)?;
    Ok(true)
}

/// `POST /api/v1/auth/mfa/disable`: the signed-in user switches its factor off
/// with a current code.
pub async fn disable(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    body: CodeRequest,
) -> Result<(), GatewayError> {
    let code = bounded(&body.code)?;
    let acct = account(gw, claims.sub).await?;
    let Some(sealed) = acct.secret.as_deref() else {
        return Err(GatewayError::Conflict(
            "Multi-factor sign-in is not on for your account.",
        ));
    };
    if acct.mfa_required {
        return Err(GatewayError::Conflict(
            "Your clinic requires multi-factor sign-in: it cannot be switched off. After a lost device, a clinic admin can reset it.",
        ));
    }
    let counted = count_sign_in(gw, ctx, &acct.email).await?;
    let secret = totp::open(&gw.config.mfa_keys, acct.user, sealed)?;
    let Some(step) = totp::matching_step(&secret, code, totp::now_secs(), acct.last_step)? else {
        return Err(refused(gw, ctx, &acct, "mfa_disable").await);
    };
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    // The code's step is taken first: a replayed code fails here.
    let taken = tx
        .execute(
            "UPDATE users SET mfa_last_step = $2 \
             WHERE id = $1 AND (mfa_last_step IS NULL OR mfa_last_step < $2)",
            &[acct.user.as_uuid(), &step],
        )
        .await
        .map_err(db)?;
    if taken != 1 {
        drop(tx);
        return Err(refused(gw, ctx, &acct, "mfa_disable").await);
    }
    clear(&tx, acct.user, acct.clinic).await?;
    let r = event(ctx, acct.user, "mfa_disable", "success");
    pgconn::audit::append(&*tx, &gw.config.audit_keys, acct.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    throttle::refund(&gw.central.get().await?, &counted).await?;
    Ok(())
}

/// `POST /api/v1/users/{id}/mfa/reset`: a clinic admin clears another user's factor.
pub async fn reset(gw: &Gateway, ctx: &Ctx, claims: &Claims, id: &str) -> Result<(), GatewayError> {
    admin_only(claims)?;
    let id = parse_id(id)?;
    if id == *claims.sub.as_uuid() {
        return Err(GatewayError::Forbidden(
            "You cannot reset your own multi-factor sign-in; switch it off with a code, or ask another admin.",
        ));
    }
    let target = UserId::from_uuid(id);
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    lock_and_check_caller(&tx, claims, true).await?;
    if !clear(&tx, target, claims.clinic).await? {
        return Err(GatewayError::NotFound);
    }
    let mut r = request_record(ctx, claims.sub, "mfa_reset", "users", "success");
    r.resource_id = Some(id);
    pgconn::audit::append(&*tx, &gw.config.audit_keys, claims.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(())
}

/// `GET /api/v1/clinic-security`: the clinic's sign-in policy.
pub async fn security(gw: &Gateway, claims: &Claims) -> Result<Value, GatewayError> {
    let row = gw
        .central
        .get()
        .await?
        .query_opt(
            "SELECT mfa_required FROM companies WHERE id = $1",
            &[claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?
        .ok_or(GatewayError::ClinicUnavailable)?;
    Ok(json!({"mfa_required": row.get::<_, bool>(0)}))
}

/// `PATCH /api/v1/clinic-security`: a clinic admin changes the sign-in policy.
pub async fn change_security(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    body: SecurityChange,
) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    lock_and_check_caller(&tx, claims, true).await?;
    tx.execute(
        "UPDATE companies SET mfa_required = $2 WHERE id = $1",
        &[claims.clinic.as_uuid(), &body.mfa_required],
    )
    .await
    .map_err(db)?;
    let action = if body.mfa_required {
        "require_mfa"
    } else {
        "allow_without_mfa"
    };
    let r = request_record(ctx, claims.sub, action, "clinic_security", "success");
    pgconn::audit::append(&*tx, &gw.config.audit_keys, claims.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(json!({"mfa_required": body.mfa_required}))
}
