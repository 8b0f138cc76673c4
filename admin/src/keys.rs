//! Key maintenance, both resumable and safe to run while the fleet serves traffic.
//!
//! - [`rewrap`]: after a new master key is configured (`MASTER_KEY`/`MASTER_KEY_ID`,
//!   the old one in `MASTER_KEYS_RETIRED`), re-seals every clinic data key, backup
//!   key and role password still sealed under another master key id. Each value is
//!   swapped only if unchanged since it was read, so a run cut short is finished by
//!   running again; once a run reports nothing left, the old master key can go.
//! - [`rotate_data_keys`]: gives each clinic of a region a new data-key version,
//!   re-encrypts every sealed value of its database under it, then marks the older
//!   versions retired. A clinic whose newest version has not-yet-retired
//!   predecessors is mid-rotation: the run resumes it instead of adding a version.
//!   Workers seal with the new version from their next placement check (≤ 30 s) or
//!   as soon as they read a value sealed with it; a value a worker sealed with the
//!   old version meanwhile stays readable (retired versions are kept) and is
//!   re-encrypted by the next run. Fields sealed since a migration that held them in
//!   plaintext before (clinical notes) have their plaintext values sealed too.
//! - With `shred_after`, retired versions retired at least that long ago and used by
//!   no stored value are deleted: from then on nothing can open data sealed with them.

use crate::config::AdminSettings;
use crate::db;
use anyhow::{bail, Context};
use common::crypto::{
    data_key_purpose, role_password_purpose, sealed_key_id, ClinicKeys, FieldContext, KeyRing,
};
use common::resource::{Field, Resource};
use common::sealed_stream::backup_key_purpose;
use common::ClinicId;
use pgconn::keystore;
use std::time::Duration;
use tokio_postgres::Client;
use uuid::Uuid;

/// Rows re-encrypted per statement batch.
const BATCH: i64 = 500;

/// What one [`rewrap`] run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub data_keys: usize,
    pub role_passwords: usize,
    /// Clinic backup keys (`clinic_backup_keys`).
    pub backup_keys: usize,
    /// Values already under the current master key.
    pub current: usize,
    /// Values that could not be opened (a master key missing from the ring).
    pub failed: Vec<String>,
}

impl RewrapReport {
    pub fn summary(&self) -> String {
        format!(
            "re-wrapped {} data keys, {} role passwords and {} backup keys, {} already current, {} failed",
            self.data_keys,
            self.role_passwords,
            self.backup_keys,
            self.current,
            self.failed.len()
        )
    }
}

