//! A clinic's data keys as the worker holds them: loaded (or created) with the
//! clinic's pool, replaced when the central database has a newer version, and
//! reloaded on demand when a stored value names a version not loaded yet (a
//! rotation that started since). Sealing always uses the newest loaded version.

use crate::error::WorkerError;
use common::crypto::{ClinicKeys, KeyRing};
use common::ClinicId;
use deadpool_postgres::Pool;
use pgconn::keystore::{self, KeyStoreError};
use std::sync::{Arc, RwLock};

impl From<KeyStoreError> for WorkerError {
    fn from(e: KeyStoreError) -> Self {
        match e {
            KeyStoreError::Db(db) => WorkerError::from_db(db),
            unwrap @ KeyStoreError::Unwrap { .. } => WorkerError::Integrity(unwrap.to_string()),
        }
    }
}

/// Where data keys come from: the central table, unwrapped with the master key.
pub struct KeySource {
    central: Pool,
    ring: Arc<KeyRing>,
}

impl KeySource {
    pub fn new(central: Pool, ring: Arc<KeyRing>) -> Self {
        Self { central, ring }
    }

    async fn load(&self, clinic: ClinicId) -> Result<ClinicKeys, WorkerError> {
        let client = self.central.get().await?;
        Ok(keystore::load_or_create(&client, &self.ring, clinic).await?)
    }
}

/// One clinic's loaded keys.
pub struct ClinicKeyCache {
    clinic: ClinicId,
    source: Arc<KeySource>,
    keys: RwLock<Arc<ClinicKeys>>,
}

impl ClinicKeyCache {
    /// Loads the clinic's keys, creating its first version if it has none.
    pub async fn load(source: Arc<KeySource>, clinic: ClinicId) -> Result<Self, WorkerError> {
        let keys = source.load(clinic).await?;
        Ok(Self::new(source, clinic, keys))
    }

    /// The clinic's keys as already loaded (reloaded from `source` when needed).
    pub fn new(source: Arc<KeySource>, clinic: ClinicId, keys: ClinicKeys) -> Self {
        Self {
            clinic,
            source,
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// The keys as loaded now: what new values are sealed with.
    pub fn current(&self) -> Arc<ClinicKeys> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Keys that open every version in `versions`, reloading once if one is missing.
    pub async fn covering(
        &self,
        versions: impl IntoIterator<Item = u32>,
    ) -> Result<Arc<ClinicKeys>, WorkerError> {
        let keys = self.current();
        if versions.into_iter().all(|v| keys.has_version(v)) {
            return Ok(keys);
        }
        self.reload().await
    }

    /// Reloads from the central database (after a rotation added a version).
    pub async fn reload(&self) -> Result<Arc<ClinicKeys>, WorkerError> {
        let fresh = Arc::new(self.source.load(self.clinic).await?);
        match self.keys.write() {
            Ok(mut k) => *k = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        tracing::info!(clinic = %self.clinic, version = fresh.current_version(), "clinic data keys reloaded");
        Ok(fresh)
    }
}
