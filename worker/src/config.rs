//! The worker's typed configuration, read from the environment at start-up.

use common::audit::AuditKeys;
use common::config::{ConfigError, DbSettings, Source};
use common::crypto::KeyRing;
use common::internal::InternalKey;
use common::tls::MutualTls;
use common::token::TokenVerifier;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Limits of one clinic's pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    pub max_size: usize,
    /// Connections kept open while the clinic is active.
    pub min_idle: usize,
    pub acquire_timeout: Duration,
    /// Idle connections above `min_idle` are closed after this long.
    pub idle_timeout: Duration,
    /// A clinic with no request for this long has its pool closed.
    pub inactive_after: Duration,
    /// Connections all clinic pools of this worker may hold on the regional server
    /// together; keep the sum over the workers sharing a server below its
    /// `max_connections` (minus the provisioning, admin and superuser reserve).
    pub server_budget: usize,
    /// How often an open clinic pool is re-checked against the central database
    /// (suspended or moved clinics stop being served here).
    pub revalidate_after: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_size: 10,
            min_idle: 2,
            acquire_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
            inactive_after: Duration::from_secs(60),
            server_budget: 80,
            revalidate_after: Duration::from_secs(30),
        }
    }
}

/// Bounds on streamed clinic exports (each holds a connection and a snapshot).
#[derive(Clone, Copy, Debug)]
pub struct ExportLimits {
    pub per_clinic: usize,
    pub total: usize,
    pub idle: Duration,
}

