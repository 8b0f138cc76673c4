//! The clinic pool registry: one deadpool-postgres pool per clinic database,
//! connecting as that clinic's own role, opened on first use and closed when the
//! clinic goes quiet. Entries are re-checked against the central database so a
//! suspended or moved clinic stops being served here.
//!
//! All pools together stay within one connection budget for the regional server
//! (`CLINIC_POOL_BUDGET`). A checkout that needs a new connection when the budget is
//! spent first closes an idle connection of the least recently used other clinic;
//! when every budgeted connection is busy it waits for one to become idle, up to
//! the acquire timeout ([`crate::budget`]). So a cold clinic is served even when
//! thousands of clinics share a server whose `max_connections` is a hundred.
//!
//! Opening a pool is single-flight per clinic: concurrent first requests of one
//! clinic wait for one opening, and no clinic waits on another's. What the
//! registry asks the central database (placement, role password, data keys) goes
//! through [`crate::directory::Directory`], so its logic is tested without a database.

use crate::budget::{Budget, Conn, Slots, Tenant};
use crate::commit::AuditQueue;
use crate::config::PoolSettings;
use crate::directory::{Central, ClinicRecord, Directory, Opened};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use common::config::DbSettings;
use common::crypto::KeyRing;
use common::metric_names as m;
use common::ClinicId;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Prepared statements a clinic connection keeps at most.
const STATEMENT_CACHE_MAX: usize = 256;
/// Point reads pipelined on one shared connection at most (see
/// [`Registry::point_reader`]); past it, another connection is borrowed.
pub const PIPELINE_MAX: usize = 8;

/// One clinic's pool and data keys.
pub struct ClinicPool {
    pub clinic: ClinicId,
    pub pool: Pool,
    pub keys: Arc<ClinicKeyCache>,
    /// Read audit records waiting for their group commit.
    pub audit: AuditQueue,
    /// The connection point reads in flight share (see [`Registry::point_reader`]).
    reader: Mutex<std::sync::Weak<Conn>>,
    opened: Instant,
    last_used_ms: AtomicU64,
    validated_ms: AtomicU64,
}

impl ClinicPool {
    fn since_open(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }
    fn touch(&self) {
        self.last_used_ms
            .store(self.since_open(), Ordering::Relaxed);
    }
}

impl Tenant for ClinicPool {
    fn clinic(&self) -> ClinicId {
        self.clinic
    }

    fn slots(&self) -> Slots {
        let status = self.pool.status();
        Slots {
            open: status.size,
            idle: status.available,
            max: status.max_size,
        }
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.since_open()
                .saturating_sub(self.last_used_ms.load(Ordering::Relaxed)),
        )
    }

    fn close_one_idle(&self) -> bool {
        let mut closed = false;
        self.pool.retain(|_, _| {
            let keep = closed;
            closed = true;
            keep
        });
        closed
    }
}

/// One open clinic as its group commit ([`crate::commit`]) sees it: its queue, and
/// its connections borrowed within the server budget.
#[derive(Clone)]
pub struct ClinicOutbox {
    registry: Arc<Registry>,
    entry: Arc<ClinicPool>,
}

impl crate::commit::Outbox for ClinicOutbox {
    fn queue(&self) -> &AuditQueue {
        &self.entry.audit
    }

    async fn connection(&self) -> Result<Conn, WorkerError> {
        self.registry.connection(&self.entry).await
    }

    async fn working_connection(&self) -> Result<Conn, WorkerError> {
        self.registry.working_connection(&self.entry).await
    }
}

/// Openings of clinic pools in progress: one per clinic.
type Openings = Mutex<HashMap<ClinicId, Arc<tokio::sync::Mutex<()>>>>;

/// A turn at opening one clinic's pool; the clinic's entry in [`Openings`] goes
/// with the last turn taken.
struct OpenTurn<'a> {
    openings: &'a Openings,
    clinic: ClinicId,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> OpenTurn<'a> {
    fn new(openings: &'a Openings, clinic: ClinicId) -> Self {
        let gate = openings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(clinic)
            .or_default()
            .clone();
        Self {
            openings,
            clinic,
            gate,
        }
    }
}

