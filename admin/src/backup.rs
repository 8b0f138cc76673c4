//! Backups of clinic databases with `pg_dump`, and the restore of one clinic.
//!
//! [`backup_region`] dumps every active or suspended clinic database of a region
//! (custom format, `jobs` at a time) into a directory, each first to a temporary
//! name and renamed once complete, and records every attempt in the central
//! `clinic_backups` table. Clinics with a successful backup newer than `fresh_for`
//! are skipped, so a run cut short is resumed by running it again.
//!
//! Every dump is sealed as it is written ([`common::sealed_stream`]: AES-256-GCM
//! in 1 MiB chunks) with the clinic's own backup key, kept wrapped by the master
//! key in the central `clinic_backup_keys` table and created with the clinic's
//! first backup; no plaintext dump touches the disk. Deleting that key (as
//! `offboard` does) makes every copy of the clinic's backups unreadable, wherever
//! they were copied to.
//!
//! [`restore_clinic`] replaces one clinic's database with a dump: the clinic is
//! suspended (gateways stop sending it requests within a second), the dump is
//! restored into a new database, the current one is closed to connections, kept
//! under another name for the operator to drop, and the restored one takes its
//! name; then the clinic gets its previous status back. The dump is opened with
//! the clinic's backup key and streamed into `pg_restore`; a dump that fails its
//! integrity check stops the restore before anything is swapped. Dumps written
//! before backups were sealed (plain `pg_dump` files) are still restored.

