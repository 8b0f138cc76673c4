//! Bringing a clinic to `active` on its region's PostgreSQL server: its role
//! password (random, sealed with the master key in the central database, given to
//! PostgreSQL only as a SCRAM verifier), its role with session limits, its database
//! cloned from the region's migrated template, CONNECT for its role alone, its
//! first data key, then the `active` status. Every step checks before it acts, so
//! a provisioning cut short anywhere is completed by running it again. Shared by
//! the worker (registrations and its reconciler) and `medicalpro-admin
//! create-clinic`.

use crate::keystore::{self, KeyStoreError};
use common::crypto::KeyRing;
use common::ClinicId;
use migrations::provisioning;
use rand::RngCore;
use tokio_postgres::Client;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    KeyStore(#[from] KeyStoreError),
    #[error("clinic role password: {0}")]
    Integrity(String),
    #[error("the clinic template stayed busy")]
    TemplateBusy,
}

/// The clinic's names on its regional server.
#[derive(Clone, Debug)]
pub struct ClinicDb {
    pub clinic: ClinicId,
    pub db_name: String,
    pub db_role: String,
    /// The sealed role password already stored, if any.
    pub sealed_password: Option<Vec<u8>>,
}

/// Runs every step for `target` (see the module docs). `admin` is a connection to
/// the regional server's maintenance database as a role that may create roles and
/// databases; `clone_lock` serialises clones of the template within the process.
pub async fn provision(
    central: &Client,
    admin: &Client,
    ring: &KeyRing,
    target: &ClinicDb,
    clone_lock: &tokio::sync::Mutex<()>,
) -> Result<(), ProvisionError> {
    let password = role_password(central, ring, target).await?;
    provisioning::ensure_role(admin, &target.db_role, &password).await?;
    if !provisioning::database_exists(admin, &target.db_name).await? {
        let _guard = clone_lock.lock().await;
        if !provisioning::clone_template(admin, &target.db_name).await? {
            return Err(ProvisionError::TemplateBusy);
        }
    }
    provisioning::restrict_connect(admin, &target.db_name, &target.db_role).await?;
    // The clinic's first data key, wrapped by the master key (kept if it exists).
    keystore::load_or_create(central, ring, target.clinic).await?;
    central
        .execute(
            "UPDATE companies SET status = 'active', placement_version = placement_version + 1, updated_at = now() \
             WHERE id = $1 AND status = 'provisioning'",
            &[target.clinic.as_uuid()],
        )
        .await?;
    Ok(())
}

/// The clinic's role password: 256 random bits, generated and sealed into the
/// central database once, then always read back from there so retries agree on it.
pub async fn role_password(
    central: &Client,
    ring: &KeyRing,
    target: &ClinicDb,
) -> Result<Zeroizing<String>, ProvisionError> {
    let purpose = common::crypto::role_password_purpose(target.clinic);
    let sealed = match &target.sealed_password {
        Some(s) => s.clone(),
        None => {
            let mut raw = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(raw.as_mut());
            let hex = Zeroizing::new(hex::encode(raw.as_ref()));
            let fresh = ring.seal_secret(&purpose, hex.as_bytes());
            let row = central
                .query_one(
                    "UPDATE companies SET db_role_password = coalesce(db_role_password, $2) WHERE id = $1 RETURNING db_role_password",
                    &[target.clinic.as_uuid(), &fresh],
                )
                .await?;
            row.get(0)
        }
    };
    let plain = Zeroizing::new(
        ring.open_secret(&purpose, &sealed)
            .map_err(|e| ProvisionError::Integrity(e.to_string()))?,
    );
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| ProvisionError::Integrity("not UTF-8".into()))
}
