//! Checking the audit trail's integrity: every clinic's rows must form an unbroken
//! chain (positions 1, 2, 3…; each row's `prev_hash` is the previous row's `hash`;
//! each `hash` recomputes from the row), ending at the clinic's recorded chain head.
//! Rows are hashed with the audit key (HMAC-SHA-256, [`common::audit`]), which the
//! database never holds, so whoever owns the database cannot edit, remove, reorder
//! or forge rows without it showing here; rows from before the chain was keyed are
//! checked against their unkeyed digests.
//!
//! A chain cut short at its end, or a clinic's chain dropped whole, would still be
//! consistent: the anchors file (`--anchors FILE`, kept outside the database's
//! reach) records each clinic's last verified position and hash, every later run
//! checks that the chain still holds them, and a run that found everything intact
//! moves them forward.

use crate::db;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use common::audit::{AuditKeys, Record};
use common::config::DbSettings;
use common::ClinicId;
use futures_util::TryStreamExt;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use uuid::Uuid;

/// The first problem found in one clinic's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub clinic: ClinicId,
    /// The chain position where the chain stops being valid (0: the head record).
    pub chain_seq: i64,
    pub reason: String,
}

/// What a verification found.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub clinics: u64,
    pub rows: u64,
    /// Rows from before the chain was keyed (checked against unkeyed digests).
    pub unkeyed_rows: u64,
    pub breaks: Vec<Break>,
    /// Each clinic's last position and hash, as verified.
    pub heads: BTreeMap<ClinicId, Anchor>,
}

/// A clinic's chain position and the hash there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub chain_seq: i64,
    pub hash: String,
}

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "checked {} rows of {} clinics ({} from before the chain was keyed): {}",
            self.rows,
            self.clinics,
            self.unkeyed_rows,
            if self.is_intact() {
                "intact".to_owned()
            } else {
                format!("{} broken", self.breaks.len())
            }
        )
    }

    fn broken(&mut self, clinic: ClinicId, chain_seq: i64, reason: impl Into<String>) {
        if !self.breaks.iter().any(|b| b.clinic == clinic) {
            self.breaks.push(Break {
                clinic,
                chain_seq,
                reason: reason.into(),
            });
        }
    }
}

/// Where one clinic's walk stands.
struct Walk {
    clinic: ClinicId,
    expected: i64,
    prev: Vec<u8>,
    broken: bool,
}

