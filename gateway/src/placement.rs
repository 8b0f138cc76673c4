//! The placement cache: clinic → (region, worker, status), an LRU with a TTL over a
//! [`PlacementSource`] (the central database: [`CentralPlacements`]). Concurrent
//! misses for one clinic make one lookup; unknown clinics are cached briefly;
//! entries are dropped fleet-wide through LISTEN/NOTIFY ([`crate::events`]); and the
//! last known entry keeps serving while the source is unreachable.

use crate::error::GatewayError;
use common::metric_names as m;
use common::ClinicId;
use deadpool_postgres::Pool;
use lru::LruCache;
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How long "no such clinic" is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// While the source is unreachable, how long a last known entry is served before it
/// is asked again.
const STALE_RETRY: Duration = Duration::from_secs(1);
/// The notification channel of placement changes.
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

/// Where placements are looked up on a miss.
pub trait PlacementSource: Send + Sync + 'static {
    /// The clinic's placement, `None` when there is no such clinic; `Err` (a
    /// description for the log) when the source could not be asked.
    fn lookup(
        &self,
        clinic: ClinicId,
    ) -> impl Future<Output = Result<Option<Placement>, String>> + Send;
}

/// Placements from the central database's `companies` and `regions`.
pub struct CentralPlacements {
    central: Pool,
}

impl CentralPlacements {
    pub fn new(central: Pool) -> Self {
        Self { central }
    }
}

impl PlacementSource for CentralPlacements {
    async fn lookup(&self, clinic: ClinicId) -> Result<Option<Placement>, String> {
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
            Placement {
                region: r.get(0),
                worker_url: r.get(1),
                active: status == "active" || status == "relocating",
                read_only: status == "relocating",
                version: r.get(3),
            }
        }))
    }
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

pub struct PlacementCache<S = CentralPlacements> {
    source: S,
    ttl: Duration,
    entries: Mutex<LruCache<ClinicId, Entry>>,
    inflight: Mutex<HashMap<ClinicId, Fetch>>,
}

impl<S: PlacementSource> PlacementCache<S> {
    pub fn new(source: S, capacity: usize, ttl: Duration) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            source,
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

