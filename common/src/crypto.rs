//! Envelope encryption: a master key wraps per-clinic data keys, which seal fields.
//!
//! - The **master key** (`MASTER_KEY`, 32 bytes base64, id `MASTER_KEY_ID`; retired
//!   ones in `MASTER_KEYS_RETIRED`) never touches clinic data. It seals operational
//!   secrets (a clinic's database role password) and wraps data keys; both carry the
//!   master key id, so `medicalpro-admin rewrap-keys` can re-seal them under a new one.
//! - Each clinic has **data keys** ([`DataKeyMaterial`]), numbered by version and
//!   stored wrapped in the central database (`clinic_data_keys`). A version holds a
//!   field key (AES-256-GCM) and the clinic's blind-index key (HMAC-SHA256). A new
//!   version gets a fresh field key and keeps the index key, so lookups keep working
//!   while `medicalpro-admin rotate-data-keys` re-encrypts values.
//! - A sealed value is `version (1) ‖ key id (4, BE) ‖ nonce (12) ‖ ciphertext+tag`
//!   under a random 96-bit nonce; the key id is the master key id for secrets and the
//!   data-key version for fields. A field's associated data binds it to its clinic,
//!   table, row and column, so a ciphertext copied elsewhere fails to open.

use crate::config::{ConfigError, Source};
use crate::ids::ClinicId;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};

const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("stored value is malformed")]
    Malformed,
    #[error("no key with id {0}")]
    UnknownKey(u32),
    #[error("stored value failed its integrity check")]
    Integrity,
}

/// Where a sealed value lives; becomes the AEAD associated data.
#[derive(Clone, Copy, Debug)]
pub struct FieldContext<'a> {
    pub clinic: ClinicId,
    pub table: &'a str,
    pub row: &'a uuid::Uuid,
    pub column: &'a str,
}

impl FieldContext<'_> {
    fn associated_data(&self) -> Vec<u8> {
        format!(
            "medicalpro:v1:{}:{}:{}:{}",
            self.clinic, self.table, self.row, self.column
        )
        .into_bytes()
    }
}

/// The key id a sealed value names in its header (master key id or data-key version).
pub fn sealed_key_id(stored: &[u8]) -> Result<u32, CryptoError> {
    split(stored).map(|(id, _)| id)
}

/// The master keys of one process: one current id to seal with, every known id to open.
pub struct KeyRing {
    current: u32,
    keys: HashMap<u32, Aes256Gcm>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn wrapping_cipher(master: &[u8; 32]) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(b"medicalpro"), master);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    // HKDF-SHA256 can expand up to 8160 bytes; 32 always succeeds.
    let _ = hk.expand(b"secret-box", key.as_mut());
    Aes256Gcm::new(key.as_ref().into())
}

impl KeyRing {
    /// Reads `MASTER_KEY` (base64 of 32 random bytes) and `MASTER_KEY_ID` (default 1),
    /// plus optional retired keys in `MASTER_KEYS_RETIRED` as `id:base64,…`.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let current: u32 = source.parse_or("MASTER_KEY_ID", 1)?;
        let key = decode_key("MASTER_KEY", &source.required("MASTER_KEY")?)?;
        let mut ring = Self::new(current, &key);
        if let Some(retired) = source.get("MASTER_KEYS_RETIRED").filter(|v| !v.is_empty()) {
            for item in retired.split(',') {
                let (id, b64) = item.split_once(':').ok_or(ConfigError::Invalid {
                    name: "MASTER_KEYS_RETIRED",
                    reason: "expected id:base64 pairs separated by commas".into(),
                })?;
                let id: u32 = id.trim().parse().map_err(|_| ConfigError::Invalid {
                    name: "MASTER_KEYS_RETIRED",
                    reason: "key ids are integers".into(),
                })?;
                let key = decode_key("MASTER_KEYS_RETIRED", b64.trim())?;
                ring.keys.entry(id).or_insert_with(|| wrapping_cipher(&key));
            }
        }
        Ok(ring)
    }

    pub fn new(current: u32, master: &[u8; 32]) -> Self {
        let mut keys = HashMap::new();
        keys.insert(current, wrapping_cipher(master));
        Self { current, keys }
    }

    /// A fresh random master key, base64-encoded (for dev stacks and tests).
    pub fn generate_master_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    /// The id new secrets are sealed under.
    pub fn current_id(&self) -> u32 {
        self.current
    }

    fn current_cipher(&self) -> &Aes256Gcm {
        // `new` always inserts the current id.
        &self.keys[&self.current]
    }

    /// Seals an operational secret (a clinic's database password) under a purpose label.
    pub fn seal_secret(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        seal(
            self.current_cipher(),
            self.current,
            purpose.as_bytes(),
            plaintext,
        )
    }

    pub fn open_secret(&self, purpose: &str, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = sealed_key_id(stored)?;
        let cipher = self.keys.get(&id).ok_or(CryptoError::UnknownKey(id))?;
        open(cipher, purpose.as_bytes(), stored)
    }

    /// The secret sealed again under the current master key, or `None` when it
    /// already is (so re-wrapping is idempotent and resumable).
    pub fn reseal_secret(
        &self,
        purpose: &str,
        stored: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        if sealed_key_id(stored)? == self.current {
            return Ok(None);
        }
        let plain = self.open_secret(purpose, stored)?;
        Ok(Some(self.seal_secret(purpose, &plain)))
    }

    /// Wraps one version of a clinic's data key for storage.
    pub fn wrap_data_key(
        &self,
        clinic: ClinicId,
        version: u32,
        material: &DataKeyMaterial,
    ) -> Vec<u8> {
        self.seal_secret(
            &data_key_purpose(clinic, version),
            material.to_bytes().as_slice(),
        )
    }

    pub fn unwrap_data_key(
        &self,
        clinic: ClinicId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<DataKeyMaterial, CryptoError> {
        let plain =
            zeroize::Zeroizing::new(self.open_secret(&data_key_purpose(clinic, version), wrapped)?);
        DataKeyMaterial::from_bytes(&plain)
    }
}

