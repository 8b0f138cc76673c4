//! Where the registry learns about clinics: a clinic's placement (region, status,
//! database, role and its sealed password, newest data-key version), and the
//! opening of its pool with its data keys. [`Directory`] is the registry's whole
//! view of the central database; [`Central`] is that database.

use crate::config::PoolSettings;
use crate::error::WorkerError;
use crate::keys::{ClinicKeyCache, KeySource};
use common::config::DbSettings;
use common::crypto::KeyRing;
use common::ClinicId;
use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;
use std::sync::Arc;

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

/// A clinic's pool (no connection opened yet) and its loaded data keys.
pub struct Opened {
    pub pool: Pool,
    pub keys: Arc<ClinicKeyCache>,
}

/// What the registry asks of the central database.
pub trait Directory: Send + Sync {
    /// A clinic's placement, or `None` if the clinic is unknown.
    fn lookup(&self, clinic: ClinicId) -> BoxFuture<'_, Result<Option<ClinicRecord>, WorkerError>>;
    /// Opens the pool of a clinic placed here (connecting as its own role) and
    /// loads its data keys.
    fn open(
        &self,
        clinic: ClinicId,
        record: ClinicRecord,
    ) -> BoxFuture<'_, Result<Opened, WorkerError>>;
}

/// The central database as the [`Directory`] of a regional server's clinics.
pub struct Central {
    central: Pool,
    server: DbSettings,
    keys: Arc<KeyRing>,
    key_source: Arc<KeySource>,
    settings: PoolSettings,
}

impl Central {
    pub fn new(
        central: Pool,
        server: DbSettings,
        keys: Arc<KeyRing>,
        settings: PoolSettings,
    ) -> Self {
        Self {
            key_source: Arc::new(KeySource::new(central.clone(), keys.clone())),
            central,
            server,
            keys,
            settings,
        }
    }

    async fn lookup(&self, clinic: ClinicId) -> Result<Option<ClinicRecord>, WorkerError> {
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

    async fn open(&self, clinic: ClinicId, record: ClinicRecord) -> Result<Opened, WorkerError> {
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
        Ok(Opened { pool, keys })
    }
}

impl Directory for Central {
    fn lookup(&self, clinic: ClinicId) -> BoxFuture<'_, Result<Option<ClinicRecord>, WorkerError>> {
        Box::pin(Central::lookup(self, clinic))
    }

    fn open(
        &self,
        clinic: ClinicId,
        record: ClinicRecord,
    ) -> BoxFuture<'_, Result<Opened, WorkerError>> {
        Box::pin(Central::open(self, clinic, record))
    }
}
