//! What the worker reports about itself beyond its request metrics: the pool gauges
//! of the busiest clinics (at most [`m::TOP_CLINICS`] `clinic` label values per
//! server), slow clinic data statements (a structured warning and a counter, never a
//! parameter), and the age of the region's clinic backups, refreshed from the
//! central database by a background task.
//!
//! The metrics recorder is process-wide, so the state kept here (which clinics were
//! published last) is process-wide too, keyed by the `server` label.

use crate::error::WorkerError;
use common::metric_names as m;
use common::ClinicId;
use deadpool_postgres::Pool;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default `SLOW_QUERY_MS`.
pub const DEFAULT_SLOW_QUERY: Duration = Duration::from_millis(200);
/// Default `BACKUP_MAX_AGE_SECS`: a daily backup plus two hours of slack.
pub const DEFAULT_BACKUP_MAX_AGE: Duration = Duration::from_secs(26 * 3600);
/// Default `BACKUP_CHECK_SECS`: how often the backup gauges are refreshed.
pub const DEFAULT_BACKUP_CHECK: Duration = Duration::from_secs(60);

/// One clinic pool as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSample {
    pub clinic: ClinicId,
    pub in_use: usize,
    pub idle: usize,
    pub waiting: usize,
}

/// The clinics whose gauges were last published, per `server` label.
fn published() -> &'static Mutex<HashMap<String, HashSet<ClinicId>>> {
    static PUBLISHED: OnceLock<Mutex<HashMap<String, HashSet<ClinicId>>>> = OnceLock::new();
    PUBLISHED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The busiest pools, at most `n`: most connections in use first, then most
/// waiters, then most idle connections; pools holding nothing are left out.
pub fn top(mut samples: Vec<PoolSample>, n: usize) -> Vec<PoolSample> {
    samples.retain(|s| s.in_use + s.idle + s.waiting > 0);
    samples.sort_unstable_by(|a, b| {
        (b.in_use, b.waiting, b.idle)
            .cmp(&(a.in_use, a.waiting, a.idle))
            .then_with(|| a.clinic.as_uuid().cmp(b.clinic.as_uuid()))
    });
    samples.truncate(n);
    samples
}

fn set_clinic(server: &str, s: &PoolSample) {
    let clinic = s.clinic.to_string();
    metrics::gauge!(m::CLINIC_POOL_CONNECTIONS, "server" => server.to_owned(), "clinic" => clinic.clone(), "state" => "in_use")
        .set(s.in_use as f64);
    metrics::gauge!(m::CLINIC_POOL_CONNECTIONS, "server" => server.to_owned(), "clinic" => clinic.clone(), "state" => "idle")
        .set(s.idle as f64);
    metrics::gauge!(m::CLINIC_POOL_WAITING, "server" => server.to_owned(), "clinic" => clinic)
        .set(s.waiting as f64);
}

/// Publishes the pool gauges of the busiest clinics of `server`. A clinic that left
/// the top since the last call is set to zero once and then no longer reported, so
/// the recorder's gauge idle timeout removes its series
/// ([`common::service::GAUGE_IDLE_TIMEOUT`]).
pub fn publish_top_clinics(server: &str, samples: Vec<PoolSample>) {
    let busiest = top(samples, m::TOP_CLINICS);
    let now: HashSet<ClinicId> = busiest.iter().map(|s| s.clinic).collect();
    let Ok(mut published) = published().lock() else {
        return;
    };
    let before = published.insert(server.to_owned(), now.clone());
    for gone in before.unwrap_or_default().difference(&now) {
        set_clinic(
            server,
            &PoolSample {
                clinic: *gone,
                in_use: 0,
                idle: 0,
                waiting: 0,
            },
        );
    }
    for s in &busiest {
        set_clinic(server, s);
    }
}

/// Reports the alerted-on counters at zero from the start, so the first failure is
/// an increase Prometheus sees rather than a series that appears at 1.
pub fn register_counters() {
    for outcome in ["success", "failure"] {
        metrics::counter!(m::PROVISIONING, "outcome" => outcome).increment(0);
    }
    for outcome in ["delivered", "failed"] {
        metrics::counter!(m::WEBHOOK_DELIVERIES, "outcome" => outcome).increment(0);
    }
    metrics::counter!(m::WEBHOOK_DISABLED).increment(0);
}

/// `SLOW_QUERY_MS`, in milliseconds.
static SLOW_QUERY_MS: AtomicU64 = AtomicU64::new(DEFAULT_SLOW_QUERY.as_millis() as u64);

