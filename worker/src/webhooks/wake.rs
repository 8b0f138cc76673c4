//! Which clinics of this worker's region have webhook subscriptions, and the
//! wake-up of their deliveries after a write. A write in a clinic without
//! subscriptions costs one set lookup.

use common::ClinicId;
use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::mpsc;

/// Shared by the handlers (which wake) and the deliverer (which listens).
#[derive(Debug)]
pub struct Hooks {
    subscribed: RwLock<HashSet<ClinicId>>,
    tx: mpsc::UnboundedSender<ClinicId>,
}

impl Hooks {
    /// The handle and the deliverer's end of its wake-ups.
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<ClinicId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let hooks = Arc::new(Self {
            subscribed: RwLock::new(HashSet::new()),
            tx,
        });
        (hooks, rx)
    }

    /// After a write in `clinic`: its deliveries start now if it has subscriptions.
    pub fn wake(&self, clinic: ClinicId) {
        let known = self
            .subscribed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&clinic);
        if known {
            let _ = self.tx.send(clinic);
        }
    }

    /// `clinic` has a subscription (made, changed or replayed here): delivered
    /// from now on, starting at once.
    pub fn subscribe(&self, clinic: ClinicId) {
        self.subscribed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(clinic);
        let _ = self.tx.send(clinic);
    }

    /// `clinic` has no subscription any more.
    pub fn forget(&self, clinic: ClinicId) {
        self.subscribed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&clinic);
    }

    /// Replaces the set with what the central database says (the sweep).
    pub fn replace(&self, clinics: HashSet<ClinicId>) {
        *self
            .subscribed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = clinics;
    }
}
