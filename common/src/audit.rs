//! The audit record and its keyed chain. Every clinic's central audit trail is a
//! chain: each row carries its position, the previous row's hash, and its own hash
//! = HMAC-SHA-256 under the audit key (`AUDIT_KEY`, named by `AUDIT_KEY_ID`) of
//! the previous hash and a canonical encoding of the row. The key is held by the
//! services and the admin tool, never by the database, so whoever owns the
//! database can neither edit, reorder nor forge rows without `verify-audit`
//! noticing; anchors kept outside the database (`verify-audit --anchors`) also
//! catch a chain cut short or dropped.

use crate::config::{ConfigError, Source};
use crate::ids::ClinicId;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use uuid::Uuid;
use zeroize::Zeroizing;

/// One audit record as the central trail holds it (before its chain fields).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub user_id: Option<Uuid>,
    pub action: String,
    pub resource: String,
    pub resource_id: Option<Uuid>,
    /// The rows a list, search or export showed.
    pub resource_ids: Option<Vec<Uuid>>,
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<String>,
    pub outcome: String,
    /// Microsecond precision (what PostgreSQL keeps).
    pub occurred_at: DateTime<Utc>,
    /// The record's id in a clinic database's outbox (shipped records only), so a
    /// record shipped twice is recorded once.
    pub source_id: Option<Uuid>,
}

impl Record {
    /// A record of something that happens now, outside a clinic database.
    pub fn now(action: &str, resource: &str, outcome: &str) -> Self {
        Self {
            user_id: None,
            action: action.to_owned(),
            resource: resource.to_owned(),
            resource_id: None,
            resource_ids: None,
            client_ip: None,
            request_id: None,
            outcome: outcome.to_owned(),
            occurred_at: truncate_micros(Utc::now()),
            source_id: None,
        }
    }
}

/// The instant as PostgreSQL stores it.
pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The keys of the chain: the current one that new rows are hashed with, and
/// retired ones still needed to verify older rows.
#[derive(Clone)]
pub struct AuditKeys {
    current: String,
    keys: HashMap<String, Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeys")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

fn decode(name: &'static str, b64: &str) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(b64.trim())
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: "must be base64 (e.g. `openssl rand -base64 32`)".into(),
            })?,
    );
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ConfigError::Invalid {
            name,
            reason: "must decode to exactly 32 bytes".into(),
        })?;
    Ok(Zeroizing::new(key))
}

impl AuditKeys {
    pub fn new(id: &str, key: [u8; 32]) -> Self {
        Self {
            current: id.to_owned(),
            keys: [(id.to_owned(), Zeroizing::new(key))].into(),
        }
    }

    /// `AUDIT_KEY` (base64 of 32 bytes), `AUDIT_KEY_ID` (default `a1`) and retired
    /// keys `AUDIT_KEYS_RETIRED` (`id:base64,…`) that still verify older rows.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let id = source.or("AUDIT_KEY_ID", "a1");
        if id.is_empty() || id.len() > 32 || id.contains([':', ',']) {
            return Err(ConfigError::Invalid {
                name: "AUDIT_KEY_ID",
                reason: "1 to 32 characters, without `:` or `,`".into(),
            });
        }
        let mut keys = Self {
            keys: [(
                id.clone(),
                decode("AUDIT_KEY", &source.required("AUDIT_KEY")?)?,
            )]
            .into(),
            current: id,
        };
        for item in source
            .or("AUDIT_KEYS_RETIRED", "")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (id, b64) = item.split_once(':').ok_or(ConfigError::Invalid {
                name: "AUDIT_KEYS_RETIRED",
                reason: "expected id:base64 pairs separated by commas".into(),
            })?;
            let key = decode("AUDIT_KEYS_RETIRED", b64)?;
            keys.keys.entry(id.trim().to_owned()).or_insert(key);
        }
        Ok(keys)
    }

    /// The id new rows name in `mac_key`.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// A row's hash under the current key.
    pub fn seal(&self, prev: &[u8], clinic: ClinicId, chain_seq: i64, r: &Record) -> Vec<u8> {
        self.mac(&self.current, prev, clinic, chain_seq, r)
            .unwrap_or_default()
    }

    /// A row's hash under key `id` (`None`: no such key).
    pub fn mac(
        &self,
        id: &str,
        prev: &[u8],
        clinic: ClinicId,
        chain_seq: i64,
        r: &Record,
    ) -> Option<Vec<u8>> {
        let key = self.keys.get(id)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()).ok()?;
        mac.update(&canonical(prev, clinic, chain_seq, r));
        Some(mac.finalize().into_bytes().to_vec())
    }
}