/// How a single-use sign-up code (`medicalpro-admin invite`) is stored: its SHA-256
/// (the code itself is 192 random bits, so no slow hash is needed).
pub fn signup_code_hash(code: &str) -> Vec<u8> {
    use sha2::Digest;
    Sha256::digest(code.trim().as_bytes()).to_vec()
}

/// The purpose label a clinic's sealed database role password is bound to.
pub fn role_password_purpose(clinic: ClinicId) -> String {
    format!("db-role-password:{clinic}")
}

/// The purpose label a wrapped data key is bound to.
pub fn data_key_purpose(clinic: ClinicId, version: u32) -> String {
    format!("clinic-data-key:{clinic}:v{version}")
}

/// One version of a clinic's data key, in the clear (only ever in memory, and
/// wiped when dropped).
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct DataKeyMaterial {
    field: [u8; 32],
    index: [u8; 32],
}

impl std::fmt::Debug for DataKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKeyMaterial(..)")
    }
}

impl DataKeyMaterial {
    /// A new clinic's first key: random field and index keys.
    pub fn generate() -> Self {
        let mut field = [0u8; 32];
        let mut index = [0u8; 32];
        rand::rng().fill_bytes(&mut field);
        rand::rng().fill_bytes(&mut index);
        Self { field, index }
    }

    /// The next version: a fresh field key, the same index key (blind indexes stay
    /// valid while values are re-encrypted).
    pub fn rotated(&self) -> Self {
        let mut field = [0u8; 32];
        rand::rng().fill_bytes(&mut field);
        Self {
            field,
            index: self.index,
        }
    }

    fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 64]> {
        let mut out = zeroize::Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(&self.field);
        out[32..].copy_from_slice(&self.index);
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 64 {
            return Err(CryptoError::Malformed);
        }
        let mut field = [0u8; 32];
        let mut index = [0u8; 32];
        field.copy_from_slice(&bytes[..32]);
        index.copy_from_slice(&bytes[32..]);
        Ok(Self { field, index })
    }
}

/// The unwrapped data keys of one clinic: every version known, the newest to seal.
pub struct ClinicKeys {
    clinic: ClinicId,
    current: u32,
    fields: BTreeMap<u32, Aes256Gcm>,
    index: [u8; 32],
}

