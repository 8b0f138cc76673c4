//! The central database's wrapped clinic data keys (`clinic_data_keys`): the worker
//! loads them (creating a clinic's first one), the admin tool adds, retires and
//! re-wraps versions. Unwrapping and wrapping happen here, with the master
//! [`KeyRing`]; nothing in the clear is ever written.

use common::crypto::{ClinicKeys, CryptoError, DataKeyMaterial, KeyRing};
use common::ClinicId;
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("central database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("data key version {version} of clinic {clinic}: {source}")]
    Unwrap {
        clinic: ClinicId,
        version: u32,
        source: CryptoError,
    },
}

/// Every stored version of a clinic's data key, unwrapped, oldest first.
pub async fn load_versions(
    client: &Client,
    ring: &KeyRing,
    clinic: ClinicId,
) -> Result<Vec<(u32, DataKeyMaterial)>, KeyStoreError> {
    let rows = client
        .query(
            "SELECT version, wrapped FROM clinic_data_keys WHERE clinic_id = $1 ORDER BY version",
            &[clinic.as_uuid()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let version = row.get::<_, i32>(0).unsigned_abs();
            let wrapped: Vec<u8> = row.get(1);
            ring.unwrap_data_key(clinic, version, &wrapped)
                .map(|m| (version, m))
                .map_err(|source| KeyStoreError::Unwrap {
                    clinic,
                    version,
                    source,
                })
        })
        .collect()
}

/// Stores a version unless it exists; `true` when this call stored it.
pub async fn insert_version(
    client: &Client,
    ring: &KeyRing,
    clinic: ClinicId,
    version: u32,
    material: &DataKeyMaterial,
) -> Result<bool, KeyStoreError> {
    let wrapped = ring.wrap_data_key(clinic, version, material);
    let version = i32::try_from(version).unwrap_or(i32::MAX);
    let n = client
        .execute(
            "INSERT INTO clinic_data_keys (clinic_id, version, wrapped) VALUES ($1, $2, $3) \
             ON CONFLICT (clinic_id, version) DO NOTHING",
            &[clinic.as_uuid(), &version, &wrapped],
        )
        .await?;
    Ok(n == 1)
}

/// The clinic's keys, creating its first version when it has none (idempotent: two
/// callers racing agree on the stored one).
pub async fn load_or_create(
    client: &Client,
    ring: &KeyRing,
    clinic: ClinicId,
) -> Result<ClinicKeys, KeyStoreError> {
    if let Some(keys) = ClinicKeys::new(clinic, load_versions(client, ring, clinic).await?) {
        return Ok(keys);
    }
    insert_version(client, ring, clinic, 1, &DataKeyMaterial::generate()).await?;
    let versions = load_versions(client, ring, clinic).await?;
    ClinicKeys::new(clinic, versions).ok_or(KeyStoreError::Unwrap {
        clinic,
        version: 1,
        source: CryptoError::UnknownKey(1),
    })
}

/// The newest version stored for a clinic (0: none), for cheap staleness checks.
pub async fn newest_version(client: &Client, clinic: ClinicId) -> Result<u32, KeyStoreError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM clinic_data_keys WHERE clinic_id = $1",
            &[clinic.as_uuid()],
        )
        .await?;
    Ok(row.get::<_, i32>(0).unsigned_abs())
}
