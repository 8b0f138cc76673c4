//! Access tokens: EdDSA (Ed25519) JWTs with the algorithm pinned and `exp`, `iss`,
//! `aud`, `sub`, the clinic claim and the user's token version all required.
//!
//! Only gateways hold a signing key ([`TokenSigner`]); gateways and workers verify
//! with public keys chosen by `kid` ([`TokenVerifier`]), which also publishes them as
//! a JWKS. A verified token is remembered (bounded, until it expires) so checking it
//! again costs a hash and a map look-up, and every check asks [`Revocations`]
//! whether the user's tokens of that version were revoked since.

use crate::config::{ConfigError, Source};
use crate::ids::{ClinicId, UserId};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The only `typ` an API call accepts.
pub const ACCESS: &str = "access";
/// Verified tokens remembered by a verifier.
const VERIFIED_CACHE: usize = 65_536;

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
    /// The user's token version when the token was issued: disabling the user,
    /// changing its role or signing it out everywhere raises the version, and
    /// tokens of an older version stop working.
    pub ver: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not a valid access token")]
    Invalid,
    /// Signed and unexpired, but its user was disabled, changed role or signed out
    /// everywhere since it was issued.
    #[error("the token was revoked")]
    Revoked { user: UserId, clinic: ClinicId },
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// Parses `kid:path,kid:path` into pairs.
fn kid_paths(name: &'static str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (kid, path) = item
                .split_once(':')
                .ok_or_else(|| invalid(name, "expected kid:path pairs separated by commas"))?;
            let kid = kid.trim();
            if kid.is_empty() || kid.len() > 64 {
                return Err(invalid(name, "each key needs a kid of 1 to 64 characters"));
            }
            Ok((kid.to_owned(), path.trim().to_owned()))
        })
        .collect()
}

fn read_file(name: &'static str, path: &str) -> Result<Zeroizing<String>, ConfigError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| invalid(name, format!("cannot read {path}: {e}")))
}

/// An Ed25519 public key from a PEM `PUBLIC KEY` (SPKI) block.
pub fn public_key_from_pem(pem: &str) -> Option<[u8; 32]> {
    ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
        .ok()
        .map(|k| k.to_bytes())
}

/// A new Ed25519 key pair as PEM: the private key (PKCS#8) and the public key
/// (SPKI), as `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write.
pub fn generate_key_pair() -> Result<(Zeroizing<String>, String), TokenError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rng(), seed.as_mut());
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|_| TokenError::Invalid)?;
    let public = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|_| TokenError::Invalid)?;
    Ok((Zeroizing::new(private.to_string()), public))
}

/// Signs access tokens (gateways only) with an Ed25519 key named by `kid`.
#[derive(Clone)]
pub struct TokenSigner {
    kid: String,
    encoding: EncodingKey,
    public: [u8; 32],
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// From a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(
        kid: &str,
        pem: &str,
        issuer: &str,
        audience: &str,
        ttl_secs: i64,
    ) -> Result<Self, ConfigError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| {
            invalid(
                "JWT_SIGNING_KEY_FILE",
                "not an Ed25519 private key in PKCS#8 PEM (`openssl genpkey -algorithm ed25519`)",
            )
        })?;
        let der = Zeroizing::new(
            key.to_pkcs8_der()
                .map_err(|_| invalid("JWT_SIGNING_KEY_FILE", "cannot encode the key"))?
                .as_bytes()
                .to_vec(),
        );
        if kid.is_empty() || kid.len() > 64 {
            return Err(invalid("JWT_KID", "must be 1 to 64 characters"));
        }
        Ok(Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(&der),
            public: key.verifying_key().to_bytes(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        })
    }

    /// Reads `JWT_SIGNING_KEY_FILE` (PKCS#8 PEM Ed25519 key), `JWT_KID` (default
    /// `k1`), `JWT_EXPIRE` (seconds, default 900), `JWT_ISSUER` and `JWT_AUDIENCE`.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let path = source.required("JWT_SIGNING_KEY_FILE")?;
        let pem = read_file("JWT_SIGNING_KEY_FILE", &path)?;
        let (issuer, audience, ttl) = claims_settings(source)?;
        Self::from_pem(&source.or("JWT_KID", "k1"), &pem, &issuer, &audience, ttl)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A verifier for this key's tokens (plus `retired` public keys by kid).
    pub fn verifier(&self, retired: &[(String, [u8; 32])]) -> TokenVerifier {
        let mut keys = vec![(self.kid.clone(), self.public)];
        keys.extend(retired.iter().cloned());
        TokenVerifier::new(keys, &self.issuer, &self.audience, self.ttl_secs)
    }

    /// Issues an access token of user version `ver`; returns it with its lifetime.
    pub fn issue(
        &self,
        user: UserId,
        clinic: ClinicId,
        role: Role,
        ver: i64,
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
            ver,
        };
        self.sign(&claims).map(|t| (t, self.ttl_secs))
    }

    /// Signs claims with this key (any serializable claims: tests forge with it).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).map_err(|_| TokenError::Invalid)
    }
}

