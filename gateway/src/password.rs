//! Password hashing with argon2id at OWASP parameters (m = 19 MiB, t = 2, p = 1),
//! run on blocking threads behind a semaphore, at a lower scheduling priority, so a
//! burst of logins cannot starve the proxy or exhaust memory. Past a bounded queue of waiting checks, new ones are
//! shed at once (`503` + `retry-after`, counted) instead of waiting behind it.

use crate::error::GatewayError;
pub use common::password::{MAX_LEN, MIN_LEN};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Checks waiting or running, and how many may wait beyond the running ones.
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    /// A real hash verified for unknown e-mails, so timing does not tell them apart.
    dummy: Arc<String>,
}

fn hash_blocking(password: &str) -> Result<String, GatewayError> {
    common::password::hash(password).map_err(GatewayError::Internal)
}

fn verify_blocking(hash: &str, password: &str) -> bool {
    common::password::verify(hash, password)
}

impl Hasher {
    pub fn new(max_queue: usize) -> Result<Self, GatewayError> {
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Self {
            permits: Arc::new(Semaphore::new(parallel)),
            queued: Arc::new(AtomicUsize::new(0)),
            max_queue: max_queue + parallel,
            dummy: Arc::new(hash_blocking("medicalpro-dummy-password")?),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GatewayError> {
        let _slot = Slot::take(&self.queued, self.max_queue).ok_or_else(|| {
            metrics::counter!(common::metric_names::PASSWORD_HASH_SHED).increment(1);
            GatewayError::Overloaded
        })?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            lower_priority();
            f()
        })
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))
    }

    pub async fn hash(&self, password: &str) -> Result<String, GatewayError> {
        let password = password.to_owned();
        self.blocking(move || hash_blocking(&password)).await?
    }

    /// Verifies against `hash`, or against the dummy hash when there is none.
    pub async fn verify(&self, hash: Option<String>, password: &str) -> Result<bool, GatewayError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let password = password.to_owned();
        let ok = self
            .blocking(move || verify_blocking(&hash, &password))
            .await?;
        Ok(ok && known)
    }
}

/// Runs the calling (blocking) thread at a lower scheduling priority (nice 10),
/// once per thread: a burst of sign-ins then takes only the CPU that serving
/// requests leaves, instead of delaying every request's answer.
fn lower_priority() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    LOWERED.with(|lowered| {
        if !lowered.replace(true) {
            // SAFETY: setpriority(2) on this very thread (its kernel thread id);
            // failure leaves the priority as it was.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 10);
            }
        }
    });
}

/// A place in the hashing queue, given back when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(queued: &'a AtomicUsize, max: usize) -> Option<Self> {
        let before = queued.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(queued))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Checks a new password's length (in characters).
pub fn check_new(password: &str) -> Result<(), GatewayError> {
    if !common::password::acceptable(password) {
        return Err(GatewayError::BadRequest(format!(
            "The password must be {MIN_LEN} to {MAX_LEN} characters long."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_pass() {
        let h = Hasher::new(4).unwrap();
        let hash = h.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify(Some(hash.clone()), "correct horse battery")
            .await
            .unwrap());
        assert!(!h.verify(Some(hash), "correct horse batterx").await.unwrap());
        assert!(!h.verify(None, "medicalpro-dummy-password").await.unwrap());
        assert!(check_new("short").is_err());
        assert!(check_new(&"x".repeat(129)).is_err());
        assert!(check_new(&"é".repeat(12)).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_past_the_queue_is_shed_not_queued() {
        let h = Hasher::new(0).unwrap();
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let tasks: Vec<_> = (0..parallel * 4)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.hash("correct horse battery").await })
            })
            .collect();
        let mut shed = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(GatewayError::Overloaded)) {
                shed += 1;
            }
        }
        assert!(
            shed > 0,
            "with no queue, concurrent checks beyond the threads are shed"
        );
        assert!(
            h.hash("correct horse battery").await.is_ok(),
            "slots are given back"
        );
    }
}