/// How the deliverer works (`WEBHOOK_*` settings).
#[derive(Clone, Copy, Debug)]
pub struct WebhookSettings {
    /// Receivers on private addresses, and `http` URLs, allowed (development).
    pub allow_private: bool,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub disable_after: Duration,
    pub sweep: Duration,
    pub concurrency: usize,
    pub retention: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(10 * 3600),
            disable_after: Duration::from_secs(3 * 86_400),
            sweep: Duration::from_secs(30),
            concurrency: 8,
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// `LISTEN_ADDR`, default `0.0.0.0:8081`.
    pub listen: SocketAddr,
    /// `ADMIN_ADDR` (metrics and health), default `127.0.0.1:9091`.
    pub admin_listen: SocketAddr,
    /// `REGION`: the region this worker serves.
    pub region: String,
    /// `WORKER_URL`: how gateways reach this worker (recorded in the central DB);
    /// default `http://LISTEN_ADDR`, or `https://LISTEN_ADDR` under mutual TLS.
    pub advertise_url: String,
    /// `WORKER_TLS_CERT_FILE`, `WORKER_TLS_KEY_FILE`, `WORKER_TLS_CLIENT_CA_FILE`
    /// (PEM): when set, the public listener speaks TLS 1.2/1.3 only and requires a
    /// client certificate chaining to the CA (the gateways').
    pub tls: Option<MutualTls>,
    /// `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`, `CENTRAL_DB_NAME`.
    pub central: DbSettings,
    /// `REGION_DB_HOST`, `REGION_DB_PORT`, `REGION_DB_USER`, `REGION_DB_PASSWORD`:
    /// the region's PostgreSQL server, as a role that may create roles and databases.
    pub regional: DbSettings,
    /// `JWT_PUBLIC_KEYS`: the gateways' public keys access tokens are checked with
    /// (workers hold no signing key).
    pub tokens: Arc<TokenVerifier>,
    /// `AUDIT_KEY`, `AUDIT_KEY_ID`: the audit chain's key.
    pub audit_keys: AuditKeys,
    /// `EXPORTS_PER_CLINIC` (default 1) and `EXPORTS_MAX` (default 4): streamed
    /// clinic exports running at once, per clinic and on this worker; a client that
    /// reads nothing for `EXPORT_IDLE_SECS` (default 20) is cut off.
    pub exports: ExportLimits,
    pub internal: InternalKey,
    pub keys: Arc<KeyRing>,
    /// `MAX_BODY_BYTES`, default 1 MiB.
    pub max_body_bytes: usize,
    /// `MAX_IMPORT_BYTES` (default 16 MiB) and `MAX_IMPORT_ROWS` (default 10 000):
    /// the bounds of a patient import's body.
    pub max_import_bytes: usize,
    pub max_import_rows: usize,
    /// Webhook deliveries (`WEBHOOK_ALLOW_PRIVATE_TARGETS`, `WEBHOOK_TIMEOUT_SECS`,
    /// `WEBHOOK_RETRY_BASE_MS`, `WEBHOOK_RETRY_MAX_SECS`,
    /// `WEBHOOK_DISABLE_AFTER_SECS`, `WEBHOOK_SWEEP_SECS`, `WEBHOOK_CONCURRENCY`,
    /// `WEBHOOK_RETENTION_DAYS`).
    pub webhooks: WebhookSettings,
    /// `MAX_ATTACHMENT_BYTES` (default 25 MiB): the largest file uploaded onto a
    /// patient.
    pub max_attachment_bytes: usize,
    pub pool: PoolSettings,
    /// `SLOW_QUERY_MS` (default 200): clinic data statements at least this slow are
    /// logged and counted (0: every statement).
    pub slow_query: Duration,
    /// `BACKUP_MAX_AGE_SECS` (default 26 h): a clinic whose latest successful backup
    /// is older is counted in `medicalpro_clinics_backup_overdue`.
    pub backup_max_age: Duration,
    /// `BACKUP_CHECK_SECS` (default 60): how often the backup gauges are refreshed.
    pub backup_check: Duration,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let listen: SocketAddr = source.parse_or("LISTEN_ADDR", ([0, 0, 0, 0], 8081).into())?;
        let region = source.required("REGION")?;
        if region.is_empty()
            || region.len() > 63
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::Invalid {
                name: "REGION",
                reason: "use lowercase letters, digits and dashes".into(),
            });
        }
        let defaults = PoolSettings::default();
        let pool = PoolSettings {
            max_size: source.parse_or("CLINIC_POOL_MAX", defaults.max_size)?,
            min_idle: source.parse_or("CLINIC_POOL_MIN_IDLE", defaults.min_idle)?,
            acquire_timeout: Duration::from_secs(source.parse_or(
                "CLINIC_POOL_ACQUIRE_SECS",
                defaults.acquire_timeout.as_secs(),
            )?),
            idle_timeout: Duration::from_secs(
                source.parse_or("CLINIC_POOL_IDLE_SECS", defaults.idle_timeout.as_secs())?,
            ),
            inactive_after: Duration::from_secs(source.parse_or(
                "CLINIC_POOL_INACTIVE_SECS",
                defaults.inactive_after.as_secs(),
            )?),
            server_budget: source.parse_or("CLINIC_POOL_BUDGET", defaults.server_budget)?,
            revalidate_after: Duration::from_secs(source.parse_or(
                "CLINIC_REVALIDATE_SECS",
                defaults.revalidate_after.as_secs(),
            )?),
        };
        if pool.server_budget == 0 {
            return Err(ConfigError::Invalid {
                name: "CLINIC_POOL_BUDGET",
                reason: "must be at least 1".into(),
            });
        }
        if pool.max_size == 0 || pool.min_idle > pool.max_size {
            return Err(ConfigError::Invalid {
                name: "CLINIC_POOL_MAX",
                reason: "must be at least 1 and at least CLINIC_POOL_MIN_IDLE".into(),
            });
        }
        let backup_check = Duration::from_secs(source.parse_or(
            "BACKUP_CHECK_SECS",
            crate::telemetry::DEFAULT_BACKUP_CHECK.as_secs(),
        )?);
        if backup_check.is_zero() {
            return Err(ConfigError::Invalid {
                name: "BACKUP_CHECK_SECS",
                reason: "must be at least 1".into(),
            });
        }
        let webhooks = webhook_settings(source)?;
        let tls = MutualTls::from_source(source, crate::tls::SETTINGS)?;
        if let Some(tls) = &tls {
            tls.server_config()?;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertise_url = source.or("WORKER_URL", &format!("{scheme}://{listen}"));
        if tls.is_some() && !advertise_url.starts_with("https://") {
            return Err(ConfigError::Invalid {
                name: "WORKER_URL",
                reason: "must be an https:// URL when WORKER_TLS_CERT_FILE is set".into(),
            });
        }
        Ok(Self {
            listen,
            admin_listen: source.parse_or("ADMIN_ADDR", ([127, 0, 0, 1], 9091).into())?,
            advertise_url,
            tls,
            region,
            central: DbSettings::central(source)?,
            regional: DbSettings::regional(source)?,
            tokens: Arc::new(TokenVerifier::from_source(source)?),
            audit_keys: AuditKeys::from_source(source)?,
            exports: ExportLimits {
                per_clinic: source.parse_or("EXPORTS_PER_CLINIC", 1)?,
                total: source.parse_or("EXPORTS_MAX", 4)?,
                idle: Duration::from_secs(source.parse_or("EXPORT_IDLE_SECS", 20)?),
            },
            internal: InternalKey::from_source(source)?,
            keys: Arc::new(KeyRing::from_source(source)?),
            max_body_bytes: source.parse_or("MAX_BODY_BYTES", 1 << 20)?,
            max_import_bytes: source.parse_or("MAX_IMPORT_BYTES", 16 << 20)?,
            max_import_rows: source.parse_or("MAX_IMPORT_ROWS", 10_000)?,
            webhooks,
            max_attachment_bytes: source.parse_or("MAX_ATTACHMENT_BYTES", 25 << 20)?,
            pool,
            slow_query: Duration::from_millis(source.parse_or(
                "SLOW_QUERY_MS",
                crate::telemetry::DEFAULT_SLOW_QUERY.as_millis() as u64,
            )?),
            backup_max_age: Duration::from_secs(source.parse_or(
                "BACKUP_MAX_AGE_SECS",
                crate::telemetry::DEFAULT_BACKUP_MAX_AGE.as_secs(),
            )?),
            backup_check,
        })
    }
}

