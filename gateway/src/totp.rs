//! The second factor's parts, below the handlers: TOTP codes (RFC 6238 with
//! `totp-rs`: SHA-1, 6 digits, 30-second steps, one step of clock skew either way),
//! the sealing of users' TOTP secrets, single-use recovery codes, and the
//! short-lived sign-in challenges kept in the central database.
//!
//! Secrets are sealed with AES-256-GCM ([`KeyRing::seal_secret`], bound to the
//! user's id) under a key derived from the gateway's `INTERNAL_SECRET` with
//! HKDF-SHA256 (salt `medicalpro-mfa`, info `totp-secret-v1`): every gateway
//! derives the same key and needs no setting of its own. Changing
//! `INTERNAL_SECRET` therefore makes enrolled secrets unreadable: users then
//! enrol again after an admin's reset. A code is accepted only for a time step
//! later than the last one accepted (`users.mfa_last_step`), so it works once.

use crate::error::GatewayError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::crypto::KeyRing;
use common::UserId;
use deadpool_postgres::GenericClient;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Digits of a code.
pub const DIGITS: usize = 6;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;
/// Recovery codes handed out when MFA is switched on.
pub const RECOVERY_CODES: usize = 10;
/// How long a `verify` challenge (a sign-in waiting for its code) lasts.
pub const VERIFY_TTL_SECS: f64 = 300.0;
/// How long an `enroll` challenge (a sign-in that must enrol first) lasts.
pub const ENROLL_TTL_SECS: f64 = 900.0;
/// The issuer authenticator apps show.
pub const ISSUER: &str = "MedicalPro";

/// The key ring users' TOTP secrets are sealed with, derived from `INTERNAL_SECRET`.
pub fn sealing_keys(internal_secret: &[u8]) -> KeyRing {
    let hk = Hkdf::<Sha256>::new(Some(b"medicalpro-mfa"), internal_secret);
    let mut key = Zeroizing::new([0u8; 32]);
    // HKDF-SHA256 expands to up to 8160 bytes; 32 always succeeds.
    let _ = hk.expand(b"totp-secret-v1", key.as_mut());
    KeyRing::new(1, &key)
}

/// The purpose a user's sealed secret is bound to.
fn purpose(user: UserId) -> String {
    format!("mfa-totp-secret:{user}")
}

/// Seals `secret` for `user`.
pub fn seal(keys: &KeyRing, user: UserId, secret: &[u8]) -> Vec<u8> {
    keys.seal_secret(&purpose(user), secret)
}

/// Opens `user`'s sealed secret.
pub fn open(
    keys: &KeyRing,
    user: UserId,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, GatewayError> {
    keys.open_secret(&purpose(user), sealed)
        .map(Zeroizing::new)
        .map_err(|_| {
            GatewayError::Internal(
                "a TOTP secret could not be opened (was INTERNAL_SECRET changed?)".into(),
            )
        })
}

/// A fresh random secret.
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    let mut raw = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    rand::rng().fill_bytes(raw.as_mut_slice());
    raw
}

/// The secret as authenticator apps take it: base32 (RFC 4648), no padding.
pub fn base32(secret: &[u8]) -> String {
    match Secret::Raw(secret.to_vec()).to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => String::new(),
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn uri_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `otpauth://` URI of a secret (the Key Uri Format authenticator apps scan).
pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        issuer = uri_component(ISSUER),
        account = uri_component(account),
        secret = base32(secret),
    )
}

fn totp(secret: &[u8]) -> Result<TOTP, GatewayError> {
    TOTP::new(Algorithm::SHA1, DIGITS, 1, STEP_SECS, secret.to_vec())
        .map_err(|e| GatewayError::Internal(format!("TOTP secret refused: {e}")))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time step `code` is valid for at `now` (the current step or one either
/// side), or `None`. Steps already used (`<= last_step`) never match.
pub fn matching_step(
    secret: &[u8],
    code: &str,
    now: u64,
    last_step: Option<i64>,
) -> Result<Option<i64>, GatewayError> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let totp = totp(secret)?;
    let current = now / STEP_SECS;
    let mut found = None;
    // Every candidate is computed and compared, in constant time.
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = totp.generate(step * STEP_SECS);
        let fresh = last_step.is_none_or(|last| i64::try_from(step).is_ok_and(|s| s > last));
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && fresh {
            found = i64::try_from(step).ok();
        }
    }
    Ok(found)
}

/// New recovery codes: `xxxxx-xxxxx`, each 50 random bits in lowercase base32.
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut raw = [0u8; 10];
            rand::rng().fill_bytes(&mut raw);
            let chars: String = raw
                .iter()
                .map(|b| ALPHABET[usize::from(b & 31)] as char)
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// How a recovery code is stored: SHA-256 of the user's id and the code as typed
/// without case, spaces or dashes.
pub fn recovery_hash(user: UserId, code: &str) -> Vec<u8> {
    let normal: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    Sha256::digest(format!("{user}:{normal}").as_bytes()).to_vec()
}

/// What a challenge lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Answer with a code (or a recovery code) for the token pair.
    Verify,
    /// Enrol (the clinic requires MFA and the user has none yet).
    Enroll,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::Enroll => "enroll",
        }
    }
}

/// The hash a challenge token is stored under.
pub fn challenge_hash(token: &str) -> Result<Vec<u8>, GatewayError> {
    if token.is_empty() || token.len() > 128 {
        return Err(GatewayError::MfaRefused(
            "The `mfa_token` is invalid, expired or already used; sign in again.",
        ));
    }
    Ok(Sha256::digest(token.as_bytes()).to_vec())
}

