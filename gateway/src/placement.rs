//! The placement cache: clinic → (region, worker, status), an LRU with a TTL over the
//! central database. Concurrent misses for one clinic make one query; unknown clinics
//! are cached briefly; entries are dropped fleet-wide through LISTEN/NOTIFY
//! ([`crate::events`]); and the last known entry keeps serving while the central
//! database is unreachable.

use crate::error::GatewayError;
use common::metric_names as m;
use common::ClinicId;
use deadpool_postgres::Pool;
use lru::LruCache;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long "no such clinic" is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// While the central database is unreachable, how long a last known entry is served
/// before it is asked again.
const STALE_RETRY: Duration = Duration::from_secs(1);
pub const CHANNEL: &str = "medicalpro_placement";

/// Where a clinic is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub region: String,
    /// Base URL of the region's worker, e.g. `http://10.0.0.5:8081`.
    pub worker_url: String,
    pub active: bool,
    /// Being moved to another region: reads are served, writes refused.
    pub read_only: bool,
    pub version: i64,
}

#[derive(Clone)]
enum Cached {
    Found(Arc<Placement>),
    Unknown,
}

struct Entry {
    value: Cached,
    fetched: Instant,
}

type Fetch = Arc<OnceCell<Result<Option<Arc<Placement>>, String>>>;

pub struct PlacementCache {
    central: Pool,
    ttl: Duration,
    entries: Mutex<LruCache<ClinicId, Entry>>,
    inflight: Mutex<HashMap<ClinicId, Fetch>>,
}

impl PlacementCache {
    pub fn new(central: Pool, capacity: usize, ttl: Duration) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            central,
            ttl,
            entries: Mutex::new(LruCache::new(capacity)),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, clinic: ClinicId) -> Option<(Cached, Duration)> {
        let mut map = self.entries.lock().ok()?;
        map.get(&clinic)
            .map(|e| (e.value.clone(), e.fetched.elapsed()))
    }

    fn store(&self, clinic: ClinicId, value: Cached) {
        self.store_aged(clinic, value, self.ttl);
    }

    /// Stores an entry that expires after `fresh_for` (at most the TTL).
    fn store_aged(&self, clinic: ClinicId, value: Cached, fresh_for: Duration) {
        let now = Instant::now();
        let fetched = now
            .checked_sub(self.ttl.saturating_sub(fresh_for))
            .unwrap_or(now);
        if let Ok(mut map) = self.entries.lock() {
            map.put(clinic, Entry { value, fetched });
            metrics::gauge!(m::PLACEMENT_CACHE_SIZE).set(map.len() as f64);
        }
    }

    /// Drops one clinic's entry (on change notifications and after registration).
    pub fn invalidate(&self, clinic: ClinicId) {
        if let Ok(mut map) = self.entries.lock() {
            map.pop(&clinic);
        }
    }

    /// Drops every entry (after the notification channel was lost).
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The placement of an active clinic; `ClinicUnavailable` otherwise.
    pub async fn active(&self, clinic: ClinicId) -> Result<Arc<Placement>, GatewayError> {
        let placement = self
            .get(clinic)
            .await?
            .ok_or(GatewayError::ClinicUnavailable)?;
        if placement.active {
            Ok(placement)
        } else {
            Err(GatewayError::ClinicUnavailable)
        }
    }

    /// The placement of a clinic, `None` when it does not exist.
    pub async fn get(&self, clinic: ClinicId) -> Result<Option<Arc<Placement>>, GatewayError> {
        let stale = match self.cached(clinic) {
            Some((Cached::Found(p), age)) if age < self.ttl => {
                metrics::counter!(m::PLACEMENT_CACHE, "result" => "hit").increment(1);
                return Ok(Some(p));
            }
            Some((Cached::Unknown, age)) if age < NEGATIVE_TTL => {
                metrics::counter!(m::PLACEMENT_CACHE, "result" => "negative_hit").increment(1);
                return Ok(None);
            }
            Some((Cached::Found(p), _)) => Some(p),
            _ => None,
        };
        metrics::counter!(m::PLACEMENT_CACHE, "result" => "miss").increment(1);
        match self.fetch_once(clinic).await {
            Ok(found) => Ok(found),
            Err(e) => match stale {
                Some(p) => {
                    metrics::counter!(m::PLACEMENT_CACHE, "result" => "stale").increment(1);
                    tracing::warn!(%clinic, error = %e, "central database unreachable; serving last known placement");
                    // Keep serving it without asking again for a moment, so an outage
                    // does not add a failed central round trip to every request.
                    self.store_aged(clinic, Cached::Found(p.clone()), STALE_RETRY);
                    Ok(Some(p))
                }
                None => Err(GatewayError::CentralUnavailable(e)),
            },
        }
    }

    /// One central query per clinic however many requests miss at once.
    async fn fetch_once(&self, clinic: ClinicId) -> Result<Option<Arc<Placement>>, String> {
        let (cell, leader) = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return Err("placement cache lock poisoned".into());
            };
            match inflight.get(&clinic) {
                Some(cell) => (cell.clone(), false),
                None => {
                    let cell: Fetch = Arc::new(OnceCell::new());
                    inflight.insert(clinic, cell.clone());
                    (cell, true)
                }
            }
        };
        let result = cell
            .get_or_init(|| async {
                let fetched = self.query(clinic).await;
                match &fetched {
                    Ok(Some(p)) => self.store(clinic, Cached::Found(p.clone())),
                    Ok(None) => self.store(clinic, Cached::Unknown),
                    Err(_) => {}
                }
                fetched
            })
            .await
            .clone();
        if leader {
            if let Ok(mut inflight) = self.inflight.lock() {
                inflight.remove(&clinic);
            }
        }
        result
    }

    async fn query(&self, clinic: ClinicId) -> Result<Option<Arc<Placement>>, String> {
        let client = tokio::time::timeout(Duration::from_secs(2), self.central.get())
            .await
            .map_err(|_| "timed out reaching the central database".to_owned())?
            .map_err(|e| e.to_string())?;
        let row = client
            .query_opt(
                "SELECT c.region, r.worker_url, c.status, c.placement_version \
                 FROM companies c JOIN regions r ON r.name = c.region WHERE c.id = $1",
                &[clinic.as_uuid()],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.map(|r| {
            let status: String = r.get(2);
            Arc::new(Placement {
                region: r.get(0),
                worker_url: r.get(1),
                active: status == "active" || status == "relocating",
                read_only: status == "relocating",
                version: r.get(3),
            })
        }))
    }
}
