//! Access tokens: HS256 JWTs with the algorithm pinned and `exp`, `iss`, `aud`, `sub`
//! and the clinic claim all required. The gateway issues and checks them; the worker
//! checks them again.

use crate::config::{ConfigError, Secret, Source};
use crate::ids::{ClinicId, UserId};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The only `typ` an API call accepts.
pub const ACCESS: &str = "access";
const SAMPLE_SECRETS: &[&str] = &["your-secret-key", "secret", "changeme", "change-me"];
const MIN_SECRET_BYTES: usize = 32;

/// What a role may do inside its clinic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Practitioner,
    Staff,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Practitioner => "practitioner",
            Role::Staff => "staff",
        }
    }

    /// Whether the role may read and write restricted fields (identifiers such as the
    /// social security number, clinical notes): admins and practitioners, not staff.
    pub fn sees_restricted(&self) -> bool {
        match self {
            Role::Admin | Role::Practitioner => true,
            Role::Staff => false,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "practitioner" => Some(Role::Practitioner),
            "staff" => Some(Role::Staff),
            _ => None,
        }
    }
}

/// The claims of an access token. Every field is required when decoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub clinic: ClinicId,
    pub role: Role,
    pub typ: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not a valid access token")]
    Invalid,
}

/// Signs access tokens with the current HS256 key (its id in the `kid` header) and
/// verifies them with the current or a retired key, chosen by `kid`.
#[derive(Clone)]
pub struct TokenService {
    kid: String,
    encoding: EncodingKey,
    decoding: std::collections::HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// Reads `JWT_SECRET` (≥ 32 bytes, not a sample value) and its id `JWT_KID`
    /// (default `k1`), retired keys still accepted for verification in
    /// `JWT_RETIRED_SECRETS` (`kid:secret,…`), `JWT_EXPIRE` (seconds, default 900),
    /// `JWT_ISSUER` and `JWT_AUDIENCE`.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let secret = Secret::new(source.required("JWT_SECRET")?);
        let ttl: i64 = source.parse_or("JWT_EXPIRE", 900)?;
        if !(30..=86_400).contains(&ttl) {
            return Err(ConfigError::Invalid {
                name: "JWT_EXPIRE",
                reason: "must be between 30 and 86400 seconds".into(),
            });
        }
        let mut service = Self::new(
            secret.expose().as_bytes(),
            &source.or("JWT_ISSUER", "medicalpro"),
            &source.or("JWT_AUDIENCE", "medicalpro-api"),
            ttl,
        )?
        .with_kid(&source.or("JWT_KID", "k1"));
        if let Some(retired) = source.get("JWT_RETIRED_SECRETS").filter(|v| !v.is_empty()) {
            for item in retired.split(',') {
                let (kid, secret) = item.split_once(':').ok_or(ConfigError::Invalid {
                    name: "JWT_RETIRED_SECRETS",
                    reason: "expected kid:secret pairs separated by commas".into(),
                })?;
                service = service.with_retired(kid.trim(), secret.trim().as_bytes())?;
            }
        }
        Ok(service)
    }

    /// Names the signing key (the `kid` header of issued tokens).
    pub fn with_kid(mut self, kid: &str) -> Self {
        if let Some(key) = self.decoding.remove(&self.kid) {
            self.decoding.insert(kid.to_owned(), key);
        }
        self.kid = kid.to_owned();
        self
    }

    /// Accepts tokens signed with a retired key, named `kid`, until they expire.
    pub fn with_retired(mut self, kid: &str, secret: &[u8]) -> Result<Self, ConfigError> {
        check_secret("JWT_RETIRED_SECRETS", secret)?;
        if kid.is_empty() || kid == self.kid {
            return Err(ConfigError::Invalid {
                name: "JWT_RETIRED_SECRETS",
                reason: "each retired key needs its own non-empty kid".into(),
            });
        }
        self.decoding
            .insert(kid.to_owned(), DecodingKey::from_secret(secret));
        Ok(self)
    }

    pub fn new(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        ttl_secs: i64,
    ) -> Result<Self, ConfigError> {
        check_secret("JWT_SECRET", secret)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let kid = "k1".to_owned();
        Ok(Self {
            decoding: [(kid.clone(), DecodingKey::from_secret(secret))].into(),
            kid,
            encoding: EncodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        })
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Issues an access token; returns it with its lifetime in seconds.
    pub fn issue(
        &self,
        user: UserId,
        clinic: ClinicId,
        role: Role,
    ) -> Result<(String, i64), TokenError> {
        let now = now_secs();
        let claims = Claims {
            sub: user,
            clinic,
            role,
            typ: ACCESS.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.ttl_secs,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        self.sign(&claims).map(|t| (t, self.ttl_secs))
    }

    /// Signs arbitrary claims with this service's key (also used by tests to forge).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).map_err(|_| TokenError::Invalid)
    }

    /// Verifies signature, algorithm, `exp`, `iss`, `aud` and `typ`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // The `kid` is unverified: it only picks which key must verify the signature.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = match header.kid.as_deref() {
            Some(kid) => self.decoding.get(kid),
            None => self.decoding.get(&self.kid),
        }
        .ok_or(TokenError::Invalid)?;
        let data = decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })?;
        if data.claims.typ != ACCESS {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

fn check_secret(name: &'static str, secret: &[u8]) -> Result<(), ConfigError> {
    let lowered = String::from_utf8_lossy(secret).to_ascii_lowercase();
    if SAMPLE_SECRETS.iter().any(|s| lowered == *s) {
        return Err(ConfigError::Invalid {
            name,
            reason: "is a well-known sample value; generate a random secret (e.g. `openssl rand -base64 48`)".into(),
        });
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
        });
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Takes the token out of an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn service() -> TokenService {
        TokenService::new(&[7u8; 32], "medicalpro", "medicalpro-api", 900).unwrap()
    }

    fn claims(svc: &TokenService) -> Claims {
        let (t, _) = svc
            .issue(UserId::generate(), ClinicId::generate(), Role::Admin)
            .unwrap();
        svc.verify(&t).unwrap()
    }

    #[test]
    fn round_trip() {
        let svc = service();
        let c = claims(&svc);
        assert_eq!(c.typ, ACCESS);
    }

    #[test]
    fn refuses_weak_secrets() {
        assert!(TokenService::new(b"your-secret-key", "i", "a", 60).is_err());
        assert!(TokenService::new(&[1u8; 31], "i", "a", 60).is_err());
    }

    #[test]
    fn refuses_tampering_and_wrong_keys() {
        let svc = service();
        let (t, _) = svc
            .issue(UserId::generate(), ClinicId::generate(), Role::Staff)
            .unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["role"] = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
            parts[2]
        );
        assert_eq!(svc.verify(&forged), Err(TokenError::Invalid));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert_eq!(svc.verify(&none), Err(TokenError::Invalid));
        let other = TokenService::new(&[8u8; 32], "medicalpro", "medicalpro-api", 900).unwrap();
        assert_eq!(other.verify(&t), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_expired_wrong_audience_and_non_access() {
        let svc = service();
        let mut c = claims(&svc);
        c.exp = now_secs() - 120;
        assert_eq!(svc.verify(&svc.sign(&c).unwrap()), Err(TokenError::Expired));
        let mut c = claims(&svc);
        c.aud = "someone-else".into();
        assert_eq!(svc.verify(&svc.sign(&c).unwrap()), Err(TokenError::Invalid));
        let mut c = claims(&svc);
        c.iss = "evil".into();
        assert_eq!(svc.verify(&svc.sign(&c).unwrap()), Err(TokenError::Invalid));
        let mut c = claims(&svc);
        c.typ = "refresh".into();
        assert_eq!(svc.verify(&svc.sign(&c).unwrap()), Err(TokenError::Invalid));
    }

    #[test]
    fn signing_keys_rotate_by_kid() {
        let old = TokenService::new(&[1u8; 32], "medicalpro", "medicalpro-api", 900).unwrap();
        let (old_token, _) = old
            .issue(UserId::generate(), ClinicId::generate(), Role::Admin)
            .unwrap();
        let rotated = TokenService::new(&[2u8; 32], "medicalpro", "medicalpro-api", 900)
            .unwrap()
            .with_kid("k2")
            .with_retired("k1", &[1u8; 32])
            .unwrap();
        assert!(
            rotated.verify(&old_token).is_ok(),
            "a retired key still verifies"
        );
        let (new_token, _) = rotated
            .issue(UserId::generate(), ClinicId::generate(), Role::Admin)
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token)
                .unwrap()
                .kid
                .as_deref(),
            Some("k2")
        );
        assert_eq!(
            old.verify(&new_token),
            Err(TokenError::Invalid),
            "unknown kid"
        );
        let dropped = TokenService::new(&[2u8; 32], "medicalpro", "medicalpro-api", 900)
            .unwrap()
            .with_kid("k2");
        assert_eq!(
            dropped.verify(&old_token),
            Err(TokenError::Invalid),
            "retired key removed"
        );
        // A token naming the current kid but signed with the retired key fails.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k2".into());
        let claims = rotated.verify(&old_token).unwrap();
        let forged = encode(&header, &claims, &EncodingKey::from_secret(&[1u8; 32])).unwrap();
        assert_eq!(rotated.verify(&forged), Err(TokenError::Invalid));
        assert!(rotated.clone().with_retired("k3", b"short").is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