/// Sets the duration from which a clinic data statement counts as slow (0: every one).
pub fn set_slow_query_threshold(threshold: Duration) {
    SLOW_QUERY_MS.store(
        u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// What a finished clinic data statement was, for the slow-query report: never its
/// text's values or its parameters.
#[derive(Clone, Copy, Debug)]
pub struct Statement<'a> {
    pub resource: &'static str,
    pub action: &'static str,
    pub clinic: ClinicId,
    pub request_id: &'a str,
}

/// Reports a statement that took `elapsed` if that is at least the threshold: a
/// warning with resource, action, duration, clinic and request id, and one more
/// `medicalpro_slow_queries_total{resource}`.
pub fn statement_finished(statement: &Statement<'_>, elapsed: Duration) {
    let threshold = Duration::from_millis(SLOW_QUERY_MS.load(Ordering::Relaxed));
    if elapsed < threshold {
        return;
    }
    tracing::warn!(
        resource = statement.resource,
        action = statement.action,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        clinic = %statement.clinic,
        request_id = statement.request_id,
        "slow query"
    );
    metrics::counter!(m::SLOW_QUERIES, "resource" => statement.resource).increment(1);
}

/// The backup state of a region's active clinics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackupAges {
    /// Seconds since the oldest latest successful backup (or creation, for a clinic
    /// never backed up); 0 when the region has no active clinic.
    pub oldest_secs: f64,
    /// Clinics whose latest successful backup is older than the allowed age.
    pub overdue: i64,
}

/// Reads the backup ages of `region`'s active clinics from the central database:
/// one index probe per clinic (`clinic_backups_latest`).
pub async fn backup_ages(
    central: &Pool,
    region: &str,
    max_age: Duration,
) -> Result<BackupAges, WorkerError> {
    let client = central.get().await?;
    let row = client
        .query_one(
            "SELECT coalesce(max(age), 0)::float8, count(*) FILTER (WHERE age > $2) \
             FROM (SELECT extract(epoch FROM now() - coalesce( \
                       (SELECT max(b.finished_at) FROM clinic_backups b \
                         WHERE b.clinic_id = c.id AND b.status = 'success'), \
                       c.created_at))::float8 AS age \
                   FROM companies c WHERE c.region = $1 AND c.status = 'active') ages",
            &[&region, &max_age.as_secs_f64()],
        )
        .await
        .map_err(WorkerError::from_db)?;
    Ok(BackupAges {
        oldest_secs: row
            .try_get(0)
            .map_err(|e| WorkerError::Internal(e.to_string()))?,
        overdue: row
            .try_get(1)
            .map_err(|e| WorkerError::Internal(e.to_string()))?,
    })
}

/// Refreshes `medicalpro_backup_oldest_success_age_seconds{region}` and
/// `medicalpro_clinics_backup_overdue{region}` every `every` until cancelled. While
/// the central database does not answer, the gauges keep their last value until the
/// gauge idle timeout removes them (which `absent()` alerts on).
pub async fn run_backup_gauges(
    central: Pool,
    region: String,
    max_age: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match backup_ages(&central, &region, max_age).await {
            Ok(ages) => {
                failing = false;
                metrics::gauge!(m::BACKUP_OLDEST_AGE, "region" => region.clone())
                    .set(ages.oldest_secs);
                metrics::gauge!(m::BACKUPS_OVERDUE, "region" => region.clone())
                    .set(ages.overdue as f64);
            }
            Err(e) => {
                // Once per outage, not once a tick.
                if !failing {
                    tracing::warn!(error = %e, "could not read the region's backup ages");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u128, in_use: usize, idle: usize, waiting: usize) -> PoolSample {
        PoolSample {
            clinic: ClinicId::from_uuid(uuid::Uuid::from_u128(n)),
            in_use,
            idle,
            waiting,
        }
    }

    #[test]
    fn top_ranks_by_use_then_waiters_then_idle_and_drops_empty_pools() {
        let samples = vec![
            sample(1, 0, 0, 0),
            sample(2, 1, 5, 0),
            sample(3, 3, 0, 0),
            sample(4, 1, 0, 2),
            sample(5, 1, 6, 0),
        ];
        let ranked: Vec<u128> = top(samples.clone(), 10)
            .iter()
            .map(|s| s.clinic.as_uuid().as_u128())
            .collect();
        assert_eq!(ranked, vec![3, 4, 5, 2]);
        assert_eq!(top(samples, 2).len(), 2);
    }

    #[test]
    fn at_most_top_clinics_are_kept() {
        let samples = (0..100).map(|i| sample(i, 1, 1, 0)).collect();
        assert_eq!(top(samples, m::TOP_CLINICS).len(), m::TOP_CLINICS);
    }
}