impl Drop for OpenTurn<'_> {
    fn drop(&mut self) {
        let mut openings = self.openings.lock().unwrap_or_else(PoisonError::into_inner);
        // Clones are made under this lock only: the map's and ours mean nobody waits.
        if Arc::strong_count(&self.gate) <= 2 {
            openings.remove(&self.clinic);
        }
    }
}

pub struct Registry {
    central: Pool,
    region: String,
    directory: Arc<dyn Directory>,
    settings: PoolSettings,
    pools: Mutex<HashMap<ClinicId, Arc<ClinicPool>>>,
    openings: Openings,
    budget: Arc<Budget>,
    /// Checkouts in progress (the waiting gauge).
    waiting: AtomicUsize,
    /// `POOL_ACQUIRE` for this server, registered once (recorded per checkout).
    acquire_seconds: metrics::Histogram,
}

impl Registry {
    pub fn new(
        central: Pool,
        region: String,
        server: DbSettings,
        keys: Arc<KeyRing>,
        settings: PoolSettings,
    ) -> Self {
        let directory = Arc::new(Central::new(central.clone(), server, keys, settings));
        Self::with_directory(central, region, directory, settings)
    }

    /// A registry that asks `directory` where clinics are (`central` is the pool
    /// the shipper and the provisioner use).
    pub fn with_directory(
        central: Pool,
        region: String,
        directory: Arc<dyn Directory>,
        settings: PoolSettings,
    ) -> Self {
        Self {
            acquire_seconds: metrics::histogram!(m::POOL_ACQUIRE, "server" => region.clone()),
            budget: Arc::new(Budget::new(
                settings.server_budget,
                metrics::counter!(m::POOL_EVICTIONS, "server" => region.clone()),
            )),
            central,
            region,
            directory,
            settings,
            pools: Mutex::new(HashMap::new()),
            openings: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn central(&self) -> &Pool {
        &self.central
    }

    /// Reads a clinic's placement from the central database.
    pub async fn lookup(&self, clinic: ClinicId) -> Result<Option<ClinicRecord>, WorkerError> {
        self.directory.lookup(clinic).await
    }

    fn check(&self, record: &ClinicRecord) -> Result<(), WorkerError> {
        if record.region != self.region {
            return Err(WorkerError::Misrouted(record.region.clone()));
        }
        // A relocating clinic is still served here (the gateway refuses its writes)
        // until its placement is switched.
        if record.status != "active" && record.status != "relocating" {
            return Err(WorkerError::ClinicInactive(record.status.clone()));
        }
        Ok(())
    }

    fn cached(&self, clinic: ClinicId) -> Option<Arc<ClinicPool>> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&clinic)
            .cloned()
    }

