//! One-off PostgreSQL connections for the admin commands.

use crate::config::AdminSettings;
use anyhow::Context;
use common::config::DbSettings;
use migrations::ident;
use std::time::Duration;
use tokio_postgres::Client;

/// The `application_name` the admin commands show in `pg_stat_activity`.
pub const APPLICATION: &str = "medicalpro-admin";

/// Connects to the database of `settings`; the connection's driver task ends when
/// the client is dropped.
pub async fn connect(settings: &DbSettings) -> anyhow::Result<Client> {
    pgconn::connect(settings, APPLICATION)
        .await
        .with_context(|| {
            format!(
                "connecting to database {} on {}:{} as {}",
                settings.dbname, settings.host, settings.port, settings.user
            )
        })
}

/// The central database, checked to be at the central schema this build knows
/// (`migrate-central` brings it there), so the tables a command uses exist.
pub async fn central(settings: &AdminSettings) -> anyhow::Result<Client> {
    let central = connect(&settings.central)
        .await
        .context("the central database")?;
    migrations::require_current(&central, migrations::CENTRAL).await?;
    Ok(central)
}

/// Brings the central database to the latest central schema (creating its group
/// roles and their grants, see `central/011_service_roles.sql`). Run as the
/// database's owner; services never migrate it. Returns (version before, after).
pub async fn migrate_central(settings: &AdminSettings) -> anyhow::Result<(i32, i32)> {
    let mut central = connect(&settings.central)
        .await
        .context("the central database")?;
    let before = migrations::current_version(&central).await?;
    let after = migrations::apply(&mut central, migrations::CENTRAL)
        .await
        .context("migrating the central database")?;
    Ok((before, after))
}

/// Renames a database that is closed to new connections (`ALLOW_CONNECTIONS
/// false`), ending its remaining sessions and waiting for them to go.
pub async fn rename_closed(server: &Client, from: &str, to: &str) -> anyhow::Result<()> {
    for attempt in 0.. {
        server
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&from],
            )
            .await?;
        match server
            .batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(from),
                ident(to)
            ))
            .await
        {
            Ok(()) => return Ok(()),
            // Sessions just terminated may not have ended yet.
            Err(_) if attempt < 50 => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e).with_context(|| format!("renaming database {from}")),
        }
    }
    Ok(())
}