use crate::config::AdminSettings;
use crate::db;
use crate::ops;
use anyhow::{bail, Context};
use common::config::DbSettings;
use common::crypto::KeyRing;
use common::sealed_stream::{BackupKey, Opener, Sealer, CHUNK, FRAME_HEAD_LEN, HEADER_LEN};
use common::ClinicId;
use migrations::{ident, literal};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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
    ring: &KeyRing,
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
    // Each clinic's backup key, created with its first backup.
    let mut keyed = Vec::with_capacity(pending.len());
    for (id, db_name) in pending {
        match backup_key(&central, ring, ClinicId::from_uuid(id)).await {
            Ok(key) => keyed.push((id, db_name, std::sync::Arc::new(key))),
            Err(e) => report.failed.push((id, format!("{e:#}"))),
        }
    }
    let outcomes = crate::runner::run_bounded(keyed, jobs, &bar, |(id, db_name, key)| {
        let (central, regional) = (settings.central.clone(), settings.regional.clone());
        let (region, dir) = (region.to_owned(), dir.to_owned());
        async move { backup_one(&central, &regional, &key, &region, id, &db_name, &dir).await }
    })
    .await;
    for ((id, _, _), outcome) in outcomes {
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
    key: &BackupKey,
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
        dump_sealed(regional, db_name, key, ClinicId::from_uuid(id), &partial).await?;
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

/// The clinic's backup key, created (and stored wrapped by the current master key)
/// with its first backup.
pub async fn backup_key(
    central: &Client,
    ring: &KeyRing,
    clinic: ClinicId,
) -> anyhow::Result<BackupKey> {
    if let Some(key) = stored_backup_key(central, ring, clinic).await? {
        return Ok(key);
    }
    let fresh = BackupKey::generate();
    central
        .execute(
            "INSERT INTO clinic_backup_keys (clinic_id, wrapped) VALUES ($1, $2) \
             ON CONFLICT (clinic_id) DO NOTHING",
            &[clinic.as_uuid(), &fresh.wrap(ring, clinic)],
        )
        .await
        .context("storing the clinic's backup key")?;
    // Two runs racing agree on the stored one.
    stored_backup_key(central, ring, clinic)
        .await?
        .context("the clinic's backup key vanished as it was created")
}

/// The clinic's stored backup key, if it has one.
async fn stored_backup_key(
    central: &Client,
    ring: &KeyRing,
    clinic: ClinicId,
) -> anyhow::Result<Option<BackupKey>> {
    let row = central
        .query_opt(
            "SELECT wrapped FROM clinic_backup_keys WHERE clinic_id = $1",
            &[clinic.as_uuid()],
        )
        .await
        .context("reading the clinic's backup key")?;
    row.map(|r| {
        BackupKey::unwrap(ring, clinic, &r.get::<_, Vec<u8>>(0)).map_err(|e| {
            anyhow::anyhow!(
                "the backup key of clinic {clinic} cannot be unwrapped ({e}): give the master key it was wrapped with (MASTER_KEY or MASTER_KEYS_RETIRED)"
            )
        })
    })
    .transpose()
}

/// `pg_dump` or `pg_restore` against the regional server (password through the
/// environment, never the command line; TLS as the settings say, the server's
/// certificate verified like every other connection's).
fn tool(tool: &str, server: &DbSettings, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(tool);
    for (name, value) in server.libpq_tls() {
        command.env(format!("PG{}", name.to_ascii_uppercase()), value);
    }
    command
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
        .kill_on_drop(true);
    command
}

/// Runs `pg_dump` or `pg_restore` to completion (see [`tool`]).
async fn run_tool(name: &str, server: &DbSettings, args: &[&str]) -> anyhow::Result<()> {
    let output = tool(name, server, args)
        .output()
        .await
        .with_context(|| format!("running {name} (is the PostgreSQL client installed?)"))?;
    if !output.status.success() {
        bail!(
            "{name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Reads up to [`CHUNK`] bytes (fewer only at the end of the input).
async fn read_chunk(input: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(CHUNK);
    (&mut *input)
        .take(CHUNK as u64)
        .read_to_end(&mut buf)
        .await?;
    Ok(buf)
}

/// Dumps `db_name` into `file`, sealed with the clinic's backup key as it is read
/// from `pg_dump`.
async fn dump_sealed(
    server: &DbSettings,
    db_name: &str,
    key: &BackupKey,
    clinic: ClinicId,
    file: &Path,
) -> anyhow::Result<()> {
    let mut child = tool("pg_dump", server, &["--format=custom", "--dbname", db_name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running pg_dump (is the PostgreSQL client installed?)")?;
    let mut stdout = child.stdout.take().context("pg_dump's output")?;
    let mut stderr = child.stderr.take().context("pg_dump's error output")?;
    let errors = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        text
    });
    let mut out = tokio::fs::File::create(file)
        .await
        .with_context(|| format!("creating {}", file.display()))?;
    let mut sealer = Sealer::new(key, clinic);
    out.write_all(sealer.header()).await?;
    let mut current = read_chunk(&mut stdout).await?;
    loop {
        let next = read_chunk(&mut stdout).await?;
        let last = next.is_empty();
        let frame = sealer
            .frame(&current, last)
            .map_err(|e| anyhow::anyhow!("sealing the dump: {e}"))?;
        out.write_all(&frame).await?;
        if last {
            break;
        }
        current = next;
    }
    out.sync_all().await?;
    let status = child.wait().await?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        bail!(
            "pg_dump failed ({status}): {}",
            String::from_utf8_lossy(&errors).trim()
        );
    }
    Ok(())
}

/// Streams the sealed dump `file` into `pg_restore` (`args`), opened with the
/// clinic's backup key. On an integrity failure `pg_restore` is killed before its
/// single transaction commits.
async fn restore_sealed(
    server: &DbSettings,
    args: &[&str],
    key: &BackupKey,
    clinic: ClinicId,
    file: &Path,
) -> anyhow::Result<()> {
    let mut input = tokio::io::BufReader::new(
        tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?,
    );
    let mut header = [0u8; HEADER_LEN];
    input.read_exact(&mut header).await?;
    let mut opener = Opener::new(key, clinic, &header).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a backup of clinic {clinic} ({e})",
            file.display()
        )
    })?;
    let mut child = tool("pg_restore", server, args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running pg_restore (is the PostgreSQL client installed?)")?;
    let mut stdin = child.stdin.take().context("pg_restore's input")?;
    let fed = async {
        while !opener.finished() {
            let mut head = [0u8; FRAME_HEAD_LEN];
            input
                .read_exact(&mut head)
                .await
                .context("the backup ends early (cut short?)")?;
            let (last, len) = Opener::frame_head(&head)
                .map_err(|e| anyhow::anyhow!("the backup is damaged ({e})"))?;
            let mut ciphertext = vec![0u8; len];
            input
                .read_exact(&mut ciphertext)
                .await
                .context("the backup ends early (cut short?)")?;
            let plain = opener
                .open(last, &ciphertext)
                .map_err(|e| anyhow::anyhow!("the backup failed its integrity check ({e})"))?;
            stdin.write_all(&plain).await?;
        }
        let mut rest = [0u8; 1];
        if input.read(&mut rest).await? != 0 {
            bail!("the backup has bytes after its last chunk");
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = fed {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(e.context(format!("restoring {}", file.display())));
    }
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "pg_restore failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `file` is a plain `pg_dump` custom-format dump (written before backups
/// were sealed).
async fn is_plain_dump(file: &Path) -> anyhow::Result<bool> {
    let mut f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let mut magic = [0u8; 5];
    let n = f.read(&mut magic).await?;
    Ok(n == 5 && &magic == b"PGDMP")
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
    ring: &KeyRing,
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
    if status == "deleted" {
        bail!(
            "clinic {clinic} was offboarded: its database, data keys and backup key are gone, so no backup of it can be read or restored"
        );
    }
    // The key first: nothing is created for a dump that cannot be opened.
    let key = if is_plain_dump(file).await? {
        None
    } else {
        Some(stored_backup_key(&central, ring, clinic).await?.with_context(|| {
            format!("clinic {clinic} has no backup key (it was shredded, or the clinic never had a sealed backup), so {} cannot be read", file.display())
        })?)
    };
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
    let args = [
        "--exit-on-error",
        "--single-transaction",
        "--dbname",
        &restoring,
    ];
    match &key {
        Some(key) => restore_sealed(&settings.regional, &args, key, clinic, file).await?,
        None => {
            let path = file.to_string_lossy();
            let args = [&args[..], &[&path]].concat();
            run_tool("pg_restore", &settings.regional, &args).await?;
        }
    }
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
