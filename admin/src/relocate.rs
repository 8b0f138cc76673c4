//! Moving a clinic's database to another region's PostgreSQL server while the
//! clinic stays readable; writes are refused (`503` with `retry-after`) only for the
//! final switch.
//!
//! 1. **Copy, online.** On the destination server the clinic's role is created with
//!    its sealed password and its database cloned from the region's template (same
//!    schema version required); the source database publishes its tables and the
//!    destination subscribes (PostgreSQL logical replication: an initial copy, then
//!    every change streamed). The clinic is served as usual meanwhile.
//! 2. **Final switch.** The clinic becomes `relocating`: gateways (notified within a
//!    second) keep forwarding reads and refuse writes, and the source database
//!    itself is frozen — its clinic role keeps reading and writing audit records
//!    but nothing else — so a gateway with a stale placement cannot land a write
//!    there. After a short drain, the source's current WAL position is awaited on
//!    the destination, every table's row count is compared, sequences are carried
//!    over, replication is removed, and the placement is switched in one central
//!    update that every gateway hears about at once. (If the copies differ, the
//!    source is thawed and the clinic given back its status.)
//! 3. **Close the source.** The source database is closed to connections, audit
//!    records written there after the copy are carried over to the destination's
//!    outbox by record id (the destination's worker ships them; the central trail
//!    skips any already shipped), and the database is kept under another name for
//!    the operator to drop.
//!
//! Requirements: the source server runs with `wal_level=logical`; `REGION_DB_*` is a
//! role of the source server that may replicate (superuser or REPLICATION), and the
//! destination server reaches the source at the same host and port.
//!
//! Interrupted before the switch, the command is run again: an existing subscription
//! is resumed, a destination database without one is made afresh; the clinic keeps
//! being served from the source throughout.

use crate::config::AdminSettings;
use crate::db;
use crate::ops;
use anyhow::{bail, Context};
use common::crypto::{role_password_purpose, KeyRing};
use common::ClinicId;
use indicatif::ProgressBar;
use migrations::{ident, provisioning, CLINIC_APP_ROLE, CLINIC_TEMPLATE_DB};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const PUBLICATION: &str = "medicalpro_relocation";
/// Time for gateways to hear that writes are refused and for writes in flight to end.
const DRAIN: Duration = Duration::from_secs(2);

/// What a relocation did.
#[derive(Clone, Debug)]
pub struct Relocated {
    pub from: String,
    pub to: String,
    /// Rows in the destination database at the switch.
    pub rows: i64,
    /// How long writes were refused.
    pub write_pause: Duration,
    /// Audit records carried over from the source after the switch.
    pub carried_audit: u64,
    /// The source database's new name (closed to connections; drop when done).
    pub previous_db: String,
}