    fn forget(&self, clinic: ClinicId) {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&clinic);
    }

    /// The pool of an active clinic placed in this region, opening it if needed.
    pub async fn pool(&self, clinic: ClinicId) -> Result<Arc<ClinicPool>, WorkerError> {
        if let Some(entry) = self.cached(clinic) {
            let validated = Duration::from_millis(entry.validated_ms.load(Ordering::Relaxed));
            if entry.opened.elapsed().saturating_sub(validated) < self.settings.revalidate_after {
                return Ok(entry);
            }
            match self.lookup(clinic).await {
                Ok(Some(record)) if self.check(&record).is_ok() => {
                    if record.key_version > entry.keys.current().current_version() {
                        entry.keys.reload().await?;
                    }
                    entry
                        .validated_ms
                        .store(entry.since_open(), Ordering::Relaxed);
                    return Ok(entry);
                }
                // The central database is unreachable: keep serving the clinic as it
                // was last validated (as the gateway keeps its last placement) and ask
                // again one interval later, so an outage costs one failed lookup per
                // interval rather than every request.
                Err(e @ (WorkerError::Unavailable(_) | WorkerError::PoolTimeout)) => {
                    tracing::warn!(%clinic, error = %e, "central database unreachable; serving the clinic as last validated");
                    entry
                        .validated_ms
                        .store(entry.since_open(), Ordering::Relaxed);
                    return Ok(entry);
                }
                Err(e) => return Err(e),
                Ok(_) => self.forget(clinic),
            }
        }
        self.open(clinic).await
    }

    /// Opens a clinic's pool, once however many ask for it together; other
    /// clinics' openings go on meanwhile.
    async fn open(&self, clinic: ClinicId) -> Result<Arc<ClinicPool>, WorkerError> {
        let turn = OpenTurn::new(&self.openings, clinic);
        let _opening = turn.gate.lock().await;
        if let Some(entry) = self.cached(clinic) {
            return Ok(entry);
        }
        let record = self
            .lookup(clinic)
            .await?
            .ok_or(WorkerError::ClinicUnknown)?;
        self.check(&record)?;
        let Opened { pool, keys } = self.directory.open(clinic, record).await?;
        let entry = Arc::new(ClinicPool {
            clinic,
            pool,
            keys,
            audit: AuditQueue::default(),
            reader: Mutex::new(std::sync::Weak::new()),
            opened: Instant::now(),
            last_used_ms: AtomicU64::new(0),
            validated_ms: AtomicU64::new(0),
        });
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(clinic, entry.clone());
        self.publish_gauges();
        Ok(entry)
    }

    /// What `entry`'s group commit of read audit records needs.
    pub fn outbox(self: &Arc<Self>, entry: &Arc<ClinicPool>) -> ClinicOutbox {
        ClinicOutbox {
            registry: self.clone(),
            entry: entry.clone(),
        }
    }

    /// Borrows a connection to the clinic's own database.
    pub async fn client(&self, clinic: ClinicId) -> Result<Conn, WorkerError> {
        Ok(self.session(clinic).await?.0)
    }

    /// Borrows a connection to the clinic's own database, with the clinic's keys.
    pub async fn session(
        &self,
        clinic: ClinicId,
    ) -> Result<(Conn, Arc<ClinicKeyCache>), WorkerError> {
        let entry = self.pool(clinic).await?;
        let client = self.connection(&entry).await?;
        Ok((client, entry.keys.clone()))
    }

    /// Borrows a connection of an open clinic pool, within the server budget.
    pub async fn connection(&self, entry: &ClinicPool) -> Result<Conn, WorkerError> {
        entry.touch();
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let result = self.checkout(entry, started).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Ok(client) = &result {
            // Prepared statements are cached per connection; the cache stays bounded
            // whatever statements requests produced (each cleared one is closed on
            // the server too).
            if client.statement_cache.size() > STATEMENT_CACHE_MAX {
                client.statement_cache.clear();
            }
        }
        self.acquire_seconds.record(started.elapsed().as_secs_f64());
        result
    }

    /// A connection for a point read, shared with the clinic's other point reads in
    /// flight: their statements are pipelined on it (the server reads several at
    /// once instead of waking per statement) up to [`PIPELINE_MAX`] at a time. The
    /// connection goes back to the pool when the last of them is done, so it is
    /// held only while reads are in flight, like any other.
    pub async fn point_reader(&self, entry: &ClinicPool) -> Result<Arc<Conn>, WorkerError> {
        let shared = entry
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade();
        if let Some(client) = shared {
            if Arc::strong_count(&client) <= PIPELINE_MAX && !client.is_closed() {
                entry.touch();
                return Ok(client);
            }
        }
        let client = Arc::new(self.connection(entry).await?);
        *entry.reader.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&client);
        Ok(client)
    }

    /// A connection that answered a round trip: for the one retry after connection
    /// trouble. Idle connections are handed out unchecked, and whatever closed one
    /// (a server restart, an operator, a failover) may have closed its siblings too:
    /// each one that fails the check is closed and never pooled again.
    pub async fn working_connection(&self, entry: &ClinicPool) -> Result<Conn, WorkerError> {
        let mut last = WorkerError::Unavailable("no working connection".into());
        for _ in 0..=entry.pool.status().max_size {
            let client = self.connection(entry).await?;
            match client.simple_query("").await {
                Ok(_) => return Ok(client),
                Err(e) => last = WorkerError::from_db(e),
            }
        }
        Err(last)
    }

    /// A connection for background work (audit shipping) that does not count as use
    /// of the clinic, so quiet pools still close: an idle connection of the clinic's
    /// open pool if there is one; otherwise, with `open_if_needed`, the pool is opened
    /// and a connection borrowed within the budget, else `None` (try again later).
    pub async fn background_client(
        &self,
        clinic: ClinicId,
        open_if_needed: bool,
    ) -> Result<Option<Conn>, WorkerError> {
        let entry = match self.cached(clinic) {
            Some(entry) => entry,
            None if open_if_needed => self.pool(clinic).await?,
            None => return Ok(None),
        };
        if entry.pool.status().available > 0 {
            return Ok(Some(Conn::new(
                entry.pool.get().await?,
                self.budget.clone(),
            )));
        }
        if !open_if_needed {
            return Ok(None);
        }
        Ok(Some(self.checkout(&entry, Instant::now()).await?))
    }

    /// One connection of `entry`'s pool within the server budget (see the module docs).
    async fn checkout(&self, entry: &ClinicPool, started: Instant) -> Result<Conn, WorkerError> {
        let deadline = started + self.settings.acquire_timeout;
        let admission = self
            .budget
            .admit(entry, || self.entries(), deadline)
            .await?;
        let object = entry.pool.get().await?;
        // A new connection counts as open from here: its reservation goes.
        drop(admission);
        Ok(Conn::new(object, self.budget.clone()))
    }

    /// Clinics with an open pool.
    pub fn open_clinics(&self) -> Vec<ClinicId> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Closes what is no longer needed: idle connections above the warm minimum after
    /// `idle_timeout`, and whole pools of clinics quiet for `inactive_after`.
    pub fn reap(&self) {
        for entry in self.entries() {
            let status = entry.pool.status();
            let busy = status.size.saturating_sub(status.available);
            if entry.idle_for() >= self.settings.inactive_after && busy == 0 {
                entry.pool.close();
                self.forget(entry.clinic);
                continue;
            }
            let mut warm = 0usize;
            let min_idle = self.settings.min_idle;
            let idle_timeout = self.settings.idle_timeout;
            entry.pool.retain(|_, metrics| {
                if metrics.last_used() < idle_timeout {
                    return true;
                }
                warm += 1;
                warm <= min_idle
            });
        }
        // Room was made: a checkout waiting for it looks again.
        self.budget.freed();
        self.publish_gauges();
    }

    fn entries(&self) -> Vec<Arc<ClinicPool>> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Sets the pool gauges (open pools, connections in use and idle, per server and
    /// for the busiest clinics) from the pools as they are now.
    pub fn publish_gauges(&self) {
        let entries = self.entries();
        let samples: Vec<crate::telemetry::PoolSample> = entries
            .iter()
            .map(|e| {
                let s = e.pool.status();
                crate::telemetry::PoolSample {
                    clinic: e.clinic,
                    in_use: s.size.saturating_sub(s.available),
                    idle: s.available,
                    waiting: s.waiting,
                }
            })
            .collect();
        let (in_use, idle) = samples
            .iter()
            .fold((0, 0), |(u, i), s| (u + s.in_use, i + s.idle));
        metrics::gauge!(m::POOLS_OPEN, "server" => self.region.clone()).set(entries.len() as f64);
        metrics::gauge!(m::POOL_BUDGET, "server" => self.region.clone())
            .set(self.budget.limit() as f64);
        metrics::gauge!(m::POOL_WAITING, "server" => self.region.clone())
            .set(self.waiting.load(Ordering::Relaxed) as f64);
        metrics::gauge!(m::POOL_CONNECTIONS, "server" => self.region.clone(), "state" => "in_use")
            .set(in_use as f64);
        metrics::gauge!(m::POOL_CONNECTIONS, "server" => self.region.clone(), "state" => "idle")
            .set(idle as f64);
        crate::telemetry::publish_top_clinics(&self.region, samples);
    }

    /// Closes every pool (shutdown).
    pub fn close_all(&self) {
        let mut map = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in map.values() {
            entry.pool.close();
        }
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::keys::KeySource;
    use common::crypto::{ClinicKeys, DataKeyMaterial};
    use futures_util::future::BoxFuture;
    use tokio::sync::Notify;

    /// A pool that never connects (nothing here borrows a connection).
    fn lazy_pool() -> Pool {
        let manager =
            deadpool_postgres::Manager::new(tokio_postgres::Config::new(), tokio_postgres::NoTls);
        Pool::builder(manager).max_size(2).build().unwrap()
    }

    /// A directory in memory: counts openings, and holds `slow`'s until released.
    struct Fake {
        lookups: AtomicUsize,
        opens: Mutex<HashMap<ClinicId, usize>>,
        slow: ClinicId,
        release: Notify,
        keys: Arc<KeySource>,
    }

    impl Fake {
        fn new(slow: ClinicId) -> Arc<Self> {
            let ring = Arc::new(KeyRing::new(1, &[7; 32]));
            Arc::new(Self {
                lookups: AtomicUsize::new(0),
                opens: Mutex::new(HashMap::new()),
                slow,
                release: Notify::new(),
                keys: Arc::new(KeySource::new(lazy_pool(), ring)),
            })
        }

        fn opens(&self, clinic: ClinicId) -> usize {
            self.opens
                .lock()
                .unwrap()
                .get(&clinic)
                .copied()
                .unwrap_or(0)
        }
    }

    impl Directory for Fake {
        fn lookup(
            &self,
            _clinic: ClinicId,
        ) -> BoxFuture<'_, Result<Option<ClinicRecord>, WorkerError>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Ok(Some(ClinicRecord {
                    region: "here".into(),
                    db_name: "db".into(),
                    db_role: "role".into(),
                    sealed_password: None,
                    status: "active".into(),
                    key_version: 1,
                }))
            })
        }

        fn open(
            &self,
            clinic: ClinicId,
            _record: ClinicRecord,
        ) -> BoxFuture<'_, Result<Opened, WorkerError>> {
            *self.opens.lock().unwrap().entry(clinic).or_default() += 1;
            Box::pin(async move {
                if clinic == self.slow {
                    self.release.notified().await;
                }
                let keys = ClinicKeys::new(clinic, vec![(1, DataKeyMaterial::generate())]).unwrap();
                Ok(Opened {
                    pool: lazy_pool(),
                    keys: Arc::new(ClinicKeyCache::new(self.keys.clone(), clinic, keys)),
                })
            })
        }
    }

    fn registry(directory: Arc<Fake>) -> Arc<Registry> {
        Arc::new(Registry::with_directory(
            lazy_pool(),
            "here".into(),
            directory,
            PoolSettings::default(),
        ))
    }

    #[tokio::test]
    async fn concurrent_cold_requests_of_a_clinic_open_it_once() {
        let (a, b) = (ClinicId::generate(), ClinicId::generate());
        let directory = Fake::new(a);
        let registry = registry(directory.clone());
        let first = tokio::spawn({
            let registry = registry.clone();
            async move { registry.pool(a).await.map(|e| e.clinic) }
        });
        let second = tokio::spawn({
            let registry = registry.clone();
            async move { registry.pool(a).await.map(|e| e.clinic) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // B opens while A's opening is still waiting on its I/O.
        let other = tokio::time::timeout(Duration::from_secs(1), registry.pool(b)).await;
        assert_eq!(other.unwrap().unwrap().clinic, b);
        assert!(!first.is_finished() && !second.is_finished());
        directory.release.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap(), a);
        assert_eq!(second.await.unwrap().unwrap(), a);
        assert_eq!(directory.opens(a), 1, "one opening for both requests");
        assert_eq!(directory.opens(b), 1);
        assert_eq!(directory.lookups.load(Ordering::SeqCst), 2);
        assert!(
            registry.openings.lock().unwrap().is_empty(),
            "no opening left behind"
        );
        // Open now: served from the registry.
        registry.pool(a).await.unwrap();
        assert_eq!(directory.opens(a), 1);
    }

    #[tokio::test]
    async fn an_abandoned_opening_leaves_nothing_behind() {
        let a = ClinicId::generate();
        let directory = Fake::new(a);
        let registry = registry(directory.clone());
        let cut_short = tokio::time::timeout(Duration::from_millis(20), registry.pool(a)).await;
        assert!(cut_short.is_err());
        assert!(registry.openings.lock().unwrap().is_empty());
        assert!(registry.open_clinics().is_empty());
    }
}
