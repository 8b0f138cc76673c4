//! The connection budget of one regional server: all clinic pools of this worker
//! together hold at most `CLINIC_POOL_BUDGET` connections on it.
//!
//! A checkout that needs a new connection first reserves room (connections open
//! plus being opened stay within the budget); when there is none, it closes an idle
//! connection of the least recently used other clinic (never a busy one); when
//! every budgeted connection is busy, it waits until one is given back or closed
//! ([`Conn`] tells the budget as it goes back), up to its deadline.
//!
//! The budget sees a clinic's pool only through [`Tenant`], so its accounting is
//! tested without a database.

use crate::error::WorkerError;
use common::ClinicId;
use deadpool_postgres::Object;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A clinic's connections as the budget counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    /// Connections open, busy or idle.
    pub open: usize,
    /// Connections open and idle.
    pub idle: usize,
    /// Connections the clinic's pool holds at most.
    pub max: usize,
}

/// One clinic's pool as the budget sees it.
pub trait Tenant {
    fn clinic(&self) -> ClinicId;
    fn slots(&self) -> Slots;
    /// How long since the clinic last borrowed a connection.
    fn idle_for(&self) -> Duration;
    /// Closes one idle connection; `false` if there was none.
    fn close_one_idle(&self) -> bool;
}

/// How a checkout may take its connection.
#[derive(Debug)]
pub enum Admission<'a> {
    /// From its own pool: an idle connection, or the pool is full and waits for one
    /// of its own (no room of the budget is needed).
    Pooled,
    /// A new connection, in room reserved for it until the reservation is dropped
    /// (by then the new connection counts as open).
    New(Reservation<'a>),
}

/// Room for one connection being opened; given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a>(&'a Budget);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut creating = self
            .0
            .creating
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *creating = creating.saturating_sub(1);
        drop(creating);
        // The connection opened (it is counted as open now) or failed (its room is
        // free again): either way a waiter may go on.
        self.0.freed();
    }
}

/// The budget of one regional server.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// Connections being opened right now (counted against the budget).
    creating: Mutex<usize>,
    /// Wakes the checkouts waiting for room.
    room: Notify,
    /// Checkouts waiting for room: the budget is told of freed connections only
    /// while there are some.
    waiters: AtomicUsize,
    evictions: metrics::Counter,
}

impl Budget {
    pub fn new(limit: usize, evictions: metrics::Counter) -> Self {
        Self {
            limit,
            creating: Mutex::new(0),
            room: Notify::new(),
            waiters: AtomicUsize::new(0),
            evictions,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Says a connection was given back or closed: waiting checkouts look again.
    pub fn freed(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// How `entry` may take a connection, within the budget shared with `all` the
    /// open clinics (called again whenever it needs a fresh look), by `deadline`.
    pub async fn admit<T: Tenant>(
        &self,
        entry: &T,
        all: impl Fn() -> Vec<Arc<T>>,
        deadline: Instant,
    ) -> Result<Admission<'_>, WorkerError> {
        let mut waiting: Option<(
            std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>>,
            Waiter<'_>,
        )> = None;
        loop {
            let slots = entry.slots();
            if slots.idle > 0 || slots.open >= slots.max {
                return Ok(Admission::Pooled);
            }
            let tenants = all();
            if let Some(reservation) = self.reserve(&tenants) {
                return Ok(Admission::New(reservation));
            }
            if self.evict_one_idle(entry.clinic(), &tenants) {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(WorkerError::PoolTimeout);
            }
            match waiting.take() {
                // Register as a waiter first, then look once more: a connection
                // freed in between is not missed.
                None => {
                    let mut notified = Box::pin(self.room.notified());
                    let waiter = Waiter::new(&self.waiters);
                    notified.as_mut().enable();
                    waiting = Some((notified, waiter));
                }
                // Every budgeted connection is busy: one comes back idle soon.
                Some((notified, _waiter)) => {
                    let until = tokio::time::Instant::from_std(deadline);
                    let _ = tokio::time::timeout_at(until, notified).await;
                }
            }
        }
    }

    /// Reserves room for one new connection if the budget has it.
    fn reserve<T: Tenant>(&self, tenants: &[Arc<T>]) -> Option<Reservation<'_>> {
        let open: usize = tenants.iter().map(|t| t.slots().open).sum();
        let mut creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
        if open + *creating >= self.limit {
            return None;
        }
        *creating += 1;
        Some(Reservation(self))
    }

    /// Closes one idle connection of the least recently used clinic other than
    /// `except`.
    fn evict_one_idle<T: Tenant>(&self, except: ClinicId, tenants: &[Arc<T>]) -> bool {
        let victim = tenants
            .iter()
            .filter(|t| t.clinic() != except && t.slots().idle > 0)
            .max_by_key(|t| t.idle_for());
        let closed = victim.is_some_and(|v| v.close_one_idle());
        if closed {
            self.evictions.increment(1);
        }
        closed
    }
}

/// Counts a checkout among the waiters while it lives.
struct Waiter<'a>(&'a AtomicUsize);

impl<'a> Waiter<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Self(waiters)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection borrowed from a clinic pool: it goes back to its pool when
/// dropped, and the budget is told so (a checkout waiting for room looks again).
pub struct Conn {
    // Dropped in this order: the connection back to its pool, then the budget told.
    object: Object,
    _freed: Freed,
}

struct Freed(Arc<Budget>);

impl Drop for Freed {
    fn drop(&mut self) {
        self.0.freed();
    }
}

impl Conn {
    pub fn new(object: Object, budget: Arc<Budget>) -> Self {
        Self {
            object,
            _freed: Freed(budget),
        }
    }