impl std::fmt::Debug for ClinicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClinicKeys")
            .field("clinic", &self.clinic)
            .field("current", &self.current)
            .field("versions", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClinicKeys {
    /// The keys from their versions; the highest version seals and indexes. `None`
    /// when `versions` is empty.
    pub fn new(clinic: ClinicId, versions: Vec<(u32, DataKeyMaterial)>) -> Option<Self> {
        let (current, newest) = versions.iter().max_by_key(|(v, _)| *v)?;
        let (current, index) = (*current, newest.index);
        let fields = versions
            .into_iter()
            .map(|(v, m)| (v, Aes256Gcm::new(&m.field.into())))
            .collect();
        Some(Self {
            clinic,
            current,
            fields,
            index,
        })
    }

    pub fn clinic(&self) -> ClinicId {
        self.clinic
    }

    /// The version new values are sealed with.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Whether a value sealed under `version` can be opened.
    pub fn has_version(&self, version: u32) -> bool {
        self.fields.contains_key(&version)
    }

    /// Seals a field value bound to its place.
    pub fn seal_field(&self, ctx: &FieldContext<'_>, plaintext: &[u8]) -> Vec<u8> {
        // `new` always holds the current version.
        seal(
            &self.fields[&self.current],
            self.current,
            &ctx.associated_data(),
            plaintext,
        )
    }

    pub fn open_field(
        &self,
        ctx: &FieldContext<'_>,
        stored: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let version = sealed_key_id(stored)?;
        let cipher = self
            .fields
            .get(&version)
            .ok_or(CryptoError::UnknownKey(version))?;
        open(cipher, &ctx.associated_data(), stored)
    }

    /// Keyed hash for exact-match lookups on an encrypted column.
    pub fn blind_index(&self, table: &str, column: &str, value: &str) -> Vec<u8> {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.index) else {
            unreachable!("HMAC-SHA256 takes keys of any length")
        };
        mac.update(format!("{}:{table}:{column}:", self.clinic).as_bytes());
        mac.update(normalise(value).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Lookups ignore case and the spaces and dashes people type inconsistently.
fn normalise(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn decode_key(name: &'static str, b64: &str) -> Result<zeroize::Zeroizing<[u8; 32]>, ConfigError> {
    let bytes =
        zeroize::Zeroizing::new(STANDARD.decode(b64).map_err(|_| ConfigError::Invalid {
            name,
            reason: "must be base64 (e.g. `openssl rand -base64 32`)".into(),
        })?);
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ConfigError::Invalid {
            name,
            reason: "must decode to exactly 32 bytes".into(),
        })?;
    Ok(zeroize::Zeroizing::new(key))
}

fn seal(cipher: &Aes256Gcm, key_id: u32, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
    out.push(FORMAT_V1);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&nonce);
    // AES-GCM encryption only fails for plaintexts beyond 64 GiB.
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    out.extend_from_slice(&ct);
    out
}

fn split(stored: &[u8]) -> Result<(u32, &[u8]), CryptoError> {
    if stored.len() < HEADER_LEN + 16 || stored[0] != FORMAT_V1 {
        return Err(CryptoError::Malformed);
    }
    let id = u32::from_be_bytes([stored[1], stored[2], stored[3], stored[4]]);
    Ok((id, &stored[5..]))
}

fn open(cipher: &Aes256Gcm, aad: &[u8], stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (_, rest) = split(stored)?;
    let (nonce, ct) = rest.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(clinic: ClinicId) -> ClinicKeys {
        ClinicKeys::new(clinic, vec![(1, DataKeyMaterial::generate())]).unwrap()
    }

    #[test]
    fn seals_and_opens_in_place_only() {
        let clinic = ClinicId::generate();
        let keys = keys(clinic);
        let row = uuid::Uuid::now_v7();
        let other_row = uuid::Uuid::now_v7();
        let ctx = FieldContext {
            clinic,
            table: "patients",
            row: &row,
            column: "ssn",
        };
        let sealed = keys.seal_field(&ctx, b"1 84 12 75 123 456 78");
        assert!(!sealed.windows(5).any(|w| w == b"1 84 "));
        assert_eq!(
            keys.open_field(&ctx, &sealed).unwrap(),
            b"1 84 12 75 123 456 78"
        );
        let moved = FieldContext {
            row: &other_row,
            ..ctx
        };
        assert_eq!(
            keys.open_field(&moved, &sealed),
            Err(CryptoError::Integrity)
        );
        let other_clinic = FieldContext {
            clinic: ClinicId::generate(),
            ..ctx
        };
        assert_eq!(
            keys.open_field(&other_clinic, &sealed),
            Err(CryptoError::Integrity)
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(keys.open_field(&ctx, &flipped), Err(CryptoError::Integrity));
        // Another clinic's keys cannot open it even with the right context.
        let stranger = self::keys(ClinicId::generate());
        assert_eq!(
            stranger.open_field(&ctx, &sealed),
            Err(CryptoError::Integrity)
        );
    }

    #[test]
    fn nonces_are_fresh() {
        let clinic = ClinicId::generate();
        let keys = keys(clinic);
        let row = uuid::Uuid::now_v7();
        let ctx = FieldContext {
            clinic,
            table: "t",
            row: &row,
            column: "c",
        };
        assert_ne!(keys.seal_field(&ctx, b"x"), keys.seal_field(&ctx, b"x"));
    }

    #[test]
    fn rotation_keeps_old_values_open_and_lookups_stable() {
        let clinic = ClinicId::generate();
        let v1 = DataKeyMaterial::generate();
        let v2 = v1.rotated();
        assert_ne!(v1, v2);
        let old = ClinicKeys::new(clinic, vec![(1, v1.clone())]).unwrap();
        let new = ClinicKeys::new(clinic, vec![(2, v2.clone()), (1, v1)]).unwrap();
        assert_eq!(new.current_version(), 2);
        let row = uuid::Uuid::now_v7();
        let ctx = FieldContext {
            clinic,
            table: "patients",
            row: &row,
            column: "ssn",
        };
        let before = old.seal_field(&ctx, b"123");
        let after = new.seal_field(&ctx, b"123");
        assert_eq!(sealed_key_id(&before).unwrap(), 1);
        assert_eq!(sealed_key_id(&after).unwrap(), 2);
        assert_eq!(new.open_field(&ctx, &before).unwrap(), b"123");
        assert_eq!(
            old.open_field(&ctx, &after),
            Err(CryptoError::UnknownKey(2))
        );
        assert_eq!(
            old.blind_index("patients", "ssn", "123"),
            new.blind_index("patients", "ssn", "123")
        );
        let only_v2 = ClinicKeys::new(clinic, vec![(2, v2)]).unwrap();
        assert_eq!(
            only_v2.open_field(&ctx, &before),
            Err(CryptoError::UnknownKey(1))
        );
    }

    #[test]
    fn data_keys_are_wrapped_for_their_clinic_and_version() {
        let ring = KeyRing::new(1, &[3u8; 32]);
        let clinic = ClinicId::generate();
        let material = DataKeyMaterial::generate();
        let wrapped = ring.wrap_data_key(clinic, 1, &material);
        assert!(!wrapped.windows(32).any(|w| w == material.field));
        assert_eq!(ring.unwrap_data_key(clinic, 1, &wrapped).unwrap(), material);
        assert_eq!(
            ring.unwrap_data_key(clinic, 2, &wrapped),
            Err(CryptoError::Integrity)
        );
        assert_eq!(
            ring.unwrap_data_key(ClinicId::generate(), 1, &wrapped),
            Err(CryptoError::Integrity)
        );
        let other_master = KeyRing::new(1, &[4u8; 32]);
        assert_eq!(
            other_master.unwrap_data_key(clinic, 1, &wrapped),
            Err(CryptoError::Integrity)
        );
    }

    #[test]
    fn retired_keys_still_open_and_reseal_moves_to_the_current() {
        let old = KeyRing::new(1, &[1u8; 32]);
        let sealed = old.seal_secret("p", b"pw");
        let src = Source::from_pairs([
            ("MASTER_KEY", STANDARD.encode([2u8; 32])),
            ("MASTER_KEY_ID", "2".to_owned()),
            (
                "MASTER_KEYS_RETIRED",
                format!("1:{}", STANDARD.encode([1u8; 32])),
            ),
        ]);
        let ring = KeyRing::from_source(&src).unwrap();
        assert_eq!(ring.open_secret("p", &sealed).unwrap(), b"pw");
        assert_eq!(ring.open_secret("q", &sealed), Err(CryptoError::Integrity));
        assert_eq!(ring.seal_secret("p", b"x")[1..5], 2u32.to_be_bytes());
        let resealed = ring.reseal_secret("p", &sealed).unwrap().unwrap();
        assert_eq!(sealed_key_id(&resealed).unwrap(), 2);
        assert_eq!(ring.reseal_secret("p", &resealed).unwrap(), None);
        let only_new = KeyRing::new(2, &[2u8; 32]);
        assert_eq!(only_new.open_secret("p", &resealed).unwrap(), b"pw");
        assert_eq!(
            only_new.open_secret("p", &sealed),
            Err(CryptoError::UnknownKey(1))
        );
    }

    #[test]
    fn blind_index_is_keyed_and_normalised() {
        let c = ClinicId::generate();
        let keys = keys(c);
        assert_eq!(
            keys.blind_index("patients", "ssn", "1-84 12"),
            keys.blind_index("patients", "ssn", "18412")
        );
        assert_ne!(
            keys.blind_index("patients", "ssn", "18412"),
            self::keys(ClinicId::generate()).blind_index("patients", "ssn", "18412")
        );
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        let src = Source::from_pairs([("MASTER_KEY", STANDARD.encode([1u8; 16]))]);
        assert!(KeyRing::from_source(&src).is_err());
    }
}
