//! PostgreSQL connection plumbing, in one place for the gateway, the worker and the
//! admin tool: the tokio-postgres configuration of some settings, pools with bounded
//! waits and `Verified` recycling, and one-off connections; and [`keystore`], the
//! central table of wrapped clinic data keys.

pub mod keystore;

use common::config::DbSettings;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::NoTls;

/// The tokio-postgres configuration for some settings.
pub fn config(s: &DbSettings, application: &str) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&s.host)
        .port(s.port)
        .user(&s.user)
        .password(s.password.expose().as_bytes())
        .dbname(&s.dbname)
        .application_name(application)
        .connect_timeout(Duration::from_secs(5))
        .keepalives_idle(Duration::from_secs(30));
    cfg
}

/// A pool with bounded waits and `Verified` recycling, so connections broken by a
/// database restart are noticed instead of handed out.
pub fn pool(
    cfg: tokio_postgres::Config,
    max_size: usize,
    acquire_timeout: Duration,
) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(acquire_timeout))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(Runtime::Tokio1)
        .build()
}

/// One connection outside any pool; its driver task ends when the client is dropped.
pub async fn connect(
    s: &DbSettings,
    application: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config(s, application).connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}
