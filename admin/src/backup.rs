//! Backups of clinic databases with `pg_dump`, and the restore of one clinic.
//!
//! [`backup_region`] dumps every active or suspended clinic database of a region
//! (custom format, `jobs` at a time) into a directory, each first to a temporary
//! name and renamed once complete, and records every attempt in the central
//! `clinic_backups` table. Clinics with a successful backup newer than `fresh_for`
//! are skipped, so a run cut short is resumed by running it again.
//!
//! [`restore_clinic`] replaces one clinic's database with a dump: the clinic is
//! suspended (gateways stop sending it requests within a second), the dump is
//! restored into a new database, the current one is closed to connections, kept
//! under another name for the operator to drop, and the restored one takes its
//! name; then the clinic gets its previous status back.

use crate::config::AdminSettings;
use crate::db;
use crate::ops;
use anyhow::{bail, Context};
use common::config::DbSettings;
use common::ClinicId;
use migrations::{ident, literal};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::Client;
use uuid::Uuid;

/// One clinic backed up by a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackedUp {
    pub id: Uuid,
    pub file: PathBuf,
    pub size_bytes: u64,
}

/// What one [`backup_region`] run did.
#[derive(Clone, Debug, Default)]
pub struct BackupReport {
    pub done: Vec<BackedUp>,
    /// Clinics with a backup newer than the cut-off.
    pub skipped: usize,
    pub failed: Vec<(Uuid, String)>,
}

impl BackupReport {
    pub fn summary(&self) -> String {
        format!(
            "backed up {}, skipped {} (recent backup), failed {}",
            self.done.len(),
            self.skipped,
            self.failed.len()
        )
    }
}

/// Backs up the region's clinic databases into `dir` (see the module docs).
pub async fn backup_region(
    settings: &AdminSettings,
    region: &str,
    dir: &Path,
    jobs: usize,
    fresh_for: Duration,
    progress: bool,
) -> anyhow::Result<BackupReport> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let central = db::central(settings).await?;
    let fresh_secs = fresh_for.as_secs_f64();
    let rows = central
        .query(
            "SELECT c.id, c.db_name, EXISTS (SELECT 1 FROM clinic_backups b WHERE b.clinic_id = c.id \
                 AND b.status = 'success' AND b.finished_at > now() - make_interval(secs => $2)) \
             FROM companies c WHERE c.region = $1 AND c.status IN ('active', 'suspended') ORDER BY c.id",
            &[&region, &fresh_secs],
        )
        .await
        .context("listing the region's clinics")?;
    let mut report = BackupReport::default();
    let pending: Vec<(Uuid, String)> = rows
        .iter()
        .filter(|r| {
            let recent: bool = r.get(2);
            report.skipped += usize::from(recent);
            !recent
        })
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let bar = crate::runner::progress_bar(progress, region);
    let outcomes = crate::runner::run_bounded(pending, jobs, &bar, |(id, db_name)| {
        let (central, regional) = (settings.central.clone(), settings.regional.clone());
        let (region, dir) = (region.to_owned(), dir.to_owned());
        async move { backup_one(&central, &regional, &region, id, &db_name, &dir).await }
    })
    .await;
    for ((id, _), outcome) in outcomes {
        match outcome {
            Ok(done) => report.done.push(done),
            Err(e) => report.failed.push((id, format!("{e:#}"))),
        }
    }
    bar.finish_and_clear();
    report.done.sort_by_key(|d| d.id);
    Ok(report)
}

async fn backup_one(
    central: &DbSettings,
    regional: &DbSettings,
    region: &str,
    id: Uuid,
    db_name: &str,
    dir: &Path,
) -> anyhow::Result<BackedUp> {
    let central = db::connect(central).await?;
    let attempt: i64 = central
        .query_one(
            "INSERT INTO clinic_backups (clinic_id, region) VALUES ($1, $2) RETURNING id",
            &[&id, &region],
        )
        .await?
        .get(0);
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let file = dir.join(format!("{db_name}-{stamp}.dump"));
    let partial = dir.join(format!("{db_name}-{stamp}.dump.partial"));
    let result = async {
        run_tool(
            "pg_dump",
            regional,
            &[
                "--format=custom",
                "--dbname",
                db_name,
                "--file",
                &partial.to_string_lossy(),
            ],
        )
        .await?;
        tokio::fs::rename(&partial, &file).await?;
        Ok::<u64, anyhow::Error>(tokio::fs::metadata(&file).await?.len())
    }
    .await;
    match result {
        Ok(size) => {
            let size_sql = i64::try_from(size).unwrap_or(i64::MAX);
            central
                .execute(
                    "UPDATE clinic_backups SET status = 'success', finished_at = now(), location = $2, size_bytes = $3 WHERE id = $1",
                    &[&attempt, &file.to_string_lossy().as_ref(), &size_sql],
                )
                .await?;
            Ok(BackedUp {
                id,
                file,
                size_bytes: size,
            })
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            let message = format!("{e:#}");
            central
                .execute(
                    "UPDATE clinic_backups SET status = 'failed', finished_at = now(), error = $2 WHERE id = $1",
                    &[&attempt, &message],
                )
                .await?;
            Err(e)
        }
    }
}

