//! Checking the audit trail's integrity: every clinic's rows must form an unbroken
//! hash chain (positions 1, 2, 3…; each row's `prev_hash` is the previous row's
//! `hash`; each `hash` recomputes from the row), ending at the clinic's recorded
//! chain head. Any edit, deletion or reordering shows as a break.

use crate::db;
use anyhow::Context;
use common::config::DbSettings;
use common::ClinicId;

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
    pub breaks: Vec<Break>,
}

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "checked {} rows of {} clinics: {}",
            self.rows,
            self.clinics,
            if self.is_intact() {
                "intact".to_owned()
            } else {
                format!("{} broken", self.breaks.len())
            }
        )
    }
}

/// Verifies every clinic's chain, or one clinic's.
pub async fn verify(central: &DbSettings, clinic: Option<ClinicId>) -> anyhow::Result<AuditReport> {
    let client = db::connect(central).await.context("the central database")?;
    let only = clinic.map(|c| *c.as_uuid());
    // Row checks, then head checks; the first failing position per clinic is kept.
    let rows = client
        .query(
            "WITH chain AS ( \
                 SELECT a.clinic_id, a.chain_seq, \
                        a.hash IS NOT DISTINCT FROM audit_row_digest(a.prev_hash, a) AS hash_ok, \
                        a.prev_hash IS NOT DISTINCT FROM lag(a.hash, 1, '\\x'::bytea) OVER w AS link_ok, \
                        a.chain_seq IS NOT DISTINCT FROM row_number() OVER w AS seq_ok \
                 FROM audit_logs a WHERE $1::uuid IS NULL OR a.clinic_id = $1 \
                 WINDOW w AS (PARTITION BY a.clinic_id ORDER BY a.chain_seq, a.id)) \
             SELECT clinic_id, count(*), \
                    min(chain_seq) FILTER (WHERE NOT (hash_ok AND link_ok AND seq_ok)), \
                    bool_and(hash_ok), bool_and(link_ok) \
             FROM chain GROUP BY clinic_id",
            &[&only],
        )
        .await
        .context("reading the audit chains")?;
    let mut report = AuditReport::default();
    for row in &rows {
        let clinic = ClinicId::from_uuid(row.try_get(0)?);
        let count: i64 = row.try_get(1)?;
        report.clinics += 1;
        report.rows += count as u64;
        if let Some(seq) = row.try_get::<_, Option<i64>>(2)? {
            let reason = match (row.try_get::<_, bool>(3)?, row.try_get::<_, bool>(4)?) {
                (false, _) => "a row no longer matches its hash (edited)",
                (_, false) => "a row does not follow its predecessor (removed or reordered)",
                _ => "a position in the chain is missing",
            };
            report.breaks.push(Break {
                clinic,
                chain_seq: seq,
                reason: reason.into(),
            });
        }
    }
    let heads = client
        .query(
            "SELECT h.clinic_id, h.last_seq, h.last_hash, \
                    (SELECT count(*) FROM audit_logs a WHERE a.clinic_id = h.clinic_id), \
                    (SELECT a.hash FROM audit_logs a WHERE a.clinic_id = h.clinic_id ORDER BY a.chain_seq DESC LIMIT 1) \
             FROM audit_chain_heads h WHERE $1::uuid IS NULL OR h.clinic_id = $1",
            &[&only],
        )
        .await
        .context("reading the chain heads")?;
    for row in &heads {
        let clinic = ClinicId::from_uuid(row.try_get(0)?);
        let last_seq: i64 = row.try_get(1)?;
        let last_hash: Vec<u8> = row.try_get(2)?;
        let count: i64 = row.try_get(3)?;
        let tail: Option<Vec<u8>> = row.try_get(4)?;
        let whole = count == last_seq && tail.as_deref().unwrap_or(b"") == last_hash.as_slice();
        if !whole && !report.breaks.iter().any(|b| b.clinic == clinic) {
            report.breaks.push(Break {
                clinic,
                chain_seq: 0,
                reason: "the chain no longer ends at its recorded head (rows removed from the end)"
                    .into(),
            });
        }
    }
    Ok(report)
}
