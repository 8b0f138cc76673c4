//! The worker's typed configuration, read from the environment at start-up.

use common::config::{ConfigError, DbSettings, Source};
use common::crypto::KeyRing;
use common::internal::InternalKey;
use common::token::TokenService;
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
    /// `WORKER_URL`: how gateways reach this worker (recorded in the central DB).
    pub advertise_url: String,
    /// `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`, `CENTRAL_DB_NAME`.
    pub central: DbSettings,
    /// `REGION_DB_HOST`, `REGION_DB_PORT`, `REGION_DB_USER`, `REGION_DB_PASSWORD`:
    /// the region's PostgreSQL server, as a role that may create roles and databases.
    pub regional: DbSettings,
    pub tokens: TokenService,
    pub internal: InternalKey,
    pub keys: Arc<KeyRing>,
    /// `MAX_BODY_BYTES`, default 1 MiB.
    pub max_body_bytes: usize,
    pub pool: PoolSettings,
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
        Ok(Self {
            listen,
            admin_listen: source.parse_or("ADMIN_ADDR", ([127, 0, 0, 1], 9091).into())?,
            advertise_url: source.or("WORKER_URL", &format!("http://{listen}")),
            region,
            central: DbSettings::central(source)?,
            regional: DbSettings::regional(source)?,
            tokens: TokenService::from_source(source)?,
            internal: InternalKey::from_source(source)?,
            keys: Arc::new(KeyRing::from_source(source)?),
            max_body_bytes: source.parse_or("MAX_BODY_BYTES", 1 << 20)?,
            pool,
        })
    }
}