/// Moves `clinic` to region `to` (see the module docs).
pub async fn relocate(
    settings: &AdminSettings,
    ring: &KeyRing,
    clinic: ClinicId,
    to: &str,
    progress: bool,
) -> anyhow::Result<Relocated> {
    let target = settings
        .target
        .as_ref()
        .context("set TARGET_REGION_DB_HOST (and _PORT, _USER, _PASSWORD) to the destination region's server")?;
    let bar = if progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    let central = db::central(settings).await?;
    let row = central
        .query_opt(
            "SELECT region, db_name, db_role, db_role_password, status FROM companies WHERE id = $1",
            &[clinic.as_uuid()],
        )
        .await?
        .with_context(|| format!("there is no clinic {clinic}"))?;
    let (from, db_name, role): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let (sealed, status): (Option<Vec<u8>>, String) = (row.get(3), row.get(4));
    if from == to {
        bail!("clinic {clinic} is already placed in {to}");
    }
    // The status to give back at the switch (an interrupted switch left `relocating`).
    let settled = match status.as_str() {
        "active" | "relocating" => "active",
        "suspended" => "suspended",
        other => bail!("clinic {clinic} is {other}; only an active or suspended clinic can move"),
    };
    if central
        .query_opt("SELECT 1 FROM regions WHERE name = $1", &[&to])
        .await?
        .is_none()
    {
        bail!("unknown region {to:?} (its worker registers it at start-up)");
    }
    let sealed = sealed.context("the clinic has no role password yet")?;
    let password = ring
        .open_secret(&role_password_purpose(clinic), &sealed)
        .context("opening the clinic's role password (MASTER_KEY)")?;
    let password = String::from_utf8(password).context("role password is not UTF-8")?;

    let source_db = db::connect(&settings.regional.with_dbname(&db_name))
        .await
        .context("the clinic's database on the source server")?;
    let wal_level: String = source_db.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal_level != "logical" {
        bail!("the source server runs with wal_level={wal_level}; relocation needs wal_level=logical (a restart)");
    }
    let target_server = db::connect(target)
        .await
        .context("the destination server")?;
    let template = db::connect(&target.with_dbname(CLINIC_TEMPLATE_DB))
        .await
        .context("the destination region's clinic template (its worker creates it)")?;
    let (have, want) = (
        schema_version(&source_db).await?,
        schema_version(&template).await?,
    );
    if have != want {
        bail!("the clinic database is at schema version {have} but the destination template at {want}: run migrate-fleet on both regions first");
    }
    drop(template);

    // 1. Copy, online.
    bar.set_message("copying");
    let subscription = format!("mp_reloc_{}", clinic.as_uuid().simple());
    let subscribed = target_server
        .query_opt(
            "SELECT 1 FROM pg_subscription WHERE subname = $1",
            &[&subscription],
        )
        .await?
        .is_some();
    provisioning::ensure_role(&target_server, &role, &password).await?;
    if !subscribed {
        if provisioning::database_exists(&target_server, &db_name).await? {
            // Left by an attempt cut short before it subscribed; never served.
            target_server
                .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", ident(&db_name)))
                .await?;
        }
        if !provisioning::clone_template(&target_server, &db_name).await? {
            bail!("the destination template stayed busy; run again");
        }
    }
    provisioning::restrict_connect(&target_server, &db_name, &role).await?;
    let tables = published_tables(&source_db).await?;
    let published = source_db
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&PUBLICATION],
        )
        .await?
        .is_some();
    if !published {
        let list: Vec<String> = tables.iter().map(|t| ident(t)).collect();
        source_db
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                ident(PUBLICATION),
                list.join(", ")
            ))
            .await
            .context("publishing the clinic's tables")?;
    }
    let target_db = db::connect(&target.with_dbname(&db_name))
        .await
        .context("the clinic's database on the destination server")?;
    if !subscribed {
        // The destination is a fresh clone of the template, never served: the rows
        // its migrations seeded (the clinic's settings row) come from the source.
        let list: Vec<String> = tables.iter().map(|t| ident(t)).collect();
        target_db
            .batch_execute(&format!("TRUNCATE {}", list.join(", ")))
            .await
            .context("emptying the destination's seeded rows")?;
        let source = &settings.regional;
        let port = source.port.to_string();
        let tls = source.libpq_tls();
        let conninfo = [
            ("host", source.host.as_str()),
            ("port", port.as_str()),
            ("user", source.user.as_str()),
            ("password", source.password.expose()),
            ("dbname", db_name.as_str()),
        ]
        .into_iter()
        .chain(tls.iter().map(|(k, v)| (*k, v.as_str())))
        .map(|(k, v)| format!("{k}={}", conninfo_value(v)))
        .collect::<Vec<_>>()
        .join(" ");
        target_db
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = true)",
                ident(&subscription),
                migrations::literal(&conninfo),
                ident(PUBLICATION)
            ))
            .await
            .context("subscribing the destination to the source")?;
    }
    wait_copied(&target_db, &subscription, Duration::from_secs(600)).await?;

    // 2. Final switch.
    bar.set_message("switching");
    central
        .execute(
            "UPDATE companies SET status = 'relocating', updated_at = now() WHERE id = $1 AND status = 'active'",
            &[clinic.as_uuid()],
        )
        .await?;
    let paused = Instant::now();
    // The source itself refuses writes from here on, so a gateway that has not
    // heard of the switch cannot land one there (reads go on: their audit records
    // are still written, and carried over below).
    let grants = app_grants(&target_db).await?;
    freeze_writes(&source_db).await?;
    tokio::time::sleep(DRAIN).await;
    let mut rows = None;
    for _ in 0..20 {
        let lsn: String = source_db
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        wait_flushed(&source_db, &subscription, &lsn).await?;
        if let Some(n) = same_rows(&source_db, &target_db, &tables).await? {
            rows = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some(rows) = rows else {
        thaw_writes(&source_db, &grants).await?;
        central
            .execute(
                "UPDATE companies SET status = $2, updated_at = now() WHERE id = $1 AND status = 'relocating'",
                &[clinic.as_uuid(), &settled],
            )
            .await?;
        bail!("the destination's rows still differ from the source's; writes are allowed again and the copy keeps streaming: run again");
    };
    carry_sequences(&source_db, &target_db).await?;
    target_db
        .batch_execute(&format!("DROP SUBSCRIPTION {}", ident(&subscription)))
        .await
        .context("removing the subscription")?;
    source_db
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            ident(PUBLICATION)
        ))
        .await?;
    central
        .execute(
            "UPDATE companies SET region = $2, status = $3, placement_version = placement_version + 1, updated_at = now() \
             WHERE id = $1",
            &[clinic.as_uuid(), &to, &settled],
        )
        .await
        .context("switching the placement")?;
    let write_pause = paused.elapsed();

    // 3. Close the source.
    bar.set_message("closing the source");
    let source_server = db::connect(&settings.regional).await?;
    let own_pid: i32 = source_db
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    source_server
        .batch_execute(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            ident(&db_name)
        ))
        .await?;
    source_server
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2",
            &[&db_name, &own_pid],
        )
        .await?;
    let carried_audit = carry_outbox(&source_db, &target_db).await?;
    drop(source_db);
    let previous_db = format!(
        "mpmoved_{}_{}",
        clinic.as_uuid().simple(),
        chrono::Utc::now().timestamp()
    );
    db::rename_closed(&source_server, &db_name, &previous_db).await?;
    ops::record(&central, settings.audit_keys()?, clinic, "relocate").await?;
    bar.finish_and_clear();
    Ok(Relocated {
        from,
        to: to.to_owned(),
        rows,
        write_pause,
        carried_audit,
        previous_db,
    })
}