/// The webhook deliverer's settings; every duration and count at least 1.
fn webhook_settings(source: &Source) -> Result<WebhookSettings, ConfigError> {
    let d = WebhookSettings::default();
    let settings = WebhookSettings {
        allow_private: source.parse_or("WEBHOOK_ALLOW_PRIVATE_TARGETS", d.allow_private)?,
        timeout: Duration::from_secs(source.parse_or("WEBHOOK_TIMEOUT_SECS", d.timeout.as_secs())?),
        retry_base: Duration::from_millis(
            source.parse_or("WEBHOOK_RETRY_BASE_MS", d.retry_base.as_millis() as u64)?,
        ),
        retry_max: Duration::from_secs(
            source.parse_or("WEBHOOK_RETRY_MAX_SECS", d.retry_max.as_secs())?,
        ),
        disable_after: Duration::from_secs(
            source.parse_or("WEBHOOK_DISABLE_AFTER_SECS", d.disable_after.as_secs())?,
        ),
        sweep: Duration::from_secs(source.parse_or("WEBHOOK_SWEEP_SECS", d.sweep.as_secs())?),
        concurrency: source.parse_or("WEBHOOK_CONCURRENCY", d.concurrency)?,
        retention: Duration::from_secs(
            86_400 * source.parse_or("WEBHOOK_RETENTION_DAYS", d.retention.as_secs() / 86_400)?,
        ),
    };
    let zero = [
        ("WEBHOOK_TIMEOUT_SECS", settings.timeout.is_zero()),
        ("WEBHOOK_RETRY_BASE_MS", settings.retry_base.is_zero()),
        ("WEBHOOK_RETRY_MAX_SECS", settings.retry_max.is_zero()),
        (
            "WEBHOOK_DISABLE_AFTER_SECS",
            settings.disable_after.is_zero(),
        ),
        ("WEBHOOK_SWEEP_SECS", settings.sweep.is_zero()),
        ("WEBHOOK_CONCURRENCY", settings.concurrency == 0),
        ("WEBHOOK_RETENTION_DAYS", settings.retention.is_zero()),
    ];
    if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1".into(),
        });
    }
    Ok(settings)
}