/// A new challenge for `user`: the token to hand out (only its hash is stored).
pub async fn open_challenge(
    client: &impl GenericClient,
    user: UserId,
    purpose: Purpose,
) -> Result<String, GatewayError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let ttl = match purpose {
        Purpose::Verify => VERIFY_TTL_SECS,
        Purpose::Enroll => ENROLL_TTL_SECS,
    };
    client
        .execute(
            "INSERT INTO mfa_challenges (token_hash, user_id, purpose, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            &[
                &Sha256::digest(token.as_bytes()).to_vec(),
                user.as_uuid(),
                &purpose.as_str(),
                &ttl,
            ],
        )
        .await
        .map_err(GatewayError::from_db)?;
    Ok(token)
}

/// The user a live (unused, unexpired) challenge of `purpose` belongs to.
pub async fn challenge_user(
    client: &impl GenericClient,
    token: &str,
    purpose: Purpose,
) -> Result<UserId, GatewayError> {
    let row = client
        .query_opt(
            "SELECT user_id FROM mfa_challenges \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()",
            &[&challenge_hash(token)?, &purpose.as_str()],
        )
        .await
        .map_err(GatewayError::from_db)?;
    row.map(|r| UserId::from_uuid(r.get(0)))
        .ok_or(GatewayError::MfaRefused(
            "The `mfa_token` is invalid, expired or already used; sign in again.",
        ))
}

/// Uses a challenge up (in the caller's transaction); refused when it was used
/// meanwhile.
pub async fn close_challenge(client: &impl GenericClient, token: &str) -> Result<(), GatewayError> {
    let used = client
        .execute(
            "UPDATE mfa_challenges SET used_at = now() \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()",
            &[&challenge_hash(token)?],
        )
        .await
        .map_err(GatewayError::from_db)?;
    if used == 1 {
        Ok(())
    } else {
        Err(GatewayError::MfaRefused(
            "The `mfa_token` is invalid, expired or already used; sign in again.",
        ))
    }
}

/// Deletes challenges that ended a while ago (run now and then with the
/// throttle's pruning).
pub async fn prune(client: &impl GenericClient) -> Result<u64, GatewayError> {
    client
        .execute(
            "DELETE FROM mfa_challenges WHERE expires_at < now() - interval '1 hour'",
            &[],
        )
        .await
        .map_err(GatewayError::from_db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238's SHA-1 test secret and vectors (8 digits there; the last 6 here).
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn codes_match_rfc_6238_vectors() {
        for (time, code) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
        ] {
            let step = matching_step(RFC_SECRET, code, time, None).unwrap();
            assert_eq!(step, Some((time / STEP_SECS) as i64), "{time}");
        }
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let secret = new_secret();
        let t = 1_700_000_000u64;
        let code = totp(&secret).unwrap().generate(t);
        let step = (t / STEP_SECS) as i64;
        assert_eq!(
            matching_step(&secret, &code, t + STEP_SECS, None).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, t - STEP_SECS, None).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, t + 2 * STEP_SECS, None).unwrap(),
            None
        );
        assert_eq!(matching_step(&secret, "12345", t, None).unwrap(), None);
        assert_eq!(matching_step(&secret, "abcdef", t, None).unwrap(), None);
    }

    #[test]
    fn a_used_step_is_refused() {
        let secret = new_secret();
        let t = 1_700_000_000u64;
        let code = totp(&secret).unwrap().generate(t);
        let step = (t / STEP_SECS) as i64;
        assert_eq!(matching_step(&secret, &code, t, Some(step)).unwrap(), None);
        assert_eq!(
            matching_step(&secret, &code, t, Some(step - 1)).unwrap(),
            Some(step)
        );
        // A later code after an earlier one is still fine.
        let next = totp(&secret).unwrap().generate(t + STEP_SECS);
        assert_eq!(
            matching_step(&secret, &next, t + STEP_SECS, Some(step)).unwrap(),
            Some(step + 1)
        );
    }

    #[test]
    fn secrets_are_sealed_per_user() {
        let keys = sealing_keys(b"an internal secret of at least 32 bytes!");
        let (a, b) = (UserId::generate(), UserId::generate());
        let secret = new_secret();
        let sealed = seal(&keys, a, &secret);
        assert_eq!(
            open(&keys, a, &sealed).unwrap().as_slice(),
            secret.as_slice()
        );
        assert!(open(&keys, b, &sealed).is_err());
        let other = sealing_keys(b"another internal secret, 32 bytes or more");
        assert!(open(&other, a, &sealed).is_err());
    }

    #[test]
    fn recovery_codes_are_distinct_and_hashed_loosely() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        let user = UserId::generate();
        let code = &codes[0];
        assert_eq!(code.len(), 11);
        let h = recovery_hash(user, code);
        assert_eq!(
            h,
            recovery_hash(user, &code.to_uppercase().replace('-', " "))
        );
        assert_ne!(h, recovery_hash(UserId::generate(), code));
    }

    #[test]
    fn the_uri_names_issuer_account_and_secret() {
        let uri = otpauth_uri(b"12345678901234567890", "a+b@x.org");
        assert_eq!(
            uri,
            "otpauth://totp/MedicalPro:a%2Bb%40x.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=MedicalPro&algorithm=SHA1&digits=6&period=30"
        );
    }
}