fn claims_settings(source: &Source) -> Result<(String, String, i64), ConfigError> {
    let ttl: i64 = source.parse_or("JWT_EXPIRE", 900)?;
    if !(30..=86_400).contains(&ttl) {
        return Err(invalid(
            "JWT_EXPIRE",
            "must be between 30 and 86400 seconds",
        ));
    }
    Ok((
        source.or("JWT_ISSUER", "medicalpro"),
        source.or("JWT_AUDIENCE", "medicalpro-api"),
        ttl,
    ))
}

/// Reads public keys named `kid:path-to-PEM` from setting `name`.
fn public_keys(
    source: &Source,
    name: &'static str,
) -> Result<Vec<(String, [u8; 32])>, ConfigError> {
    kid_paths(name, &source.or(name, ""))?
        .into_iter()
        .map(|(kid, path)| {
            let pem = read_file(name, &path)?;
            let key = public_key_from_pem(&pem).ok_or_else(|| {
                invalid(
                    name,
                    format!("{path} is not an Ed25519 public key in PEM (`openssl pkey -pubout`)"),
                )
            })?;
            Ok((kid, key))
        })
        .collect()
}

/// The gateway's token settings: its signer, and a verifier for its own and its
/// retired keys (`JWT_RETIRED_PUBLIC_KEYS`: `kid:path,…`, accepted until their
/// tokens expire and still published in the JWKS).
pub fn gateway_tokens(source: &Source) -> Result<(TokenSigner, TokenVerifier), ConfigError> {
    let signer = TokenSigner::from_source(source)?;
    let retired = public_keys(source, "JWT_RETIRED_PUBLIC_KEYS")?;
    if retired.iter().any(|(kid, _)| kid == signer.kid()) {
        return Err(invalid(
            "JWT_RETIRED_PUBLIC_KEYS",
            "a retired key may not reuse the current JWT_KID",
        ));
    }
    let verifier = signer.verifier(&retired);
    Ok((signer, verifier))
}