/// Runs `pg_dump` or `pg_restore` against the regional server (password through
/// the environment, never the command line; TLS as the settings say, the server's
/// certificate verified like every other connection's).
async fn run_tool(tool: &str, server: &DbSettings, args: &[&str]) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(tool);
    for (name, value) in server.libpq_tls() {
        command.env(format!("PG{}", name.to_ascii_uppercase()), value);
    }
    let output = command
        .args(["--no-password", "--host", &server.host])
        .args([
            "--port",
            &server.port.to_string(),
            "--username",
            &server.user,
        ])
        .args(args)
        .env("PGPASSWORD", server.password.expose())
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {tool} (is the PostgreSQL client installed?)"))?;
    if !output.status.success() {
        bail!(
            "{tool} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// What [`restore_clinic`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub db_name: String,
    /// The replaced database, kept (closed to connections) until the operator drops it.
    pub previous_db: String,
}

/// Replaces a clinic's database with the dump in `file` (see the module docs).
/// `REGION_DB_*` must point to the clinic's region's server.
pub async fn restore_clinic(
    settings: &AdminSettings,
    clinic: ClinicId,
    file: &Path,
) -> anyhow::Result<Restored> {
    let keys = settings.audit_keys()?;
    if !tokio::fs::try_exists(file).await.unwrap_or(false) {
        bail!("{} does not exist", file.display());
    }
    let central = db::connect(&settings.central)
        .await
        .context("the central database")?;
    let row = central
        .query_opt(
            "SELECT db_name, db_role, status FROM companies WHERE id = $1",
            &[clinic.as_uuid()],
        )
        .await?
        .with_context(|| format!("there is no clinic {clinic}"))?;
    let (db_name, db_role, status): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    if status == "provisioning" {
        bail!("clinic {clinic} is still provisioning; there is nothing to restore into");
    }
    let simple = clinic.as_uuid().simple();
    let restoring = format!("mprestore_{simple}");
    let previous = format!("mpold_{simple}_{}", chrono::Utc::now().timestamp());
    let server = db::connect(&settings.regional)
        .await
        .context("the regional server")?;
    // A database left by an interrupted restore is started afresh (one statement
    // per call: neither may run inside a transaction block).
    for sql in [
        format!("DROP DATABASE IF EXISTS {}", ident(&restoring)),
        format!("CREATE DATABASE {} TEMPLATE template0", ident(&restoring)),
    ] {
        server
            .batch_execute(&sql)
            .await
            .context("creating the database to restore into")?;
    }
    run_tool(
        "pg_restore",
        &settings.regional,
        &[
            "--exit-on-error",
            "--single-transaction",
            "--dbname",
            &restoring,
            &file.to_string_lossy(),
        ],
    )
    .await?;
    server
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {r} FROM PUBLIC; GRANT CONNECT ON DATABASE {r} TO {role}",
            r = ident(&restoring),
            role = ident(&db_role)
        ))
        .await?;

    // The switch: no request reaches the clinic while its database is swapped.
    let suspended = status == "active"
        && ops::set_status_with(&central, keys, clinic, ops::Change::Suspend).await?;
    let swapped = swap(&server, &db_name, &restoring, &previous).await;
    if suspended {
        ops::set_status_with(&central, keys, clinic, ops::Change::Resume).await?;
    }
    swapped?;
    ops::record(&central, keys, clinic, "restore").await?;
    Ok(Restored {
        db_name,
        previous_db: previous,
    })
}

/// Closes `current` to connections, ends its sessions and renames it to `previous`,
/// then gives `restored` the name `current`.
async fn swap(
    server: &Client,
    current: &str,
    restored: &str,
    previous: &str,
) -> anyhow::Result<()> {
    server
        .batch_execute(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            ident(current)
        ))
        .await?;
    db::rename_closed(server, current, previous).await?;
    server
        .batch_execute(&format!(
            "ALTER DATABASE {} RENAME TO {}; COMMENT ON DATABASE {} IS {}",
            ident(restored),
            ident(current),
            ident(previous),
            literal(&format!(
                "replaced by a restore of {current}; drop when no longer needed"
            ))
        ))
        .await
        .context("renaming the restored database")?;
    Ok(())
}
