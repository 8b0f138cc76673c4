//! Embedded SQL migrations and the runner that applies them.
//!
//! Files live in `central/` and `clinic/`, are numbered `NNN_name.sql`, are compiled
//! into the binary, and each is applied once per database inside a transaction and
//! recorded in `schema_migrations` with its SHA-256. A recorded migration whose file
//! has since changed is refused rather than silently skipped.

pub mod provisioning;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One migration file.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

macro_rules! migration {
    ($dir:literal, $version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../", $dir, "/", $name, ".sql")),
        }
    };
}

/// The central database: companies and their placement, users, sessions, audit.
pub const CENTRAL: &[Migration] = &[
    migration!("central", 1, "001_central"),
    migration!("central", 2, "002_schema_versions"),
    migration!("central", 3, "003_audit_integrity"),
    migration!("central", 4, "004_clinic_data_keys"),
    migration!("central", 5, "005_clinic_backups"),
    migration!("central", 6, "006_relocation"),
    migration!("central", 7, "007_region_notify"),
    migration!("central", 8, "008_token_versions"),
    migration!("central", 9, "009_signup_and_throttle"),
    migration!("central", 10, "010_keyed_audit_chain"),
    migration!("central", 11, "011_service_roles"),
    migration!("central", 12, "012_staff_mfa"),
    migration!("central", 13, "013_password_reset"),
    migration!("central", 14, "014_api_clients"),
    migration!("central", 15, "015_webhook_clinics"),
    migration!("central", 16, "016_offboarding"),
];

/// Every clinic database (and the template they are cloned from).
pub const CLINIC: &[Migration] = &[
    migration!("clinic", 1, "001_patients"),
    migration!("clinic", 2, "002_practitioners"),
    migration!("clinic", 3, "003_categories"),
    migration!("clinic", 4, "004_product_services"),
    migration!("clinic", 5, "005_appointments"),
    migration!("clinic", 6, "006_documents"),
    migration!("clinic", 7, "007_document_actions"),
    migration!("clinic", 8, "008_consent_templates"),
    migration!("clinic", 9, "009_consents"),
    migration!("clinic", 10, "010_patient_erasure"),
    migration!("clinic", 11, "011_money_limits"),
    migration!("clinic", 12, "012_audit_record_ids"),
    migration!("clinic", 13, "013_sealed_notes_and_erasure"),
    migration!("clinic", 14, "014_patient_search"),
    migration!("clinic", 15, "015_clinic_day"),
    migration!("clinic", 16, "016_sync_changes"),
    migration!("clinic", 17, "017_patient_external_id"),
    migration!("clinic", 18, "018_webhooks"),
    migration!("clinic", 19, "019_attachments"),
];

/// The group role every clinic role belongs to; clinic tables are granted to it.
pub const CLINIC_APP_ROLE: &str = "medicalpro_clinic_app";

/// The database clinic databases are cloned from, on every regional server.
pub const CLINIC_TEMPLATE_DB: &str = "medicalpro_clinic_template";

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {version} ({name}) was applied with another checksum; refusing to continue"
    )]
    ChecksumMismatch { version: i32, name: &'static str },
    #[error("database error while migrating: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the database is at schema version {have}, this build needs {want}: run `medicalpro-admin migrate-central` first")]
    Behind { have: i32, want: i32 },
}

/// Applies every pending migration of `set`, holding an advisory lock so concurrent
/// runners on the same database wait for each other. Returns the version reached.
pub async fn apply(client: &mut Client, set: &[Migration]) -> Result<i32, MigrationError> {
    apply_to(client, set, i32::MAX).await
}

/// Like [`apply`], but only migrations of `set` whose version is at most `target`
/// (recorded ones are still checked against their checksum). Returns the version
/// reached: the highest version of `set` not above `target` (0 when none is).
pub async fn apply_to(
    client: &mut Client,
    set: &[Migration],
    target: i32,
) -> Result<i32, MigrationError> {
    client
        .batch_execute(
            "SELECT pg_advisory_lock(7261001);
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );",
        )
        .await?;
    let result = apply_locked(client, set, target).await;
    let unlock = client
        .batch_execute("SELECT pg_advisory_unlock(7261001)")
        .await;
    let version = result?;
    unlock?;
    Ok(version)
}

/// The version a database reaches once every migration of `set` is applied (0 for
/// an empty set).
pub fn latest_version(set: &[Migration]) -> i32 {
    set.last().map_or(0, |m| m.version)
}

async fn apply_locked(
    client: &mut Client,
    set: &[Migration],
    target: i32,
) -> Result<i32, MigrationError> {
    let rows = client
        .query("SELECT version, checksum FROM schema_migrations", &[])
        .await?;
    let applied: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut reached = 0;
    for m in set.iter().filter(|m| m.version <= target) {
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if *sum == m.checksum() => {}
            Some(_) => {
                return Err(MigrationError::ChecksumMismatch {
                    version: m.version,
                    name: m.name,
                })
            }
            None => {
                let tx = client.transaction().await?;
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &m.checksum()],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(version = m.version, name = m.name, "migration applied");
            }
        }
        reached = m.version;
    }
    Ok(reached)
}

/// Checks that a database has every migration of `set` (services never migrate
/// the central database themselves: the admin tool does, as its owner). Returns
/// the version found.
pub async fn require_current(client: &Client, set: &[Migration]) -> Result<i32, MigrationError> {
    let have = current_version(client).await?;
    let want = latest_version(set);
    if have < want {
        return Err(MigrationError::Behind { have, want });
    }
    Ok(have)
}

/// The highest version recorded in a database (0 when none).
pub async fn current_version(client: &Client) -> Result<i32, MigrationError> {
    let row = client
        .query_opt(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await;
    match row {
        Ok(Some(r)) => Ok(r.get(0)),
        Ok(None) => Ok(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_sequential_and_named_after_their_file() {
        for set in [CENTRAL, CLINIC] {
            for (i, m) in set.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1);
                assert!(m.name.starts_with(&format!("{:03}_", m.version)));
                assert_eq!(m.checksum().len(), 64);
            }
        }
    }

    #[test]
    fn latest_is_the_last_version() {
        assert_eq!(latest_version(&[]), 0);
        assert_eq!(latest_version(CENTRAL), CENTRAL.len() as i32);
        assert_eq!(latest_version(CLINIC), CLINIC.len() as i32);
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("o'k"), "'o''k'");
    }
}
