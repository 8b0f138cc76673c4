//! Offboarding a clinic that leaves (`medicalpro-admin offboard`): a final export,
//! a grace period, then everything of the clinic made unreadable for good.
//!
//! The steps, each stamped in the central `offboardings` row when done, so a run
//! cut short (or stopped with `--stop-after`) is finished by running it again:
//!
//! 1. [`Step::Suspend`]: the clinic is suspended (gateways refuse it within a
//!    second, workers at their next placement check); the grace period's end is
//!    recorded with the first run.
//! 2. [`Step::Export`]: the whole clinic written as NDJSON to the export path, the
//!    same lines as `GET /api/v1/export` (one consistent snapshot; rows shown by
//!    [`pgconn::rows`], the code the worker's data layer uses), first to
//!    `PATH.partial` (mode 0600: it is patient data in the clear), renamed once
//!    complete; its line count and SHA-256 recorded.
//!
//! Until the grace period ends a run stops here and says what remains and when.
//! Then:
//!
//! 3. [`Step::Delete`]: the central record is marked `deleted` and every user's
//!    token version raised (their tokens refused fleet-wide at once, sign-in
//!    refused like a suspended clinic's); from here on no fleet command (backup,
//!    migrate-fleet, rotate-data-keys) or service touches the clinic.
//! 4. [`Step::DropDatabases`]: audit records still in the clinic's outbox are
//!    shipped to the central trail, then the clinic database and every copy kept on
//!    the server (`mpold_…` from restores, `mpmoved_…` from relocations, an
//!    interrupted restore's `mprestore_…`) are dropped; also on the
//!    `TARGET_REGION_DB_*` server when one is configured (a relocation's source).
//! 5. [`Step::DropRole`]: the clinic's login role dropped on the same servers.
//! 6. [`Step::ShredKeys`]: the clinic's data keys, its backup key and its sealed
//!    role password deleted from the central database: nothing sealed with them,
//!    no backup of the clinic wherever it was copied, can be opened again.
//! 7. [`Step::Finish`]: the last record of the clinic's audit trail (`offboard`).

use crate::config::AdminSettings;
use crate::db;
use crate::ops;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use common::audit::{AuditKeys, Record};
use common::config::DbSettings;
use common::crypto::{ClinicKeys, KeyRing};
use common::resource::{ATTACHMENTS, RESOURCES};
use common::ClinicId;
use migrations::ident;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio_postgres::Client;
use uuid::Uuid;

/// Rows read per page of the export.
const PAGE: i64 = 500;

/// One step of an offboarding, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Step {
    Suspend,
    Export,
    Delete,
    DropDatabases,
    DropRole,
    ShredKeys,
    Finish,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Suspend,
        Step::Export,
        Step::Delete,
        Step::DropDatabases,
        Step::DropRole,
        Step::ShredKeys,
        Step::Finish,
    ];

    /// The `offboardings` column stamped when the step is done.
    fn column(self) -> &'static str {
        match self {
            Step::Suspend => "suspended_at",
            Step::Export => "exported_at",
            Step::Delete => "deleted_at",
            Step::DropDatabases => "databases_dropped_at",
            Step::DropRole => "role_dropped_at",
            Step::ShredKeys => "keys_shredded_at",
            Step::Finish => "finished_at",
        }
    }

    /// What the step does, for plans and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Suspend => "suspend the clinic (its users are refused at once)",
            Step::Export => "write the final NDJSON export of the whole clinic",
            Step::Delete => "mark the clinic deleted and end every session of its users",
            Step::DropDatabases => {
                "drop the clinic database and every kept copy (restores, relocations)"
            }
            Step::DropRole => "drop the clinic's database role",
            Step::ShredKeys => {
                "shred its data keys and backup key (every backup becomes unreadable)"
            }
            Step::Finish => "write the last record of its audit trail",
        }
    }

    /// Whether the step destroys something, and so waits for the grace period.
    pub fn after_grace(self) -> bool {
        self >= Step::Delete
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Step::Suspend => "suspend",
            Step::Export => "export",
            Step::Delete => "delete",
            Step::DropDatabases => "drop-databases",
            Step::DropRole => "drop-role",
            Step::ShredKeys => "shred-keys",
            Step::Finish => "finish",
        };
        f.write_str(name)
    }
}