/// Every field at a fixed position, each length-prefixed (absent: `u32::MAX`), so
/// no two rows share an encoding.
fn canonical(prev: &[u8], clinic: ClinicId, chain_seq: i64, r: &Record) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
        match field {
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    let mut out = Vec::with_capacity(256);
    put(&mut out, Some(b"medicalpro-audit-v1"));
    put(&mut out, Some(prev));
    put(&mut out, Some(clinic.as_uuid().as_bytes()));
    put(&mut out, Some(&chain_seq.to_be_bytes()));
    put(
        &mut out,
        r.user_id.as_ref().map(|u| u.as_bytes().as_slice()),
    );
    put(&mut out, Some(r.action.as_bytes()));
    put(&mut out, Some(r.resource.as_bytes()));
    put(
        &mut out,
        r.resource_id.as_ref().map(|u| u.as_bytes().as_slice()),
    );
    let ids: Option<Vec<u8>> = r
        .resource_ids
        .as_ref()
        .map(|ids| ids.iter().flat_map(|u| *u.as_bytes()).collect());
    put(&mut out, ids.as_deref());
    let ip = r.client_ip.map(|ip| ip.to_string());
    put(&mut out, ip.as_deref().map(str::as_bytes));
    put(&mut out, r.request_id.as_deref().map(str::as_bytes));
    put(&mut out, Some(r.outcome.as_bytes()));
    put(
        &mut out,
        Some(&r.occurred_at.timestamp_micros().to_be_bytes()),
    );
    put(
        &mut out,
        r.source_id.as_ref().map(|u| u.as_bytes().as_slice()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut r = Record::now("read", "patients", "success");
        r.user_id = Some(Uuid::new_v4());
        r.resource_id = Some(Uuid::new_v4());
        r.client_ip = Some("203.0.113.7".parse().unwrap());
        r.request_id = Some("req-1".into());
        r
    }

    #[test]
    fn any_change_changes_the_hash() {
        let keys = AuditKeys::new("a1", [3u8; 32]);
        let clinic = ClinicId::generate();
        let r = record();
        let h = keys.seal(b"", clinic, 1, &r);
        assert_eq!(h.len(), 32);
        assert_eq!(h, keys.seal(b"", clinic, 1, &r), "deterministic");
        assert_ne!(h, keys.seal(b"x", clinic, 1, &r), "previous hash");
        assert_ne!(h, keys.seal(b"", clinic, 2, &r), "position");
        assert_ne!(h, keys.seal(b"", ClinicId::generate(), 1, &r), "clinic");
        let mut edited = r.clone();
        edited.outcome = "failure".into();
        assert_ne!(h, keys.seal(b"", clinic, 1, &edited));
        let mut listed = r.clone();
        listed.resource_ids = Some(vec![Uuid::new_v4()]);
        assert_ne!(h, keys.seal(b"", clinic, 1, &listed));
        // Field boundaries cannot be shifted: "ab"+"c" differs from "a"+"bc".
        let (mut a, mut b) = (r.clone(), r.clone());
        a.action = "ab".into();
        a.resource = "c".into();
        b.action = "a".into();
        b.resource = "bc".into();
        assert_ne!(keys.seal(b"", clinic, 1, &a), keys.seal(b"", clinic, 1, &b));
        // Without the key, nobody computes it.
        let other = AuditKeys::new("a1", [4u8; 32]);
        assert_ne!(h, other.seal(b"", clinic, 1, &r));
        assert!(keys.mac("zz", b"", clinic, 1, &r).is_none());
    }

    #[test]
    fn keys_from_settings() {
        let k = STANDARD.encode([9u8; 32]);
        let src = Source::from_pairs([
            ("AUDIT_KEY", k.clone()),
            ("AUDIT_KEY_ID", "a2".into()),
            ("AUDIT_KEYS_RETIRED", format!("a1:{k}")),
        ]);
        let keys = AuditKeys::from_source(&src).unwrap();
        assert_eq!(keys.current_id(), "a2");
        let clinic = ClinicId::generate();
        assert!(keys.mac("a1", b"", clinic, 1, &record()).is_some());
        assert!(AuditKeys::from_source(&Source::from_pairs([("AUDIT_KEY", "short")])).is_err());
        assert!(AuditKeys::from_source(&Source::from_pairs([("X", "y")])).is_err());
    }
}