/// Verifies every clinic's chain, or one clinic's; with `anchors`, also that each
/// anchored clinic's chain still holds its anchor, and (when all is intact) moves
/// the anchors to the heads verified now.
pub async fn verify(
    central: &DbSettings,
    keys: Option<&AuditKeys>,
    clinic: Option<ClinicId>,
    anchors: Option<&Path>,
) -> anyhow::Result<AuditReport> {
    let client = db::connect(central).await.context("the central database")?;
    let only = clinic.map(|c| *c.as_uuid());
    let anchored: BTreeMap<ClinicId, Anchor> = match anchors {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the anchors in {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not an anchors file", path.display()))?
        }
        _ => BTreeMap::new(),
    };
    let mut report = AuditReport::default();
    let rows = client
        .query_raw(
            "SELECT a.clinic_id, a.chain_seq, a.prev_hash, a.hash, a.mac_key, a.user_id, a.action, \
                    a.resource, a.resource_id, a.resource_ids, a.client_ip, a.request_id, a.outcome, \
                    a.occurred_at, a.source_id, \
                    CASE WHEN a.mac_key IS NULL THEN audit_row_digest(a.prev_hash, a) END \
             FROM audit_logs a WHERE $1::uuid IS NULL OR a.clinic_id = $1 \
             ORDER BY a.clinic_id, a.chain_seq, a.id",
            [&only as &(dyn tokio_postgres::types::ToSql + Sync)],
        )
        .await
        .context("reading the audit chains")?;
    futures_util::pin_mut!(rows);
    let mut walk: Option<Walk> = None;
    while let Some(row) = rows.try_next().await.context("reading the audit chains")? {
        let clinic = ClinicId::from_uuid(row.try_get(0)?);
        if walk.as_ref().is_none_or(|w| w.clinic != clinic) {
            if let Some(done) = walk.take() {
                finish(&mut report, done);
            }
            report.clinics += 1;
            walk = Some(Walk {
                clinic,
                expected: 1,
                prev: Vec::new(),
                broken: false,
            });
        }
        let Some(w) = walk.as_mut() else { continue };
        report.rows += 1;
        let seq: i64 = row.try_get::<_, Option<i64>>(1)?.unwrap_or(0);
        let prev: Vec<u8> = row.try_get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default();
        let hash: Vec<u8> = row.try_get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default();
        let key_id: Option<String> = row.try_get(4)?;
        if w.broken {
            continue;
        }
        let problem = if seq != w.expected {
            Some("a position in the chain is missing (rows removed or reordered)".to_owned())
        } else if prev != w.prev {
            Some("a row does not follow its predecessor (removed or reordered)".to_owned())
        } else {
            match &key_id {
                None => {
                    report.unkeyed_rows += 1;
                    let digest: Option<Vec<u8>> = row.try_get(15)?;
                    (digest.as_deref() != Some(hash.as_slice()))
                        .then(|| "a row no longer matches its hash (edited)".to_owned())
                }
                Some(id) => {
                    let Some(keys) = keys else {
                        bail!("the trail holds keyed rows: set AUDIT_KEY (and AUDIT_KEYS_RETIRED for older keys) to verify them");
                    };
                    let record = Record {
                        user_id: row.try_get(5)?,
                        action: row.try_get(6)?,
                        resource: row.try_get(7)?,
                        resource_id: row.try_get(8)?,
                        resource_ids: row.try_get::<_, Option<Vec<Uuid>>>(9)?,
                        client_ip: row.try_get::<_, Option<IpAddr>>(10)?,
                        request_id: row.try_get(11)?,
                        outcome: row.try_get(12)?,
                        occurred_at: row.try_get::<_, DateTime<Utc>>(13)?,
                        source_id: row.try_get(14)?,
                    };
                    match keys.mac(id, &prev, clinic, seq, &record) {
                        None => Some(format!(
                            "a row is hashed with audit key `{id}`, which is not configured (AUDIT_KEYS_RETIRED)"
                        )),
                        Some(mac) if mac != hash => Some(
                            "a row no longer matches its keyed hash (edited or forged)".to_owned(),
                        ),
                        Some(_) => None,
                    }
                }
            }
        };
        if let Some(reason) = problem {
            report.broken(clinic, seq, reason);
            w.broken = true;
            continue;
        }
        if let Some(anchor) = anchored.get(&clinic) {
            if anchor.chain_seq == seq && anchor.hash != hex::encode(&hash) {
                report.broken(
                    clinic,
                    seq,
                    "the chain no longer holds its anchored row (rewritten since the last verification)",
                );
                w.broken = true;
                continue;
            }
        }
        w.expected = seq + 1;
        w.prev = hash;
    }
    if let Some(done) = walk.take() {
        finish(&mut report, done);
    }

    let heads = client
        .query(
            "SELECT h.clinic_id, h.last_seq, h.last_hash \
             FROM audit_chain_heads h WHERE $1::uuid IS NULL OR h.clinic_id = $1",
            &[&only],
        )
        .await
        .context("reading the chain heads")?;
    for row in &heads {
        let clinic = ClinicId::from_uuid(row.try_get(0)?);
        let last_seq: i64 = row.try_get(1)?;
        let last_hash: Vec<u8> = row.try_get(2)?;
        let walked = report.heads.get(&clinic);
        let whole = walked
            .is_some_and(|a| a.chain_seq == last_seq && a.hash == hex::encode(&last_hash))
            || (walked.is_none() && last_seq == 0);
        if !whole {
            report.broken(
                clinic,
                0,
                "the chain no longer ends at its recorded head (rows removed from the end)",
            );
        }
    }
    for (clinic, anchor) in &anchored {
        if only.is_some_and(|o| o != *clinic.as_uuid()) {
            continue;
        }
        let reached = report.heads.get(clinic).map_or(0, |a| a.chain_seq);
        if reached < anchor.chain_seq {
            report.broken(
                *clinic,
                anchor.chain_seq,
                format!(
                    "the chain was cut short or dropped: it ends at {reached}, but position {} was verified before",
                    anchor.chain_seq
                ),
            );
        }
    }
    if let Some(path) = anchors {
        if report.is_intact() {
            let mut next = anchored;
            next.extend(report.heads.iter().map(|(c, a)| (*c, a.clone())));
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&next)?)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(report)
}

/// Records where a clinic's walk ended (unless it broke).
fn finish(report: &mut AuditReport, walk: Walk) {
    if !walk.broken && walk.expected > 1 {
        report.heads.insert(
            walk.clinic,
            Anchor {
                chain_seq: walk.expected - 1,
                hash: hex::encode(&walk.prev),
            },
        );
    }
}