/// Verifies access tokens with public keys chosen by `kid`; remembers verified
/// tokens until they expire; refuses revoked ones.
pub struct TokenVerifier {
    keys: HashMap<String, ([u8; 32], DecodingKey)>,
    /// The longest lifetime an accepted token may have (`JWT_EXPIRE`).
    ttl_secs: i64,
    validation: Validation,
    revocations: Arc<Revocations>,
    verified: Mutex<lru::LruCache<[u8; 32], Claims>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("TokenVerifier")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(keys: Vec<(String, [u8; 32])>, issuer: &str, audience: &str, ttl_secs: i64) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Self {
            ttl_secs,
            keys: keys
                .into_iter()
                .map(|(kid, public)| (kid, (public, DecodingKey::from_ed_der(&public))))
                .collect(),
            validation,
            revocations: Arc::new(Revocations::default()),
            verified: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(VERIFIED_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// A worker's verifier: `JWT_PUBLIC_KEYS` (`kid:path-to-PEM,…`, the gateways'
    /// current and retired public keys), `JWT_ISSUER`, `JWT_AUDIENCE`.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let keys = public_keys(source, "JWT_PUBLIC_KEYS")?;
        if keys.is_empty() {
            return Err(ConfigError::Missing("JWT_PUBLIC_KEYS"));
        }
        let (issuer, audience, ttl) = claims_settings(source)?;
        Ok(Self::new(keys, &issuer, &audience, ttl))
    }

    /// The revocation state this verifier consults (filled from the central database).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// How far back a change of token version matters: a token lifetime and a
    /// minute of leeway (tokens issued before that have expired).
    pub fn revocation_horizon_secs(&self) -> i64 {
        self.ttl_secs + 60
    }

    /// Verifies signature, algorithm, `exp`, `iss`, `aud`, `typ`, then revocation.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned();
        let claims = match remembered {
            Some(claims) if claims.exp + self.validation.leeway as i64 >= now_secs() => claims,
            Some(_) => return Err(TokenError::Expired),
            None => {
                let claims = self.verify_signature(token)?;
                self.verified
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(digest, claims.clone());
                claims
            }
        };
        if !self.revocations.is_current(claims.sub, claims.ver) {
            return Err(TokenError::Revoked {
                user: claims.sub,
                clinic: claims.clinic,
            });
        }
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        // The `kid` is unverified: it only picks which key must verify the signature.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let (_, key) = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
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

    /// The public keys as a JSON Web Key Set (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        let keys: Vec<serde_json::Value> = kids
            .into_iter()
            .filter_map(|kid| {
                let (public, _) = self.keys.get(kid)?;
                Some(serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(public),
                    "kid": kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }))
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// Which token versions of which users are revoked, as the central database says:
/// a user's tokens below its current version no longer work. Only users whose
/// version changed within a token lifetime need an entry (older tokens expired);
/// the state is replaced whenever it is read again after a lost connection, and
/// kept as last known while the central database is unreachable.
#[derive(Debug, Default)]
pub struct Revocations {
    versions: RwLock<HashMap<UserId, i64>>,
}

impl Revocations {
    /// Whether a token of version `ver` of `user` is still good.
    pub fn is_current(&self, user: UserId, ver: i64) -> bool {
        self.versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user)
            .is_none_or(|current| ver >= *current)
    }

    /// A user's version is now `version` (never lowered).
    pub fn raise(&self, user: UserId, version: i64) {
        let mut map = self
            .versions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(user).or_insert(version);
        *entry = (*entry).max(version);
    }

    /// Replaces the whole state with what the central database holds.
    pub fn replace(&self, versions: impl IntoIterator<Item = (UserId, i64)>) {
        let fresh: HashMap<UserId, i64> = versions.into_iter().collect();
        *self
            .versions
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// Applies a notification payload `user-id:version`; false when malformed.
    pub fn apply(&self, payload: &str) -> bool {
        let Some((user, version)) = payload.split_once(':') else {
            return false;
        };
        match (user.parse::<UserId>(), version.parse::<i64>()) {
            (Ok(user), Ok(version)) => {
                self.raise(user, version);
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

    fn signer(kid: &str) -> TokenSigner {
        let (private, _) = generate_key_pair().unwrap();
        TokenSigner::from_pem(kid, &private, "medicalpro", "medicalpro-api", 900).unwrap()
    }

    fn issue(s: &TokenSigner) -> String {
        s.issue(UserId::generate(), ClinicId::generate(), Role::Admin, 1)
            .unwrap()
            .0
    }

    #[test]
    fn round_trip_and_cache() {
        let s = signer("k1");
        let v = s.verifier(&[]);
        let t = issue(&s);
        let c = v.verify(&t).unwrap();
        assert_eq!(c.typ, ACCESS);
        assert_eq!(
            v.verify(&t).unwrap(),
            c,
            "a remembered token verifies again"
        );
    }

    #[test]
    fn refuses_tampering_wrong_keys_and_other_algorithms() {
        let s = signer("k1");
        let v = s.verifier(&[]);
        let t = issue(&s);
        let parts: Vec<&str> = t.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["role"] = "admin".into();
        payload["clinic"] = ClinicId::generate().to_string().into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
            parts[2]
        );
        assert_eq!(v.verify(&forged), Err(TokenError::Invalid));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            parts[1]
        );
        assert_eq!(v.verify(&none), Err(TokenError::Invalid));
        // HS256 keyed with the public key (the classic algorithm confusion).
        let claims = v.verify(&t).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let public = s.public;
        let confused = encode(&header, &claims, &EncodingKey::from_secret(&public)).unwrap();
        assert_eq!(v.verify(&confused), Err(TokenError::Invalid));
        // Another key claiming the same kid.
        let other = signer("k1");
        assert_eq!(v.verify(&issue(&other)), Err(TokenError::Invalid));
        // No kid at all.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = None;
        let no_kid = encode(&header, &claims, &s.encoding).unwrap();
        assert_eq!(v.verify(&no_kid), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_expired_wrong_audience_and_non_access() {
        let s = signer("k1");
        let v = s.verifier(&[]);
        let base = v.verify(&issue(&s)).unwrap();
        let mut c = base.clone();
        c.exp = now_secs() - 120;
        assert_eq!(v.verify(&s.sign(&c).unwrap()), Err(TokenError::Expired));
        let mut c = base.clone();
        c.aud = "someone-else".into();
        assert_eq!(v.verify(&s.sign(&c).unwrap()), Err(TokenError::Invalid));
        let mut c = base.clone();
        c.iss = "evil".into();
        assert_eq!(v.verify(&s.sign(&c).unwrap()), Err(TokenError::Invalid));
        let mut c = base;
        c.typ = "refresh".into();
        assert_eq!(v.verify(&s.sign(&c).unwrap()), Err(TokenError::Invalid));
    }

    #[test]
    fn signing_keys_rotate_by_kid() {
        let old = signer("k1");
        let new = signer("k2");
        let old_token = issue(&old);
        let rotated = new.verifier(&[("k1".into(), old.public)]);
        assert!(
            rotated.verify(&old_token).is_ok(),
            "a retired key still verifies"
        );
        assert!(rotated.verify(&issue(&new)).is_ok());
        let jwks = rotated.jwks();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["k1", "k2"]);
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        assert!(
            new.verifier(&[]).verify(&old_token).is_err(),
            "retired key removed"
        );
    }

    #[test]
    fn revoked_versions_stop_working_remembered_or_not() {
        let s = signer("k1");
        let v = s.verifier(&[]);
        let user = UserId::generate();
        let clinic = ClinicId::generate();
        let (t1, _) = s.issue(user, clinic, Role::Admin, 1).unwrap();
        assert!(v.verify(&t1).is_ok());
        assert!(v.revocations().apply(&format!("{user}:2")));
        let revoked = Err(TokenError::Revoked { user, clinic });
        assert_eq!(v.verify(&t1), revoked);
        let (t2, _) = s.issue(user, ClinicId::generate(), Role::Admin, 2).unwrap();
        assert!(v.verify(&t2).is_ok());
        // Never lowered by a late or repeated notification.
        v.revocations().raise(user, 1);
        assert_eq!(v.verify(&t1), revoked);
        assert!(!v.revocations().apply("garbage"));
        v.revocations().replace([]);
        assert!(v.verify(&t1).is_ok(), "state replaced by the database's");
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
