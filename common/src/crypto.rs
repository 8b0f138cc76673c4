//! Field encryption and blind indexes.
//!
//! Values are sealed with AES-256-GCM under a random 96-bit nonce. A stored value is
//! `version (1) ‖ key id (4, BE) ‖ nonce (12) ‖ ciphertext+tag`; the associated data
//! binds it to its clinic, table, row and column, so a ciphertext copied elsewhere
//! fails to open. Keys are derived with HKDF-SHA256 from the master key
//! (`MASTER_KEY`, 32 bytes base64); the key id makes rotation possible.

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
use std::collections::HashMap;

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

struct KeySet {
    field: Aes256Gcm,
    secrets: Aes256Gcm,
    blind: [u8; 32],
}

impl KeySet {
    fn derive(master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"medicalpro"), master);
        let mut field = [0u8; 32];
        let mut secrets = [0u8; 32];
        let mut blind = [0u8; 32];
        // HKDF-SHA256 can expand up to 8160 bytes; 32 always succeeds.
        let _ = hk.expand(b"field-encryption", &mut field);
        let _ = hk.expand(b"secret-box", &mut secrets);
        let _ = hk.expand(b"blind-index", &mut blind);
        Self {
            field: Aes256Gcm::new(&field.into()),
            secrets: Aes256Gcm::new(&secrets.into()),
            blind,
        }
    }
}

/// The keys of one process: one current key id to seal with, every known id to open.
pub struct KeyRing {
    current: u32,
    keys: HashMap<u32, KeySet>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
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
                ring.keys.entry(id).or_insert_with(|| KeySet::derive(&key));
            }
        }
        Ok(ring)
    }

    pub fn new(current: u32, master: &[u8; 32]) -> Self {
        let mut keys = HashMap::new();
        keys.insert(current, KeySet::derive(master));
        Self { current, keys }
    }

    /// A fresh random master key, base64-encoded (for dev stacks and tests).
    pub fn generate_master_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    fn current_set(&self) -> &KeySet {
        // `new` always inserts the current id.
        &self.keys[&self.current]
    }

    /// Seals a field value bound to its place.
    pub fn seal_field(&self, ctx: &FieldContext<'_>, plaintext: &[u8]) -> Vec<u8> {
        seal(
            &self.current_set().field,
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
        let (id, _) = split(stored)?;
        let set = self.keys.get(&id).ok_or(CryptoError::UnknownKey(id))?;
        open(&set.field, &ctx.associated_data(), stored)
    }

    /// Seals an operational secret (a clinic's database password) under a purpose label.
    pub fn seal_secret(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        seal(
            &self.current_set().secrets,
            self.current,
            purpose.as_bytes(),
            plaintext,
        )
    }

    pub fn open_secret(&self, purpose: &str, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (id, _) = split(stored)?;
        let set = self.keys.get(&id).ok_or(CryptoError::UnknownKey(id))?;
        open(&set.secrets, purpose.as_bytes(), stored)
    }

    /// Keyed hash for exact-match lookups on an encrypted column (current key).
    pub fn blind_index(&self, clinic: ClinicId, table: &str, column: &str, value: &str) -> Vec<u8> {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.current_set().blind) else {
            unreachable!("HMAC-SHA256 takes keys of any length")
        };
        mac.update(format!("{clinic}:{table}:{column}:").as_bytes());
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

fn decode_key(name: &'static str, b64: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = STANDARD.decode(b64).map_err(|_| ConfigError::Invalid {
        name,
        reason: "must be base64 (e.g. `openssl rand -base64 32`)".into(),
    })?;
    bytes.try_into().map_err(|_| ConfigError::Invalid {
        name,
        reason: "must decode to exactly 32 bytes".into(),
    })
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

    fn ring() -> KeyRing {
        KeyRing::new(1, &[3u8; 32])
    }

    #[test]
    fn seals_and_opens_in_place_only() {
        let ring = ring();
        let clinic = ClinicId::generate();
        let row = uuid::Uuid::now_v7();
        let other_row = uuid::Uuid::now_v7();
        let ctx = FieldContext {
            clinic,
            table: "patients",
            row: &row,
            column: "ssn",
        };
        let sealed = ring.seal_field(&ctx, b"1 84 12 75 123 456 78");
        assert!(!sealed.windows(5).any(|w| w == b"1 84 "));
        assert_eq!(
            ring.open_field(&ctx, &sealed).unwrap(),
            b"1 84 12 75 123 456 78"
        );
        let moved = FieldContext {
            row: &other_row,
            ..ctx
        };
        assert_eq!(
            ring.open_field(&moved, &sealed),
            Err(CryptoError::Integrity)
        );
        let other_clinic = FieldContext {
            clinic: ClinicId::generate(),
            ..ctx
        };
        assert_eq!(
            ring.open_field(&other_clinic, &sealed),
            Err(CryptoError::Integrity)
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(ring.open_field(&ctx, &flipped), Err(CryptoError::Integrity));
    }

    #[test]
    fn nonces_are_fresh() {
        let ring = ring();
        let row = uuid::Uuid::now_v7();
        let ctx = FieldContext {
            clinic: ClinicId::generate(),
            table: "t",
            row: &row,
            column: "c",
        };
        assert_ne!(ring.seal_field(&ctx, b"x"), ring.seal_field(&ctx, b"x"));
    }

    #[test]
    fn retired_keys_still_open() {
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
    }

    #[test]
    fn blind_index_is_keyed_and_normalised() {
        let ring = ring();
        let c = ClinicId::generate();
        assert_eq!(
            ring.blind_index(c, "patients", "ssn", "1-84 12"),
            ring.blind_index(c, "patients", "ssn", "18412")
        );
        assert_ne!(
            ring.blind_index(c, "patients", "ssn", "18412"),
            ring.blind_index(ClinicId::generate(), "patients", "ssn", "18412")
        );
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        let src = Source::from_pairs([("MASTER_KEY", STANDARD.encode([1u8; 16]))]);
        assert!(KeyRing::from_source(&src).is_err());
    }
}