/// What an offboarding run is asked to do.
#[derive(Clone, Debug)]
pub struct Request {
    pub clinic: ClinicId,
    /// Where the final export is written (used by the run that writes it).
    pub export: PathBuf,
    /// Days between the first run and the destructive steps (recorded by the
    /// first run; later runs keep it).
    pub grace_days: u32,
    /// Stop once this step is done (resumption tests and careful operators).
    pub stop_after: Option<Step>,
}

/// Where an offboarding stands after a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Waiting for the grace period: nothing destructive happened.
    Waiting {
        grace_until: DateTime<Utc>,
        remaining: Vec<Step>,
    },
    /// Stopped as asked after a step; the next run continues.
    Stopped { after: Step, remaining: Vec<Step> },
    /// Everything done (by this run or before).
    Done { finished_at: DateTime<Utc> },
}

/// The report of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub clinic: ClinicId,
    /// Steps this run did.
    pub done_now: Vec<Step>,
    pub export_path: String,
    pub export_rows: Option<i64>,
    pub export_sha256: Option<String>,
    /// Databases this run dropped.
    pub dropped: Vec<String>,
    pub outcome: Outcome,
}

/// What an offboarding of `clinic` would do (for the refusal without `--confirm`):
/// one line per step still to do, with where the offboarding stands.
pub async fn plan(settings: &AdminSettings, clinic: ClinicId) -> anyhow::Result<Vec<String>> {
    let central = db::central(settings).await?;
    let (status, region, db_name) = clinic_row(&central, clinic).await?;
    let row = central
        .query_opt(
            "SELECT suspended_at IS NOT NULL, exported_at IS NOT NULL, deleted_at IS NOT NULL, \
                    databases_dropped_at IS NOT NULL, role_dropped_at IS NOT NULL, \
                    keys_shredded_at IS NOT NULL, finished_at IS NOT NULL, grace_until \
             FROM offboardings WHERE clinic_id = $1",
            &[clinic.as_uuid()],
        )
        .await?;
    let mut lines = vec![format!(
        "clinic {clinic} ({status}, region {region}, database {db_name})"
    )];
    if let Some(r) = &row {
        let grace: DateTime<Utc> = r.get(7);
        lines.push(format!(
            "offboarding already started; grace period until {}",
            grace.to_rfc3339()
        ));
    }
    for (i, step) in Step::ALL.iter().enumerate() {
        let done = row.as_ref().is_some_and(|r| r.get::<_, bool>(i));
        if !done {
            lines.push(format!(
                "{} {step}: {}",
                if step.after_grace() {
                    "after the grace period,"
                } else {
                    "now,"
                },
                step.describe()
            ));
        }
    }
    Ok(lines)
}

