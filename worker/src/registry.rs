//! The clinic pool registry: one deadpool-postgres pool per clinic database,
//! connecting as that clinic's own role, opened on first use and closed when the
//! clinic goes quiet. Entries are re-checked against the central database so a
//! suspended or moved clinic stops being served here.
//!
//! All pools together stay within one connection budget for the regional server
//! (`CLINIC_POOL_BUDGET`). A checkout that needs a new connection when the budget is
//! spent first closes an idle connection of the least recently used other clinic;
//! when every budgeted connection is busy it waits for one to become idle, up to
//! the acquire timeout. So a cold clinic is served even when thousands of clinics
//! share a server whose `max_connections` is a hundred.

use crate::commit::AuditQueue;
use crate::config::PoolSettings;
use crate::error::WorkerError;
use crate::keys::{ClinicKeyCache, KeySource};
use common::config::DbSettings;
use common::crypto::KeyRing;
use common::metric_names as m;
use common::ClinicId;
use deadpool_postgres::{Object, Pool};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    reader: Mutex<std::sync::Weak<Object>>,
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
    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.since_open()
                .saturating_sub(self.last_used_ms.load(Ordering::Relaxed)),
        )
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

    async fn connection(&self) -> Result<Object, WorkerError> {
        self.registry.connection(&self.entry).await
    }

    async fn working_connection(&self) -> Result<Object, WorkerError> {
        self.registry.working_connection(&self.entry).await
    }
}

/// Placement facts about a clinic, as the central database holds them.
#[derive(Debug)]
pub struct ClinicRecord {
    pub region: String,
    pub db_name: String,
    pub db_role: String,
    pub sealed_password: Option<Vec<u8>>,
    pub status: String,
    /// The newest data-key version stored for the clinic (0: none yet).
    pub key_version: u32,
}

pub struct Registry {
    central: Pool,
    region: String,
    server: DbSettings,
    keys: Arc<KeyRing>,
    key_source: Arc<KeySource>,
    settings: PoolSettings,
    pools: Mutex<HashMap<ClinicId, Arc<ClinicPool>>>,
    opening: tokio::sync::Mutex<()>,
    /// Connections being created right now (counted against the budget).
    creating: Mutex<usize>,
    waiting: std::sync::atomic::AtomicUsize,
    /// `POOL_ACQUIRE` for this server, registered once (recorded per checkout).
    acquire_seconds: metrics::Histogram,
}

/// Gives back a budget reservation when the connection attempt ends.
struct Reservation<'a>(&'a Mutex<usize>);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.lock() {
            *n = n.saturating_sub(1);
        }
    }
}

