//! Counting statements on the central server with `pg_stat_statements`: snapshots
//! of every statement's call count, their difference over a stretch of load, and
//! who issued each. `pg_stat_statements` does not record the client, so statements
//! are told apart by their text: the workers' background work on the central
//! database (audit shipping, the 30 s revalidation of open clinic pools, data-key
//! loads) is recognised by what it runs; everything else is counted against the
//! gateway, so a statement nobody recognises makes the gateway's count larger,
//! never smaller.

use anyhow::Context;
use std::collections::HashMap;
use tokio_postgres::Client;

/// Call counts by statement id, with each statement's text.
#[derive(Clone, Debug, Default)]
pub struct Statements {
    calls: HashMap<i64, (i64, String)>,
}

/// Who issued a statement, as far as its text tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The workers' audit shipper (transaction, lock, the chain's head, the probe
    /// for records already shipped, insert). The gateway's proxy path opens no
    /// transactions and never touches the audit chain (its own session records
    /// are written at login and logout, none of which happen during the placement
    /// figure), so every transaction statement and every statement on
    /// `audit_logs` or `audit_chain_heads` is the shipper's.
    AuditShipper,
    /// A worker re-checking or opening a clinic pool (placement, data keys).
    WorkerLookup,
    /// Anything else: counted as the gateway's.
    Gateway,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::AuditShipper => "worker audit shipper",
            Origin::WorkerLookup => "worker pool revalidation / data keys",
            Origin::Gateway => "gateway (everything not recognised as a worker's)",
        }
    }

    /// Classifies a normalised statement text.
    pub fn of(query: &str) -> Self {
        let q = query.trim_start().to_ascii_lowercase();
        let starts = |p: &str| q.starts_with(p);
        if starts("begin")
            || starts("start transaction")
            || starts("commit")
            || starts("rollback")
            || q.contains("pg_advisory_xact_lock")
            || q.contains("audit_logs")
            || q.contains("audit_chain_heads")
        {
            Origin::AuditShipper
        } else if starts("select region, db_name, db_role") || q.contains("from clinic_data_keys") {
            Origin::WorkerLookup
        } else {
            Origin::Gateway
        }
    }
}

impl Statements {
    /// Every statement the server has counted (the bench's own reads of the view
    /// left out).
    pub async fn snapshot(db: &Client) -> anyhow::Result<Self> {
        let rows = db
            .query(
                "SELECT queryid, sum(calls)::bigint, min(query) FROM pg_stat_statements \
                 WHERE queryid IS NOT NULL GROUP BY queryid",
                &[],
            )
            .await
            .context("reading pg_stat_statements")?;
        let mut calls = HashMap::new();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            let n: i64 = row.try_get(1)?;
            let text: String = row.try_get(2)?;
            if text.contains("pg_stat_statements") {
                continue;
            }
            calls.insert(id, (n, text));
        }
        Ok(Self { calls })
    }

    /// Calls made between `earlier` and `self`, by statement, most called first.
    pub fn since(&self, earlier: &Statements) -> Vec<(i64, String)> {
        let mut out: Vec<(i64, String)> = self
            .calls
            .iter()
            .map(|(id, (n, text))| {
                let before = earlier.calls.get(id).map_or(0, |(b, _)| *b);
                (n - before, text.clone())
            })
            .filter(|(n, _)| *n > 0)
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        out
    }
}

/// Calls by origin, in the order of [`Origin`].
pub fn by_origin(delta: &[(i64, String)]) -> Vec<(Origin, i64)> {
    let mut sums: Vec<(Origin, i64)> =
        [Origin::AuditShipper, Origin::WorkerLookup, Origin::Gateway]
            .into_iter()
            .map(|o| (o, 0))
            .collect();
    for (n, text) in delta {
        let origin = Origin::of(text);
        if let Some((_, sum)) = sums.iter_mut().find(|(o, _)| *o == origin) {
            *sum += n;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statements_count_against_the_gateway() {
        assert_eq!(Origin::of("BEGIN"), Origin::AuditShipper);
        assert_eq!(Origin::of("START TRANSACTION"), Origin::AuditShipper);
        assert_eq!(
            Origin::of("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))"),
            Origin::AuditShipper
        );
        assert_eq!(
            Origin::of("SELECT last_seq, last_hash FROM audit_chain_heads WHERE clinic_id = $1"),
            Origin::AuditShipper
        );
        assert_eq!(
            Origin::of("INSERT INTO audit_logs (clinic_id, chain_seq, prev_hash, hash) SELECT $1"),
            Origin::AuditShipper
        );
        assert_eq!(
            Origin::of("SELECT region, db_name, db_role, db_role_password, status FROM companies c WHERE id = $1"),
            Origin::WorkerLookup
        );
        assert_eq!(
            Origin::of("SELECT c.region, r.worker_url, c.status FROM companies c JOIN regions r ON r.name = c.region WHERE c.id = $1"),
            Origin::Gateway
        );
        assert_eq!(Origin::of("SELECT 1"), Origin::Gateway);
        let delta = vec![(3, "BEGIN".to_owned()), (2, "SELECT 1".to_owned())];
        let sums = by_origin(&delta);
        assert_eq!(sums.last(), Some(&(Origin::Gateway, 2)));
        assert_eq!(sums.first(), Some(&(Origin::AuditShipper, 3)));
    }
}
