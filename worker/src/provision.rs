//! Provisioning: a clinic's own role and database, cloned from the region's migrated
//! template. Every step checks before it acts, so a provisioning cut short anywhere
//! is completed by running it again — by a retried registration or by the worker's
//! reconciler at start-up.

use crate::error::WorkerError;
use crate::registry::Registry;
use common::crypto::KeyRing;
use common::metric_names as m;
use common::ClinicId;
use deadpool_postgres::Pool;
use migrations::{ident, CLINIC_APP_ROLE, CLINIC_TEMPLATE_DB};
use std::sync::Arc;
use std::time::Instant;
use tokio_postgres::error::SqlState;

pub struct Provisioner {
    registry: Arc<Registry>,
    /// The regional server's maintenance database, as a role that may create roles
    /// and databases.
    admin: Pool,
    keys: Arc<KeyRing>,
    /// `CREATE DATABASE … TEMPLATE` needs the template to itself: one at a time here.
    clone_lock: tokio::sync::Mutex<()>,
}

fn ignore(e: tokio_postgres::Error, benign: &[SqlState]) -> Result<(), WorkerError> {
    match e.code() {
        Some(code) if benign.contains(code) => Ok(()),
        _ => Err(WorkerError::from_db(e)),
    }
}

/// Makes the region ready: the clinic group role and the migrated template.
pub async fn prepare_region(
    admin: &Pool,
    template: &common::config::DbSettings,
) -> Result<i32, WorkerError> {
    let client = admin.get().await?;
    if let Err(e) = client
        .batch_execute(&format!("CREATE ROLE {} NOLOGIN", ident(CLINIC_APP_ROLE)))
        .await
    {
        ignore(e, &[SqlState::DUPLICATE_OBJECT, SqlState::UNIQUE_VIOLATION])?;
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&CLINIC_TEMPLATE_DB],
        )
        .await
        .map_err(WorkerError::from_db)?
        .is_some();
    if !exists {
        if let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE {}", ident(CLINIC_TEMPLATE_DB)))
            .await
        {
            ignore(
                e,
                &[SqlState::DUPLICATE_DATABASE, SqlState::UNIQUE_VIOLATION],
            )?;
        }
    }
    // Clinic roles may connect to their own database only: not to the template and
    // not to the server's maintenance databases either.
    client
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {} FROM PUBLIC; \
             GRANT CONNECT ON DATABASE postgres TO CURRENT_USER; \
             REVOKE CONNECT ON DATABASE postgres FROM PUBLIC; \
             REVOKE CONNECT ON DATABASE template1 FROM PUBLIC",
            ident(CLINIC_TEMPLATE_DB)
        ))
        .await
        .map_err(WorkerError::from_db)?;
    drop(client);
    // Migrate the template on a connection of its own, closed before returning so
    // clones are not blocked by it.
    let mut conn = pgconn::connect(
        &template.with_dbname(CLINIC_TEMPLATE_DB),
        "medicalpro-migrate",
    )
    .await
    .map_err(WorkerError::from_db)?;
    let version = migrations::apply(&mut conn, migrations::CLINIC)
        .await
        .map_err(|e| WorkerError::Internal(e.to_string()))?;
    drop(conn);
    Ok(version)
}

impl Provisioner {
    pub fn new(registry: Arc<Registry>, admin: Pool, keys: Arc<KeyRing>) -> Self {
        Self {
            registry,
            admin,
            keys,
            clone_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Brings a clinic to `active`: sealed role password, role, database, grants.
    pub async fn provision(&self, clinic: ClinicId) -> Result<(), WorkerError> {
        let started = Instant::now();
        let result = self.provision_steps(clinic).await;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        metrics::counter!(m::PROVISIONING, "outcome" => outcome).increment(1);
        metrics::histogram!(m::PROVISIONING_DURATION).record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::error!(%clinic, error = %e, "provisioning failed");
        }
        result
    }

    async fn provision_steps(&self, clinic: ClinicId) -> Result<(), WorkerError> {
        let record = self
            .registry
            .lookup(clinic)
            .await?
            .ok_or(WorkerError::ClinicUnknown)?;
        if record.region != self.registry.region() {
            return Err(WorkerError::Misrouted(record.region));
        }
        if matches!(record.status.as_str(), "suspended" | "deleted") {
            return Err(WorkerError::ClinicInactive(record.status));
        }
        let admin = self.admin.get().await?;
        let central = self.registry.central().get().await?;
        let target = pgconn::provision::ClinicDb {
            clinic,
            db_name: record.db_name,
            db_role: record.db_role,
            sealed_password: record.sealed_password,
        };
        pgconn::provision::provision(&central, &admin, &self.keys, &target, &self.clone_lock)
            .await
            .map_err(|e| match e {
                pgconn::provision::ProvisionError::Db(e) => WorkerError::from_db(e),
                pgconn::provision::ProvisionError::KeyStore(e) => e.into(),
                pgconn::provision::ProvisionError::Integrity(e) => {
                    WorkerError::Integrity(format!("clinic role password: {e}"))
                }
                pgconn::provision::ProvisionError::TemplateBusy => {
                    WorkerError::Unavailable("the clinic template stayed busy".into())
                }
            })?;
        tracing::info!(%clinic, "clinic provisioned");
        Ok(())
    }

    /// Completes every provisioning of this region that was cut short.
    pub async fn reconcile(&self) -> Result<usize, WorkerError> {
        let central = self.registry.central().get().await?;
        let rows = central
            .query(
                "SELECT id FROM companies WHERE region = $1 AND status = 'provisioning'",
                &[&self.registry.region()],
            )
            .await
            .map_err(WorkerError::from_db)?;
        drop(central);
        let mut done = 0;
        for row in rows {
            let clinic = ClinicId::from_uuid(row.get(0));
            if self.provision(clinic).await.is_ok() {
                done += 1;
            }
        }
        Ok(done)
    }
}
