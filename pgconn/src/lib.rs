//! PostgreSQL connection plumbing, in one place for the gateway, the worker and the
//! admin tool: the tokio-postgres configuration of some settings (TLS with the
//! server's certificate verified, [`common::config::DbTls`]), pools with bounded
//! waits and `Verified` recycling, and one-off connections; [`keystore`], the
//! central table of wrapped clinic data keys; [`audit`], the one way into the
//! central audit trail; [`notify`] and [`revocations`], fleet-wide invalidation;
//! [`rows`], a resource's stored rows as the API shows them (worker and admin export).

pub mod audit;
pub mod keystore;
pub mod notify;
pub mod provision;
pub mod revocations;
pub mod rows;

use common::config::DbSettings;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Server-side limits a service's sessions run under, so a runaway statement or a
/// client that stops reading mid-transaction cannot hold a backend for long.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    pub statement_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
}

impl SessionLimits {
    /// What request-serving sessions get unless configured otherwise.
    pub const SERVICE: Self = Self {
        statement_timeout: Duration::from_secs(30),
        idle_in_transaction_timeout: Duration::from_secs(60),
    };

    /// The `options` startup parameter carrying the limits.
    fn options(&self) -> String {
        format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis()
        )
    }
}

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
        .keepalives_idle(Duration::from_secs(30))
        .ssl_mode(if s.tls.is_enabled() {
            SslMode::Require
        } else {
            SslMode::Disable
        });
    cfg
}

/// The same, with `limits` applied to every session.
pub fn limited(s: &DbSettings, application: &str, limits: SessionLimits) -> tokio_postgres::Config {
    let mut cfg = config(s, application);
    cfg.options(limits.options());
    cfg
}

/// The TLS connector for some settings: it accepts only a server certificate that
/// chains to the configured CA and names the host dialled. (Under `disable` the
/// connection never asks for TLS.)
pub fn tls_connector(s: &DbSettings) -> MakeRustlsConnect {
    MakeRustlsConnect::new(s.tls.config.as_ref().clone())
}

/// A pool with bounded waits and `Fast` recycling: a connection whose server went
/// away is noticed by its driver (the socket ends) and never handed out again;
/// checking every connection with a round trip at each checkout cost a query per
/// request.
pub fn pool(
    s: &DbSettings,
    cfg: tokio_postgres::Config,
    max_size: usize,
    acquire_timeout: Duration,
) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager = Manager::from_config(
        cfg,
        tls_connector(s),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
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

/// Names a database for an error message: which server, as whom, how its
/// certificate is checked, and the settings (`prefix…`) to fix.
pub fn describe(s: &DbSettings, what: &str, prefix: &str) -> String {
    let tls = match &s.tls.ca_file {
        Some(ca) => format!(
            "TLS, the server certificate checked against {} ({prefix}SSLROOTCERT)",
            ca.display()
        ),
        None => format!("without TLS ({prefix}SSLMODE=disable)"),
    };
    format!(
        "connecting to {what} `{}` at {}:{} as `{}` ({prefix}HOST, {prefix}PORT, {prefix}USER; {tls})",
        s.dbname, s.host, s.port, s.user
    )
}

/// One connection outside any pool; its driver task ends when the client is dropped.
pub async fn connect(
    s: &DbSettings,
    application: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with(s, config(s, application)).await
}

/// One connection with a configuration of the caller's (see [`limited`]).
pub async fn connect_with(
    s: &DbSettings,
    cfg: tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = cfg.connect(tls_connector(s)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}