/// Re-seals every wrapped data key and role password under the current master key.
pub async fn rewrap(
    settings: &AdminSettings,
    ring: &KeyRing,
    progress: bool,
) -> anyhow::Result<RewrapReport> {
    let central = db::central(settings).await?;
    let mut report = RewrapReport::default();
    let keys = central
        .query(
            "SELECT clinic_id, version, wrapped FROM clinic_data_keys ORDER BY clinic_id, version",
            &[],
        )
        .await
        .context("reading clinic data keys")?;
    let passwords = central
        .query(
            "SELECT id, db_role_password FROM companies WHERE db_role_password IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .context("reading clinic role passwords")?;
    let backup_keys = central
        .query(
            "SELECT clinic_id, wrapped FROM clinic_backup_keys ORDER BY clinic_id",
            &[],
        )
        .await
        .context("reading clinic backup keys")?;
    let bar = crate::runner::progress_bar(progress, "rewrap");
    bar.set_length((keys.len() + passwords.len() + backup_keys.len()) as u64);
    for row in &keys {
        let (clinic, version, stored): (Uuid, i32, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        let purpose = data_key_purpose(ClinicId::from_uuid(clinic), version.unsigned_abs());
        match ring.reseal_secret(&purpose, &stored) {
            Ok(None) => report.current += 1,
            Ok(Some(fresh)) => {
                central
                    .execute(
                        "UPDATE clinic_data_keys SET wrapped = $4 \
                         WHERE clinic_id = $1 AND version = $2 AND wrapped = $3",
                        &[&clinic, &version, &stored, &fresh],
                    )
                    .await
                    .context("storing a re-wrapped data key")?;
                report.data_keys += 1;
            }
            Err(e) => report
                .failed
                .push(format!("data key v{version} of clinic {clinic}: {e}")),
        }
        bar.inc(1);
    }
    for row in &passwords {
        let (clinic, stored): (Uuid, Vec<u8>) = (row.get(0), row.get(1));
        let purpose = role_password_purpose(ClinicId::from_uuid(clinic));
        match ring.reseal_secret(&purpose, &stored) {
            Ok(None) => report.current += 1,
            Ok(Some(fresh)) => {
                central
                    .execute(
                        "UPDATE companies SET db_role_password = $3 \
                         WHERE id = $1 AND db_role_password = $2",
                        &[&clinic, &stored, &fresh],
                    )
                    .await
                    .context("storing a re-sealed role password")?;
                report.role_passwords += 1;
            }
            Err(e) => report
                .failed
                .push(format!("role password of clinic {clinic}: {e}")),
        }
        bar.inc(1);
    }
    for row in &backup_keys {
        let (clinic, stored): (Uuid, Vec<u8>) = (row.get(0), row.get(1));
        let purpose = backup_key_purpose(ClinicId::from_uuid(clinic));
        match ring.reseal_secret(&purpose, &stored) {
            Ok(None) => report.current += 1,
            Ok(Some(fresh)) => {
                central
                    .execute(
                        "UPDATE clinic_backup_keys SET wrapped = $3 \
                         WHERE clinic_id = $1 AND wrapped = $2",
                        &[&clinic, &stored, &fresh],
                    )
                    .await
                    .context("storing a re-wrapped backup key")?;
                report.backup_keys += 1;
            }
            Err(e) => report
                .failed
                .push(format!("backup key of clinic {clinic}: {e}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

/// One clinic's outcome in a [`rotate_data_keys`] run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicRotation {
    pub id: Uuid,
    /// The version every value is sealed with after the run.
    pub version: u32,
    /// Values re-encrypted by this run.
    pub reencrypted: u64,
    /// Versions deleted by this run.
    pub shredded: Vec<u32>,
}

/// What one [`rotate_data_keys`] run did.
#[derive(Clone, Debug, Default)]
pub struct RotationReport {
    pub rotated: Vec<ClinicRotation>,
    pub failed: Vec<(Uuid, String)>,
}

impl RotationReport {
    pub fn summary(&self) -> String {
        let values: u64 = self.rotated.iter().map(|r| r.reencrypted).sum();
        format!(
            "rotated {} clinics ({values} values re-encrypted), failed {}",
            self.rotated.len(),
            self.failed.len()
        )
    }
}

/// Which clinics a rotation covers.
#[derive(Clone, Debug)]
pub enum Scope {
    Region(String),
    Clinic(ClinicId),
}

/// Rotates the data keys of the clinics in `scope` (see the module docs).
pub async fn rotate_data_keys(
    settings: &AdminSettings,
    ring: &KeyRing,
    scope: &Scope,
    shred_after: Option<Duration>,
    progress: bool,
) -> anyhow::Result<RotationReport> {
    let central = db::central(settings).await?;
    let (region, clinic) = match scope {
        Scope::Region(r) => (Some(r.as_str()), None),
        Scope::Clinic(c) => (None, Some(*c.as_uuid())),
    };
    let clinics: Vec<(Uuid, String)> = central
        .query(
            "SELECT id, db_name FROM companies \
             WHERE status IN ('active', 'suspended') \
               AND ($1::text IS NULL OR region = $1) AND ($2::uuid IS NULL OR id = $2) \
             ORDER BY id",
            &[&region, &clinic],
        )
        .await
        .context("listing clinics")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if let Scope::Clinic(c) = scope {
        if clinics.is_empty() {
            bail!("clinic {c} is not active or suspended (or does not exist)");
        }
    }
    let bar = crate::runner::progress_bar(progress, region.unwrap_or("rotate"));
    bar.set_length(clinics.len() as u64);
    let mut report = RotationReport::default();
    for (id, db_name) in clinics {
        bar.set_message(id.to_string());
        match rotate_clinic(
            settings,
            &central,
            ring,
            ClinicId::from_uuid(id),
            &db_name,
            shred_after,
        )
        .await
        {
            Ok(done) => report.rotated.push(done),
            Err(e) => report.failed.push((id, format!("{e:#}"))),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

async fn rotate_clinic(
    settings: &AdminSettings,
    central: &Client,
    ring: &KeyRing,
    clinic: ClinicId,
    db_name: &str,
    shred_after: Option<Duration>,
) -> anyhow::Result<ClinicRotation> {
    let versions = keystore::load_versions(central, ring, clinic).await?;
    let retired: Vec<u32> = central
        .query(
            "SELECT version FROM clinic_data_keys WHERE clinic_id = $1 AND retired_at IS NOT NULL",
            &[clinic.as_uuid()],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, i32>(0).unsigned_abs())
        .collect();
    let Some((newest, material)) = versions.last().cloned() else {
        bail!("clinic has no data key yet (its worker creates one when it first serves it)");
    };
    let in_progress = versions
        .iter()
        .any(|(v, _)| *v < newest && !retired.contains(v));
    let target = if in_progress {
        newest
    } else {
        let next = newest + 1;
        keystore::insert_version(central, ring, clinic, next, &material.rotated()).await?;
        next
    };
    // Reload so a version inserted concurrently by another run is the one used.
    let versions = keystore::load_versions(central, ring, clinic).await?;
    let keys = ClinicKeys::new(clinic, versions)
        .filter(|k| k.current_version() == target)
        .context("another rotation of this clinic is running")?;

    let clinic_db = db::connect(&settings.regional.with_dbname(db_name)).await?;
    let mut reencrypted = 0;
    for r in common::resource::with_sealed_fields() {
        for f in r.fields.iter().filter(|f| f.encrypted) {
            reencrypted += reencrypt_column(&clinic_db, &keys, r, f).await?;
            if f.legacy_plaintext {
                reencrypted += seal_legacy(&clinic_db, &keys, r, f).await?;
            }
        }
    }
    let target_sql = i32::try_from(target).unwrap_or(i32::MAX);
    central
        .execute(
            "UPDATE clinic_data_keys SET retired_at = now() \
             WHERE clinic_id = $1 AND version < $2 AND retired_at IS NULL",
            &[clinic.as_uuid(), &target_sql],
        )
        .await?;
    crate::ops::record(central, settings.audit_keys()?, clinic, "rotate_keys").await?;
    let mut shredded = Vec::new();
    if let Some(after) = shred_after {
        let secs = after.as_secs_f64();
        let candidates: Vec<i32> = central
            .query(
                "SELECT version FROM clinic_data_keys WHERE clinic_id = $1 AND retired_at IS NOT NULL \
                 AND retired_at <= now() - make_interval(secs => $2) ORDER BY version",
                &[clinic.as_uuid(), &secs],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for version in candidates {
            if in_use(&clinic_db, version).await? {
                continue;
            }
            central
                .execute(
                    "DELETE FROM clinic_data_keys WHERE clinic_id = $1 AND version = $2",
                    &[clinic.as_uuid(), &version],
                )
                .await?;
            shredded.push(version.unsigned_abs());
        }
    }
    Ok(ClinicRotation {
        id: *clinic.as_uuid(),
        version: target,
        reencrypted,
        shredded,
    })
}

/// The SQL test for "sealed under data-key version `$n`" on a column: bytes 2–5 of
/// the stored value are the version, big-endian.
fn version_is(column: &str, param: &str) -> String {
    format!("substring({column} from 2 for 4) = int4send({param}::int)")
}

/// Re-encrypts one column's values not yet under the keys' current version, in
/// batches; each row is swapped only if unchanged since it was read.
async fn reencrypt_column(
    db: &Client,
    keys: &ClinicKeys,
    r: &Resource,
    f: &Field,
) -> anyhow::Result<u64> {
    let column = f.stored_column();
    let target = i32::try_from(keys.current_version()).unwrap_or(i32::MAX);
    let select = format!(
        "SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL AND NOT ({cond}) \
         ORDER BY id LIMIT {BATCH}",
        table = r.table,
        cond = version_is(&column, "$1"),
    );
    let update = format!(
        "UPDATE {table} SET {column} = $3 WHERE id = $1 AND {column} = $2",
        table = r.table
    );
    let mut done = 0;
    loop {
        let rows = db
            .query(&select, &[&target])
            .await
            .with_context(|| format!("reading {}.{column}", r.table))?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let (id, stored): (Uuid, Vec<u8>) = (row.get(0), row.get(1));
            let ctx = FieldContext {
                clinic: keys.clinic(),
                table: r.table,
                row: &id,
                column: f.name,
            };
            let plain = match keys.open_field(&ctx, &stored) {
                Ok(p) => p,
                Err(e) => {
                    bail!(
                        "{}.{column} of row {id} (sealed with version {:?}) cannot be opened: {e}",
                        r.table,
                        sealed_key_id(&stored).ok()
                    );
                }
            };
            let fresh = keys.seal_field(&ctx, &plain);
            let n = db
                .execute(&update, &[&id, &stored, &fresh])
                .await
                .with_context(|| format!("writing {}.{column}", r.table))?;
            // 0 rows: changed since read. The next batch reads the new value again
            // unless the worker already sealed it under the current version.
            done += n;
        }
    }
    Ok(done)
}

/// Seals the values a field held in plaintext before it was sealed (`<name>` →
/// `<name>_enc`), in batches; each row is swapped only if unchanged since read.
async fn seal_legacy(
    db: &Client,
    keys: &ClinicKeys,
    r: &Resource,
    f: &Field,
) -> anyhow::Result<u64> {
    let (plain_col, sealed_col) = (f.name, f.stored_column());
    let table = r.table;
    db.execute(
        &format!("UPDATE {table} SET {plain_col} = NULL WHERE {plain_col} IS NOT NULL AND {sealed_col} IS NOT NULL"),
        &[],
    )
    .await
    .with_context(|| format!("clearing {table}.{plain_col}"))?;
    let select = format!(
        "SELECT id, {plain_col} FROM {table} WHERE {plain_col} IS NOT NULL AND {sealed_col} IS NULL ORDER BY id LIMIT {BATCH}"
    );
    let update = format!(
        "UPDATE {table} SET {sealed_col} = $3, {plain_col} = NULL \
         WHERE id = $1 AND {plain_col} = $2 AND {sealed_col} IS NULL"
    );
    let mut done = 0;
    loop {
        let rows = db
            .query(&select, &[])
            .await
            .with_context(|| format!("reading {table}.{plain_col}"))?;
        if rows.is_empty() {
            break;
        }
        let mut changed = 0;
        for row in rows {
            let (id, plain): (Uuid, String) = (row.get(0), row.get(1));
            let ctx = FieldContext {
                clinic: keys.clinic(),
                table,
                row: &id,
                column: f.name,
            };
            let sealed = keys.seal_field(&ctx, plain.as_bytes());
            changed += db
                .execute(&update, &[&id, &plain, &sealed])
                .await
                .with_context(|| format!("sealing {table}.{plain_col}"))?;
        }
        done += changed;
        if changed == 0 {
            // Every row read changed meanwhile (sealed by a worker); read again.
            tokio::task::yield_now().await;
        }
    }
    Ok(done)
}

/// Whether any stored value is sealed under `version`.
async fn in_use(db: &Client, version: i32) -> anyhow::Result<bool> {
    for r in common::resource::with_sealed_fields() {
        for f in r.fields.iter().filter(|f| f.encrypted) {
            let column = f.stored_column();
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE {column} IS NOT NULL AND {})",
                r.table,
                version_is(&column, "$1")
            );
            if db.query_one(&sql, &[&version]).await?.get::<_, bool>(0) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