    /// Takes the connection out of its pool and closes it (one that is broken, or
    /// stuck inside a transaction, is never lent again).
    pub fn discard(self) {
        let Conn { object, _freed } = self;
        drop(Object::take(object));
    }
}

impl Deref for Conn {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.object
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.object
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A clinic pool of counters: connections open and idle, and when it was last
    /// used (a logical clock, larger is more recent).
    struct Fake {
        clinic: ClinicId,
        open: AtomicUsize,
        idle: AtomicUsize,
        max: usize,
        last_used: AtomicU64,
    }

    impl Fake {
        fn new(max: usize, last_used: u64) -> Arc<Self> {
            Arc::new(Self {
                clinic: ClinicId::generate(),
                open: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                max,
                last_used: AtomicU64::new(last_used),
            })
        }

        /// Takes a connection the way the registry does: admitted, then from its
        /// own idle ones or a new one opened in the reserved room.
        async fn take(
            &self,
            budget: &Budget,
            all: &[Arc<Fake>],
            timeout: Duration,
        ) -> Result<(), WorkerError> {
            let all = all.to_vec();
            let admission = budget
                .admit(self, || all.clone(), Instant::now() + timeout)
                .await?;
            match admission {
                Admission::New(reservation) => {
                    tokio::task::yield_now().await;
                    self.open.fetch_add(1, Ordering::SeqCst);
                    drop(reservation);
                }
                Admission::Pooled => {
                    let took = self
                        .idle
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                    assert!(took.is_ok(), "a full pool waits for its own: not modelled");
                }
            }
            Ok(())
        }

        /// Gives a connection back (idle now).
        fn give_back(&self, budget: &Budget) {
            self.idle.fetch_add(1, Ordering::SeqCst);
            budget.freed();
        }
    }

    impl Tenant for Fake {
        fn clinic(&self) -> ClinicId {
            self.clinic
        }
        fn slots(&self) -> Slots {
            Slots {
                open: self.open.load(Ordering::SeqCst),
                idle: self.idle.load(Ordering::SeqCst),
                max: self.max,
            }
        }
        fn idle_for(&self) -> Duration {
            Duration::from_secs(1_000_000 - self.last_used.load(Ordering::SeqCst))
        }
        fn close_one_idle(&self) -> bool {
            let closed = self
                .idle
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if closed {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
            closed
        }
    }

    fn budget(limit: usize) -> Arc<Budget> {
        Arc::new(Budget::new(limit, metrics::Counter::noop()))
    }

    fn total_open(all: &[Arc<Fake>]) -> usize {
        all.iter().map(|f| f.open.load(Ordering::SeqCst)).sum()
    }

    #[tokio::test]
    async fn never_more_connections_than_the_budget() {
        let budget = budget(5);
        let clinics: Vec<Arc<Fake>> = (0..8).map(|i| Fake::new(3, i)).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..40usize {
            let (budget, clinics) = (budget.clone(), clinics.clone());
            tasks.spawn(async move {
                let me = clinics[round % clinics.len()].clone();
                me.take(&budget, &clinics, Duration::from_secs(5)).await?;
                assert!(total_open(&clinics) <= budget.limit());
                tokio::time::sleep(Duration::from_millis(1 + (round % 3) as u64)).await;
                me.last_used.store(100 + round as u64, Ordering::SeqCst);
                me.give_back(&budget);
                Ok::<_, WorkerError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert!(total_open(&clinics) <= 5);
    }

    #[tokio::test]
    async fn a_waiter_is_woken_when_a_connection_is_freed() {
        let budget = budget(2);
        let (a, b) = (Fake::new(5, 1), Fake::new(5, 2));
        let all = vec![a.clone(), b.clone()];
        // Both budgeted connections are A's, and busy.
        a.take(&budget, &all, Duration::from_secs(1)).await.unwrap();
        a.take(&budget, &all, Duration::from_secs(1)).await.unwrap();
        let waiter = {
            let (budget, b, all) = (budget.clone(), b.clone(), all.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                b.take(&budget, &all, Duration::from_secs(10))
                    .await
                    .map(|()| started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no room: B waits");
        let freed_at = Instant::now();
        a.give_back(&budget);
        let waited = waiter.await.unwrap().unwrap();
        assert!(
            freed_at.elapsed() < Duration::from_millis(500),
            "woken at once, not polled"
        );
        assert!(waited >= Duration::from_millis(50));
        assert_eq!(
            a.open.load(Ordering::SeqCst),
            1,
            "A's idle connection made room"
        );
        assert_eq!(b.open.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_deadline() {
        let budget = budget(1);
        let (a, b) = (Fake::new(5, 1), Fake::new(5, 2));
        let all = vec![a.clone(), b.clone()];
        a.take(&budget, &all, Duration::from_secs(1)).await.unwrap();
        let refused = b.take(&budget, &all, Duration::from_millis(30)).await;
        assert!(matches!(refused, Err(WorkerError::PoolTimeout)));
        assert_eq!(budget.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn eviction_takes_the_least_recently_used_other_clinic() {
        let budget = budget(3);
        let (old, recent, me) = (Fake::new(5, 10), Fake::new(5, 20), Fake::new(5, 0));
        let all = vec![old.clone(), recent.clone(), me.clone()];
        for f in [&old, &recent, &me] {
            f.take(&budget, &all, Duration::from_secs(1)).await.unwrap();
        }
        // `me` is the least recently used, but busy; the others are idle now.
        old.give_back(&budget);
        recent.give_back(&budget);
        me.take(&budget, &all, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            old.open.load(Ordering::SeqCst),
            0,
            "the least recently used"
        );
        assert_eq!(recent.open.load(Ordering::SeqCst), 1);
        assert_eq!(me.open.load(Ordering::SeqCst), 2);
        assert_eq!(total_open(&all), 3);
    }
}