/// The table privileges the clinic group role holds in a clinic database (as the
/// clinic schema grants them), to give back after a freeze.
pub async fn app_grants(db: &Client) -> anyhow::Result<Vec<(String, String)>> {
    Ok(db
        .query(
            "SELECT table_name::text, privilege_type::text FROM information_schema.role_table_grants \
             WHERE grantee = $1 AND table_schema = 'public' ORDER BY 1, 2",
            &[&CLINIC_APP_ROLE],
        )
        .await
        .context("reading the clinic role's grants")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Makes a clinic database refuse every write by its clinic role except its
/// audit records (and their shipping): reads keep working and keep being audited.
/// Writes then fail with `insufficient_privilege`, which workers answer with `503`
/// and `retry-after`.
pub async fn freeze_writes(db: &Client) -> anyhow::Result<()> {
    db.batch_execute(&format!(
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM {role}; \
         GRANT INSERT, DELETE ON audit_outbox TO {role}",
        role = ident(CLINIC_APP_ROLE)
    ))
    .await
    .context("freezing the source database's writes")
}

/// Gives the clinic role back the `grants` taken by [`freeze_writes`].
pub async fn thaw_writes(db: &Client, grants: &[(String, String)]) -> anyhow::Result<()> {
    let mut sql = String::new();
    for (table, privilege) in grants {
        if !["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"].contains(&privilege.as_str()) {
            continue;
        }
        sql.push_str(&format!(
            "GRANT {privilege} ON {} TO {};",
            ident(table),
            ident(CLINIC_APP_ROLE)
        ));
    }
    db.batch_execute(&sql)
        .await
        .context("giving the source database's writes back")
}

/// A libpq connection-string value, quoted.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn schema_version(db: &Client) -> anyhow::Result<i32> {
    Ok(db
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .context("reading the schema version")?
        .get(0))
}

/// The clinic tables that move (the migration record comes with the template).
async fn published_tables(db: &Client) -> anyhow::Result<Vec<String>> {
    Ok(db
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations' ORDER BY tablename",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Waits until the subscription's initial copy of every table is done.
async fn wait_copied(db: &Client, subscription: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let row = db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE r.srsubstate <> 'r') \
                 FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1",
                &[&subscription],
            )
            .await?;
        let (tables, pending): (i64, i64) = (row.get(0), row.get(1));
        if tables > 0 && pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the initial copy did not finish in {timeout:?} ({pending} of {tables} tables pending); run again to keep waiting");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the destination confirmed everything up to `lsn` of the source.
async fn wait_flushed(source: &Client, slot: &str, lsn: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: Option<bool> = source
            .query_opt(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &lsn],
            )
            .await?
            .and_then(|r| r.get(0));
        if done == Some(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the destination did not catch up with the source within a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The total row count when every table (but the audit outbox, which reads keep
/// writing at the source) holds as many rows on both sides.
async fn same_rows(
    source: &Client,
    target: &Client,
    tables: &[String],
) -> anyhow::Result<Option<i64>> {
    let mut total = 0;
    for t in tables {
        let sql = format!("SELECT count(*) FROM {}", ident(t));
        let there: i64 = target.query_one(&sql, &[]).await?.get(0);
        total += there;
        if t == "audit_outbox" {
            continue;
        }
        let here: i64 = source.query_one(&sql, &[]).await?.get(0);
        if here != there {
            return Ok(None);
        }
    }
    Ok(Some(total))
}

/// Sets every sequence of the destination to the source's position (logical
/// replication does not carry sequences).
async fn carry_sequences(source: &Client, target: &Client) -> anyhow::Result<()> {
    let rows = source
        .query(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' AND last_value IS NOT NULL",
            &[],
        )
        .await?;
    for r in rows {
        let (name, value): (String, i64) = (r.get(0), r.get(1));
        target
            .execute(
                "SELECT setval($1::text::regclass, $2, true)",
                &[&ident(&name), &value],
            )
            .await
            .with_context(|| format!("setting sequence {name}"))?;
    }
    Ok(())
}

/// Copies the source's audit outbox records the destination lacks (by record id;
/// they get sequence numbers of the destination's); their count.
async fn carry_outbox(source: &Client, target: &Client) -> anyhow::Result<u64> {
    let rows = source
        .query("SELECT to_jsonb(o) FROM audit_outbox o ORDER BY seq", &[])
        .await?;
    let records: Vec<serde_json::Value> = rows.iter().map(|r| r.get(0)).collect();
    if records.is_empty() {
        return Ok(0);
    }
    let n = target
        .execute(
            "INSERT INTO audit_outbox (id, user_id, action, resource, resource_id, resource_ids, client_ip, request_id, outcome, occurred_at) \
             SELECT id, user_id, action, resource, resource_id, resource_ids, client_ip, request_id, outcome, occurred_at \
             FROM jsonb_populate_recordset(NULL::audit_outbox, $1) ORDER BY seq \
             ON CONFLICT (id) DO NOTHING",
            &[&serde_json::Value::Array(records)],
        )
        .await
        .context("carrying audit records over")?;
    Ok(n)
}