    /// One lookup per clinic however many requests miss at once. Whoever finishes
    /// first retires the shared lookup, so a lookup whose first caller went away
    /// (its request was cancelled) is finished by the others and never kept as an
    /// answer for later misses.
    async fn fetch_once(&self, clinic: ClinicId) -> Result<Option<Arc<Placement>>, String> {
        let cell = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return Err("placement cache lock poisoned".into());
            };
            match inflight.get(&clinic) {
                Some(cell) if !cell.initialized() => cell.clone(),
                _ => {
                    let cell: Fetch = Arc::new(OnceCell::new());
                    inflight.insert(clinic, cell.clone());
                    cell
                }
            }
        };
        let result = cell
            .get_or_init(|| async {
                let fetched = self.source.lookup(clinic).await.map(|p| p.map(Arc::new));
                match &fetched {
                    Ok(Some(p)) => self.store(clinic, Cached::Found(p.clone())),
                    Ok(None) => self.store(clinic, Cached::Unknown),
                    Err(_) => {}
                }
                fetched
            })
            .await
            .clone();
        if let Ok(mut inflight) = self.inflight.lock() {
            if inflight.get(&clinic).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&clinic);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A source answering from a map, counting its lookups; each lookup takes
    /// `delay` (of paused time) and fails while `down`.
    #[derive(Default)]
    struct Fake {
        placements: Mutex<HashMap<ClinicId, Placement>>,
        down: AtomicBool,
        lookups: AtomicUsize,
        delay: Duration,
    }

    impl Fake {
        fn with_delay(delay: Duration) -> Self {
            Self {
                delay,
                ..Self::default()
            }
        }

        fn place(&self, clinic: ClinicId, region: &str, status: &str) {
            self.placements.lock().unwrap().insert(
                clinic,
                Placement {
                    region: region.into(),
                    worker_url: format!("http://{region}.example:8081"),
                    active: status == "active" || status == "relocating",
                    read_only: status == "relocating",
                    version: 1,
                },
            );
        }

        fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    impl PlacementSource for Arc<Fake> {
        async fn lookup(&self, clinic: ClinicId) -> Result<Option<Placement>, String> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err("central database unreachable".into());
            }
            Ok(self.placements.lock().unwrap().get(&clinic).cloned())
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    fn cache(source: &Arc<Fake>, capacity: usize) -> PlacementCache<Arc<Fake>> {
        PlacementCache::new(source.clone(), capacity, TTL)
    }

    async fn region(cache: &PlacementCache<Arc<Fake>>, clinic: ClinicId) -> Option<String> {
        cache.get(clinic).await.unwrap().map(|p| p.region.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_served_until_their_ttl_expires() {
        let source = Arc::new(Fake::default());
        let cache = cache(&source, 10);
        let clinic = ClinicId::generate();
        source.place(clinic, "eu", "active");
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("eu"));
        source.place(clinic, "us", "active");
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("eu"));
        assert_eq!(source.lookups(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("us"));
        assert_eq!(source.lookups(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_clinics_are_remembered_briefly() {
        let source = Arc::new(Fake::default());
        let cache = cache(&source, 10);
        let clinic = ClinicId::generate();
        assert_eq!(region(&cache, clinic).await, None);
        assert_eq!(region(&cache, clinic).await, None);
        assert_eq!(source.lookups(), 1);
        // Created meanwhile: still unknown here until the negative entry expires...
        source.place(clinic, "eu", "active");
        tokio::time::advance(NEGATIVE_TTL - Duration::from_millis(1)).await;
        assert_eq!(region(&cache, clinic).await, None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("eu"));
        assert_eq!(source.lookups(), 2);
        // ...or until it is invalidated (as registration does).
        let other = ClinicId::generate();
        assert_eq!(region(&cache, other).await, None);
        source.place(other, "us", "active");
        cache.invalidate(other);
        assert_eq!(region(&cache, other).await.as_deref(), Some("us"));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_lookup() {
        let source = Arc::new(Fake::with_delay(Duration::from_millis(100)));
        let cache = cache(&source, 10);
        let clinic = ClinicId::generate();
        source.place(clinic, "eu", "active");
        let answers = futures_util::future::join_all((0..50).map(|_| region(&cache, clinic))).await;
        assert!(answers.iter().all(|r| r.as_deref() == Some("eu")));
        assert_eq!(source.lookups(), 1);
        // Another clinic's miss is not held up by, or folded into, the first's.
        let other = ClinicId::generate();
        let (a, b) = tokio::join!(region(&cache, clinic), region(&cache, other));
        assert_eq!((a.as_deref(), b), (Some("eu"), None));
        assert_eq!(source.lookups(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_lookup_is_finished_by_the_others_and_not_kept() {
        let source = Arc::new(Fake::with_delay(Duration::from_millis(100)));
        let cache = cache(&source, 10);
        let clinic = ClinicId::generate();
        source.place(clinic, "eu", "active");
        // The first caller gives up halfway; the second one still gets an answer.
        let first = tokio::time::timeout(Duration::from_millis(50), region(&cache, clinic));
        let second = region(&cache, clinic);
        let (first, second) = tokio::join!(first, second);
        assert!(first.is_err());
        assert_eq!(second.as_deref(), Some("eu"));
        // Once expired, the clinic is looked up afresh.
        source.place(clinic, "us", "active");
        tokio::time::advance(TTL).await;
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("us"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_known_placement_is_served_while_the_source_is_down() {
        let source = Arc::new(Fake::default());
        let cache = cache(&source, 10);
        let clinic = ClinicId::generate();
        source.place(clinic, "eu", "active");
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("eu"));
        tokio::time::advance(TTL).await;
        source.down.store(true, Ordering::SeqCst);
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("eu"));
        assert_eq!(source.lookups(), 2);
        // Not asked again on every request, but again after a moment.
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("eu"));
        assert_eq!(source.lookups(), 2);
        tokio::time::advance(STALE_RETRY).await;
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("eu"));
        assert_eq!(source.lookups(), 3);
        // A clinic never seen cannot be served: the outage is the answer.
        let unseen = ClinicId::generate();
        assert!(matches!(
            cache.get(unseen).await,
            Err(GatewayError::CentralUnavailable(_))
        ));
        // Back up: the fresh answer replaces the stale one.
        source.down.store(false, Ordering::SeqCst);
        source.place(clinic, "us", "active");
        tokio::time::advance(STALE_RETRY).await;
        assert_eq!(region(&cache, clinic).await.as_deref(), Some("us"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_entry_is_evicted() {
        let source = Arc::new(Fake::default());
        let cache = cache(&source, 2);
        let [a, b, c] = [(); 3].map(|_| ClinicId::generate());
        for clinic in [a, b, c] {
            source.place(clinic, "eu", "active");
        }
        region(&cache, a).await;
        region(&cache, b).await;
        region(&cache, a).await; // a is now the most recently used
        region(&cache, c).await; // evicts b
        assert_eq!((cache.len(), source.lookups()), (2, 3));
        region(&cache, a).await;
        assert_eq!(source.lookups(), 3);
        region(&cache, b).await;
        assert_eq!(source.lookups(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn only_active_clinics_are_served() {
        let source = Arc::new(Fake::default());
        let cache = cache(&source, 10);
        let [active, relocating, suspended, unknown] = [(); 4].map(|_| ClinicId::generate());
        source.place(active, "eu", "active");
        source.place(relocating, "eu", "relocating");
        source.place(suspended, "eu", "suspended");
        assert!(!cache.active(active).await.unwrap().read_only);
        assert!(cache.active(relocating).await.unwrap().read_only);
        for clinic in [suspended, unknown] {
            assert!(matches!(
                cache.active(clinic).await,
                Err(GatewayError::ClinicUnavailable)
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn notifications_drop_entries() {
        use pgconn::notify::Listener;
        let source = Arc::new(Fake::default());
        let cache = Arc::new(cache(&source, 10));
        let events = crate::events::CentralEvents {
            cache: cache.clone(),
            revocations: pgconn::revocations::Follow {
                state: Arc::default(),
                horizon_secs: 3600,
            },
        };
        let [a, b] = [(); 2].map(|_| ClinicId::generate());
        source.place(a, "eu", "active");
        source.place(b, "eu", "active");
        region(&cache, a).await;
        region(&cache, b).await;
        // One clinic moved: its entry alone is dropped.
        source.place(a, "us", "active");
        source.place(b, "us", "active");
        events.notified(CHANNEL, &a.to_string());
        assert_eq!(region(&cache, a).await.as_deref(), Some("us"));
        assert_eq!(region(&cache, b).await.as_deref(), Some("eu"));
        // A region's worker moved (`*`): every entry is dropped.
        events.notified(CHANNEL, "*");
        assert!(cache.is_empty());
        assert_eq!(region(&cache, b).await.as_deref(), Some("us"));
        // Nonsense changes nothing.
        events.notified(CHANNEL, "not-a-clinic");
        assert_eq!(cache.len(), 1);
        assert_eq!(source.lookups(), 4);
    }
}
