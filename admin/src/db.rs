//! One-off PostgreSQL connections for the admin commands.

use anyhow::Context;
use common::config::DbSettings;
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