impl Registry {
    pub fn new(
        central: Pool,
        region: String,
        server: DbSettings,
        keys: Arc<KeyRing>,
        settings: PoolSettings,
    ) -> Self {
        Self {
            acquire_seconds: metrics::histogram!(m::POOL_ACQUIRE, "server" => region.clone()),
            key_source: Arc::new(KeySource::new(central.clone(), keys.clone())),
            central,
            region,
            server,
            keys,
            settings,
            pools: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            creating: Mutex::new(0),
            waiting: std::sync::atomic::AtomicUsize::new(0),
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
        let client = self.central.get().await?;
        let row = client
            .query_opt(
                "SELECT region, db_name, db_role, db_role_password, status, \
                 (SELECT coalesce(max(version), 0) FROM clinic_data_keys k WHERE k.clinic_id = c.id) \
                 FROM companies c WHERE id = $1",
                &[clinic.as_uuid()],
            )
            .await
            .map_err(WorkerError::from_db)?;
        Ok(row.map(|r| ClinicRecord {
            region: r.get(0),
            db_name: r.get(1),
            db_role: r.get(2),
            sealed_password: r.get(3),
            status: r.get(4),
            key_version: r.get::<_, i32>(5).unsigned_abs(),
        }))
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
            .ok()
            .and_then(|map| map.get(&clinic).cloned())
    }

    fn forget(&self, clinic: ClinicId) {
        if let Ok(mut map) = self.pools.lock() {
            map.remove(&clinic);
        }
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
        let _guard = self.opening.lock().await;
        if let Some(entry) = self.cached(clinic) {
            return Ok(entry);
        }
        let record = self
            .lookup(clinic)
            .await?
            .ok_or(WorkerError::ClinicUnknown)?;
        self.check(&record)?;
        let sealed = record
            .sealed_password
            .ok_or_else(|| WorkerError::ClinicInactive("provisioning".into()))?;
        let password = self
            .keys
            .open_secret(&common::crypto::role_password_purpose(clinic), &sealed)
            .map_err(|e| WorkerError::Integrity(format!("clinic role password: {e}")))?;
        let settings = DbSettings {
            user: record.db_role,
            password: common::config::Secret::new(String::from_utf8_lossy(&password).into_owned()),
            dbname: record.db_name,
            ..self.server.clone()
        };
        let pool = pgconn::pool(
            &settings,
            pgconn::limited(
                &settings,
                "medicalpro-worker",
                pgconn::SessionLimits::SERVICE,
            ),
            self.settings.max_size,
            self.settings.acquire_timeout,
        )
        .map_err(|e| WorkerError::Internal(e.to_string()))?;
        let keys = Arc::new(ClinicKeyCache::load(self.key_source.clone(), clinic).await?);
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
        if let Ok(mut map) = self.pools.lock() {
            map.insert(clinic, entry.clone());
        }
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
    pub async fn client(&self, clinic: ClinicId) -> Result<Object, WorkerError> {
        Ok(self.session(clinic).await?.0)
    }

    /// Borrows a connection to the clinic's own database, with the clinic's keys.
    pub async fn session(
        &self,
        clinic: ClinicId,
    ) -> Result<(Object, Arc<ClinicKeyCache>), WorkerError> {
        let entry = self.pool(clinic).await?;
        let client = self.connection(&entry).await?;
        Ok((client, entry.keys.clone()))
    }

    /// Borrows a connection of an open clinic pool, within the server budget.
    pub async fn connection(&self, entry: &ClinicPool) -> Result<Object, WorkerError> {
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
    pub async fn point_reader(&self, entry: &ClinicPool) -> Result<Arc<Object>, WorkerError> {
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
    pub async fn working_connection(&self, entry: &ClinicPool) -> Result<Object, WorkerError> {
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
    ) -> Result<Option<Object>, WorkerError> {
        let entry = match self.cached(clinic) {
            Some(entry) => entry,
            None if open_if_needed => self.pool(clinic).await?,
            None => return Ok(None),
        };
        if entry.pool.status().available > 0 {
            return Ok(Some(entry.pool.get().await?));
        }
        if !open_if_needed {
            return Ok(None);
        }
        Ok(Some(self.checkout(&entry, Instant::now()).await?))
    }

    /// One connection of `entry`'s pool within the server budget (see the module docs).
    async fn checkout(&self, entry: &ClinicPool, started: Instant) -> Result<Object, WorkerError> {
        let deadline = started + self.settings.acquire_timeout;
        loop {
            let status = entry.pool.status();
            // An idle connection of its own, or its pool is full and waits for one.
            if status.available > 0 || status.size >= status.max_size {
                return Ok(entry.pool.get().await?);
            }
            if let Some(_reservation) = self.reserve() {
                return Ok(entry.pool.get().await?);
            }
            if self.evict_one_idle(entry.clinic) {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(WorkerError::PoolTimeout);
            }
            // Every budgeted connection is busy: one comes back idle soon.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reserves room for one new connection if the budget has it.
    fn reserve(&self) -> Option<Reservation<'_>> {
        let open: usize = self.entries().iter().map(|e| e.pool.status().size).sum();
        let mut creating = self.creating.lock().ok()?;
        if open + *creating >= self.settings.server_budget {
            return None;
        }
        *creating += 1;
        Some(Reservation(&self.creating))
    }

    /// Closes one idle connection of the least recently used other clinic.
    fn evict_one_idle(&self, except: ClinicId) -> bool {
        let victim = self
            .entries()
            .into_iter()
            .filter(|e| e.clinic != except && e.pool.status().available > 0)
            .max_by_key(|e| e.idle_for());
        let Some(victim) = victim else {
            return false;
        };
        let mut closed = false;
        victim.pool.retain(|_, _| {
            let keep = closed;
            closed = true;
            keep
        });
        if closed {
            metrics::counter!(m::POOL_EVICTIONS, "server" => self.region.clone()).increment(1);
        }
        closed
    }

    /// Clinics with an open pool.
    pub fn open_clinics(&self) -> Vec<ClinicId> {
        self.pools
            .lock()
            .map(|map| map.keys().copied().collect())
            .unwrap_or_default()
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
        self.publish_gauges();
    }

    fn entries(&self) -> Vec<Arc<ClinicPool>> {
        self.pools
            .lock()
            .map(|map| map.values().cloned().collect())
            .unwrap_or_default()
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
            .set(self.settings.server_budget as f64);
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
        if let Ok(mut map) = self.pools.lock() {
            for entry in map.values() {
                entry.pool.close();
            }
            map.clear();
        }
    }
}