async fn clinic_row(
    central: &Client,
    clinic: ClinicId,
) -> anyhow::Result<(String, String, String)> {
    let row = central
        .query_opt(
            "SELECT status, region, db_name FROM companies WHERE id = $1",
            &[clinic.as_uuid()],
        )
        .await
        .context("reading the clinic")?
        .with_context(|| format!("there is no clinic {clinic}"))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// The offboarding's row: which steps are done.
struct State {
    done: Vec<Step>,
    grace_until: DateTime<Utc>,
    in_grace: bool,
    export_path: String,
    export_rows: Option<i64>,
    export_sha256: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

async fn state(central: &Client, clinic: ClinicId) -> anyhow::Result<State> {
    let columns: Vec<&str> = Step::ALL.iter().map(|s| s.column()).collect();
    let row = central
        .query_one(
            &format!(
                "SELECT {}, grace_until, now() < grace_until, export_path, export_rows, export_sha256 \
                 FROM offboardings WHERE clinic_id = $1",
                columns.join(", ")
            ),
            &[clinic.as_uuid()],
        )
        .await
        .context("reading the offboarding")?;
    let n = Step::ALL.len();
    let done = Step::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| row.get::<_, Option<DateTime<Utc>>>(*i).is_some())
        .map(|(_, s)| *s)
        .collect();
    Ok(State {
        done,
        grace_until: row.get(n),
        in_grace: row.get(n + 1),
        export_path: row.get(n + 2),
        export_rows: row.get(n + 3),
        export_sha256: row.get(n + 4),
        finished_at: row.get(n - 1),
    })
}

async fn stamp(central: &Client, clinic: ClinicId, step: Step) -> anyhow::Result<()> {
    central
        .execute(
            &format!(
                "UPDATE offboardings SET {} = coalesce({0}, now()) WHERE clinic_id = $1",
                step.column()
            ),
            &[clinic.as_uuid()],
        )
        .await
        .with_context(|| format!("recording the step {step}"))?;
    Ok(())
}

/// Runs (or resumes) the offboarding of a clinic; see the module docs.
/// `REGION_DB_*` must point to the clinic's region's server.
pub async fn offboard(
    settings: &AdminSettings,
    ring: &KeyRing,
    request: &Request,
) -> anyhow::Result<Report> {
    let keys = settings.audit_keys()?;
    let clinic = request.clinic;
    let central = db::central(settings).await?;
    let (status, _region, db_name) = clinic_row(&central, clinic).await?;
    let started = central
        .execute(
            "INSERT INTO offboardings (clinic_id, grace_until, export_path) \
             VALUES ($1, now() + make_interval(days => $2), $3) ON CONFLICT (clinic_id) DO NOTHING",
            &[
                clinic.as_uuid(),
                &i32::try_from(request.grace_days).unwrap_or(i32::MAX),
                &request.export.to_string_lossy().as_ref(),
            ],
        )
        .await
        .context("recording the offboarding")?;
    if started == 0 && status == "provisioning" {
        bail!("clinic {clinic} is still provisioning; there is nothing to offboard yet");
    }
    if started == 1 {
        if status == "provisioning" || status == "deleted" {
            central
                .execute(
                    "DELETE FROM offboardings WHERE clinic_id = $1",
                    &[clinic.as_uuid()],
                )
                .await?;
            bail!(
                "clinic {clinic} is {status}; only an active or suspended clinic can be offboarded"
            );
        }
        if status == "relocating" {
            central
                .execute(
                    "DELETE FROM offboardings WHERE clinic_id = $1",
                    &[clinic.as_uuid()],
                )
                .await?;
            bail!("clinic {clinic} is being relocated; finish the relocation (run `relocate` again), then offboard it");
        }
    }
    let mut report = Report {
        clinic,
        done_now: Vec::new(),
        export_path: String::new(),
        export_rows: None,
        export_sha256: None,
        dropped: Vec::new(),
        outcome: Outcome::Done {
            finished_at: Utc::now(),
        },
    };
    for step in Step::ALL {
        let st = state(&central, clinic).await?;
        report.export_path = st.export_path.clone();
        report.export_rows = st.export_rows;
        report.export_sha256 = st.export_sha256.clone();
        if let Some(finished_at) = st.finished_at {
            report.outcome = Outcome::Done { finished_at };
            return Ok(report);
        }
        if st.done.contains(&step) {
            continue;
        }
        if step.after_grace() && st.in_grace {
            report.outcome = Outcome::Waiting {
                grace_until: st.grace_until,
                remaining: remaining(&st.done),
            };
            return Ok(report);
        }
        match step {
            Step::Suspend => {
                // Already suspended (by an operator, or a run before): unchanged.
                ops::set_status_with(&central, keys, clinic, ops::Change::Suspend).await?;
                stamp(&central, clinic, step).await?;
            }
            Step::Export => {
                // A path given now wins over one of a run whose export failed.
                let path = request.export.clone();
                let (rows, sha) = export(settings, &central, ring, clinic, &db_name, &path).await?;
                central
                    .execute(
                        "UPDATE offboardings SET export_path = $2, export_rows = $3, export_sha256 = $4, \
                         server = $5, exported_at = now() WHERE clinic_id = $1",
                        &[
                            clinic.as_uuid(),
                            &path.to_string_lossy().as_ref(),
                            &rows,
                            &sha,
                            &server_name(&settings.regional),
                        ],
                    )
                    .await
                    .context("recording the export")?;
                ops::record(&central, keys, clinic, "offboard_export").await?;
            }
            Step::Delete => {
                same_server(&central, settings, clinic).await?;
                mark_deleted(&central, clinic).await?;
            }
            Step::DropDatabases => {
                same_server(&central, settings, clinic).await?;
                report.dropped = drop_databases(settings, &central, keys, clinic, &db_name).await?;
                stamp(&central, clinic, step).await?;
            }
            Step::DropRole => {
                same_server(&central, settings, clinic).await?;
                drop_role(settings, &central, clinic).await?;
                stamp(&central, clinic, step).await?;
            }
            Step::ShredKeys => shred_keys(&central, clinic).await?,
            Step::Finish => finish(&central, keys, clinic).await?,
        }
        report.done_now.push(step);
        if request.stop_after == Some(step) && step != Step::Finish {
            let st = state(&central, clinic).await?;
            report.export_path = st.export_path;
            report.export_rows = st.export_rows;
            report.export_sha256 = st.export_sha256;
            report.outcome = Outcome::Stopped {
                after: step,
                remaining: remaining(&st.done),
            };
            return Ok(report);
        }
    }
    let st = state(&central, clinic).await?;
    report.outcome = Outcome::Done {
        finished_at: st.finished_at.unwrap_or_else(Utc::now),
    };
    Ok(report)
}

fn remaining(done: &[Step]) -> Vec<Step> {
    Step::ALL
        .into_iter()
        .filter(|s| !done.contains(s))
        .collect()
}

/// Writes the clinic's final export to `path` (see the module docs); returns its
/// line count and SHA-256 (hex).
async fn export(
    settings: &AdminSettings,
    central: &Client,
    ring: &KeyRing,
    clinic: ClinicId,
    db_name: &str,
    path: &Path,
) -> anyhow::Result<(i64, String)> {
    let versions = pgconn::keystore::load_versions(central, ring, clinic)
        .await
        .context("loading the clinic's data keys")?;
    let keys = ClinicKeys::new(clinic, versions).context(
        "the clinic has no data key: nothing of it was ever sealed, or its keys are gone",
    )?;
    let db = db::connect(&settings.regional.with_dbname(db_name))
        .await
        .with_context(|| {
            format!("the clinic database {db_name} (REGION_DB_* must point to the clinic's region's server)")
        })?;
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // Patient data in the clear: readable by the operator's account alone, in a
    // file made afresh (never one that was there, nor through a symbolic link).
    match tokio::fs::remove_file(&partial).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", partial.display())),
    }
    let mut out = tokio::io::BufWriter::new(
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    let mut hash = Sha256::new();
    let mut lines = 0i64;
    db.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    // What `GET /api/v1/export` sends, in its order: every resource, then the
    // metadata of attachments (their content is in the database, not the export).
    let exported = RESOURCES.iter().copied().chain([&ATTACHMENTS]);
    for r in exported {
        let sql = format!(
            "SELECT {} FROM {} t WHERE t.company_id = $1 AND t.deleted_at IS NULL \
             AND ($2::uuid IS NULL OR t.id > $2) ORDER BY t.id LIMIT {PAGE}",
            pgconn::rows::select_list(r),
            r.table
        );
        let statement = db
            .prepare(&sql)
            .await
            .with_context(|| format!("reading {}", r.table))?;
        let mut after: Option<Uuid> = None;
        loop {
            let rows = db
                .query(&statement, &[clinic.as_uuid(), &after])
                .await
                .with_context(|| format!("reading {}", r.table))?;
            for row in &rows {
                let data = pgconn::rows::row_to_json(r, &keys, true, row)?;
                let mut line =
                    serde_json::to_vec(&serde_json::json!({"resource": r.name, "data": data}))?;
                line.push(b'\n');
                hash.update(&line);
                out.write_all(&line).await?;
                lines += 1;
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => after = Some(last.get(0)),
                _ => break,
            }
        }
    }
    db.batch_execute("COMMIT").await?;
    out.flush().await?;
    out.get_ref().sync_all().await?;
    drop(out);
    tokio::fs::rename(&partial, path)
        .await
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    Ok((lines, hex::encode(hash.finalize())))
}

/// How a server is named in `offboardings.server`.
fn server_name(server: &DbSettings) -> String {
    format!("{}:{}", server.host, server.port)
}

/// Refuses to go on against another server than the one the clinic was exported
/// from (a wrong `REGION_DB_*` would find nothing to drop and call it done).
async fn same_server(
    central: &Client,
    settings: &AdminSettings,
    clinic: ClinicId,
) -> anyhow::Result<()> {
    let recorded: Option<String> = central
        .query_one(
            "SELECT server FROM offboardings WHERE clinic_id = $1",
            &[clinic.as_uuid()],
        )
        .await?
        .get(0);
    let here = server_name(&settings.regional);
    match recorded {
        Some(there) if there != here => bail!(
            "clinic {clinic}'s database was exported from {there}, but REGION_DB_* points to {here}: point REGION_DB_* at {there} and run again"
        ),
        _ => Ok(()),
    }
}

/// The clinic marked `deleted` and every session of its users ended, with the step
/// stamped, in one transaction.
async fn mark_deleted(central: &Client, clinic: ClinicId) -> anyhow::Result<()> {
    central.batch_execute("BEGIN").await?;
    let result = async {
        central
            .execute(
                "UPDATE companies SET status = 'deleted', placement_version = placement_version + 1, \
                 updated_at = now() WHERE id = $1",
                &[clinic.as_uuid()],
            )
            .await
            .context("marking the clinic deleted")?;
        central
            .execute(
                "UPDATE users SET token_version = token_version + 1, token_version_at = now() \
                 WHERE company_id = $1",
                &[clinic.as_uuid()],
            )
            .await
            .context("ending the sessions of the clinic's users")?;
        central
            .execute(
                "UPDATE api_clients SET revoked_at = coalesce(revoked_at, now()), \
                        token_version = token_version + 1, token_version_at = now() \
                 WHERE company_id = $1",
                &[clinic.as_uuid()],
            )
            .await
            .context("revoking the clinic's API clients")?;
        stamp(central, clinic, Step::Delete).await
    }
    .await;
    commit_or_rollback(central, result).await
}

async fn commit_or_rollback(central: &Client, result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Ok(()) => {
            central.batch_execute("COMMIT").await?;
            Ok(())
        }
        Err(e) => {
            let _ = central.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// The servers the clinic's databases and role may be on: the region's, and a
/// relocation's other end when `TARGET_REGION_DB_*` is set.
fn servers(settings: &AdminSettings) -> Vec<&DbSettings> {
    std::iter::once(&settings.regional)
        .chain(settings.target.as_ref())
        .collect()
}

/// Ships what is left in the clinic's outbox, then drops the clinic database and
/// its kept copies on every server; returns the names dropped.
async fn drop_databases(
    settings: &AdminSettings,
    central: &Client,
    keys: &AuditKeys,
    clinic: ClinicId,
    db_name: &str,
) -> anyhow::Result<Vec<String>> {
    let simple = clinic.as_uuid().simple().to_string();
    let mut dropped = Vec::new();
    for server in servers(settings) {
        let admin = db::connect(server).await.context("the regional server")?;
        let names: Vec<String> = admin
            .query(
                "SELECT datname FROM pg_database WHERE datname = $1 OR datname = 'mprestore_' || $2 \
                 OR starts_with(datname, 'mpold_' || $2 || '_') OR starts_with(datname, 'mpmoved_' || $2 || '_') \
                 ORDER BY datname",
                &[&db_name, &simple],
            )
            .await
            .context("listing the clinic's databases")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if names.iter().any(|n| n == db_name) {
            ship_outbox(&server.with_dbname(db_name), central, keys, clinic).await?;
        }
        for name in names {
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    ident(&name)
                ))
                .await
                .with_context(|| format!("dropping database {name}"))?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// Moves the audit records still in the clinic database's outbox to the central
/// trail (skipped there if already shipped), so the trail is complete.
async fn ship_outbox(
    clinic_db: &DbSettings,
    central: &Client,
    keys: &AuditKeys,
    clinic: ClinicId,
) -> anyhow::Result<()> {
    let db = db::connect(clinic_db).await?;
    let records: Vec<Record> = db
        .query(
            "SELECT id, user_id, action, resource, resource_id, client_ip, request_id, outcome, occurred_at, resource_ids \
             FROM audit_outbox ORDER BY seq",
            &[],
        )
        .await
        .context("reading the clinic's audit outbox")?
        .iter()
        .map(|r| Record {
            source_id: Some(r.get(0)),
            user_id: r.get(1),
            action: r.get(2),
            resource: r.get(3),
            resource_id: r.get(4),
            client_ip: r.get(5),
            request_id: r.get(6),
            outcome: r.get(7),
            occurred_at: r.get(8),
            resource_ids: r.get(9),
        })
        .collect();
    central.batch_execute("BEGIN").await?;
    let result = async {
        pgconn::audit::append(central, keys, clinic, &records)
            .await
            .context("shipping the clinic's last audit records")?;
        anyhow::Ok(())
    }
    .await;
    commit_or_rollback(central, result).await
}

/// Drops the clinic's login role on every server.
async fn drop_role(
    settings: &AdminSettings,
    central: &Client,
    clinic: ClinicId,
) -> anyhow::Result<()> {
    let role: String = central
        .query_one(
            "SELECT db_role FROM companies WHERE id = $1",
            &[clinic.as_uuid()],
        )
        .await?
        .get(0);
    for server in servers(settings) {
        let admin = db::connect(server).await.context("the regional server")?;
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(&role)))
            .await
            .with_context(|| format!("dropping role {role}"))?;
    }
    Ok(())
}

/// Deletes the clinic's data keys, backup key and sealed role password.
async fn shred_keys(central: &Client, clinic: ClinicId) -> anyhow::Result<()> {
    central.batch_execute("BEGIN").await?;
    let result = async {
        for sql in [
            "DELETE FROM clinic_data_keys WHERE clinic_id = $1",
            "DELETE FROM clinic_backup_keys WHERE clinic_id = $1",
            "UPDATE companies SET db_role_password = NULL WHERE id = $1",
        ] {
            central
                .execute(sql, &[clinic.as_uuid()])
                .await
                .context("shredding the clinic's keys")?;
        }
        stamp(central, clinic, Step::ShredKeys).await
    }
    .await;
    commit_or_rollback(central, result).await
}

/// The last record of the clinic's audit trail, with the offboarding's end.
async fn finish(central: &Client, keys: &AuditKeys, clinic: ClinicId) -> anyhow::Result<()> {
    central.batch_execute("BEGIN").await?;
    let result = async {
        let record = Record::now("offboard", "clinic", "success");
        pgconn::audit::append(central, keys, clinic, &[record])
            .await
            .context("recording the offboarding in the audit trail")?;
        stamp(central, clinic, Step::Finish).await
    }
    .await;
    commit_or_rollback(central, result).await
}

/// The report as the command prints it.
pub fn format_report(report: &Report) -> String {
    let mut out = String::new();
    let clinic = report.clinic;
    for step in &report.done_now {
        out.push_str(&format!(
            "clinic {clinic}: {step} done ({})\n",
            step.describe()
        ));
    }
    for name in &report.dropped {
        out.push_str(&format!("clinic {clinic}: dropped database {name}\n"));
    }
    if let (Some(rows), Some(sha)) = (report.export_rows, &report.export_sha256) {
        out.push_str(&format!(
            "clinic {clinic}: export {} ({rows} lines, sha256 {sha})\n",
            report.export_path
        ));
    }
    let list = |steps: &[Step]| {
        steps
            .iter()
            .map(Step::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&match &report.outcome {
        Outcome::Waiting {
            grace_until,
            remaining,
        } => format!(
            "clinic {clinic}: suspended and exported; grace period until {}; then, by running this again: {}\n",
            grace_until.to_rfc3339(),
            list(remaining)
        ),
        Outcome::Stopped { after, remaining } => format!(
            "clinic {clinic}: stopped after {after} as asked; run again to continue: {}\n",
            list(remaining)
        ),
        Outcome::Done { finished_at } => format!(
            "clinic {clinic}: offboarded (finished {}); its data, keys and backups are unreadable\n",
            finished_at.to_rfc3339()
        ),
    });
    out
}
