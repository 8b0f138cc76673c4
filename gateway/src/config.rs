//! The gateway's typed configuration, read from the environment at start-up.

use common::config::{ConfigError, DbSettings, Source};
use common::internal::InternalKey;
use common::tls::MutualTls;
use common::token::TokenService;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The settings naming the gateway's client certificate chain, its key, and the CA
/// that workers' server certificates must chain to.
pub const UPSTREAM_TLS: [&str; 3] = [
    "UPSTREAM_TLS_CERT_FILE",
    "UPSTREAM_TLS_KEY_FILE",
    "UPSTREAM_TLS_CA_FILE",
];

#[derive(Clone, Debug)]
pub struct Config {
    /// `LISTEN_ADDR`, default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// `ADMIN_ADDR` (metrics and health), default `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`, `CENTRAL_DB_NAME`.
    pub central: DbSettings,
    pub tokens: TokenService,
    pub internal: InternalKey,
    /// `REFRESH_TOKEN_TTL` in seconds, default 30 days.
    pub refresh_ttl: Duration,
    /// `DEFAULT_REGION`: where new clinics go when they do not ask; else the first region.
    pub default_region: Option<String>,
    /// `MAX_BODY_BYTES`, default 1 MiB.
    pub max_body_bytes: usize,
    /// `UPSTREAM_TIMEOUT_SECS`, default 30.
    pub upstream_timeout: Duration,
    /// `UPSTREAM_TLS_CERT_FILE`, `UPSTREAM_TLS_KEY_FILE`, `UPSTREAM_TLS_CA_FILE` (PEM):
    /// the client certificate presented to `https` workers and the CA their server
    /// certificates must chain to. Without them an `https` worker cannot be reached.
    pub upstream_tls: Option<MutualTls>,
    /// `PLACEMENT_CACHE_SIZE` (default 100 000) and `PLACEMENT_CACHE_TTL_SECS` (default 60).
    pub cache_size: usize,
    pub cache_ttl: Duration,
    /// `TRUSTED_PROXIES`: comma-separated addresses whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE` (PEM): serve HTTPS when both are set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `SHUTDOWN_GRACE_SECS`, default 25: how long in-flight requests may finish.
    pub shutdown_grace: Duration,
    /// `SHUTDOWN_DELAY_SECS`, default 0: after SIGTERM, how long to keep accepting
    /// (with `/readyz` at 503) so a load balancer stops routing here first.
    pub shutdown_delay: Duration,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let trusted_proxies = source
            .or("TRUSTED_PROXIES", "")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| ConfigError::Invalid {
                    name: "TRUSTED_PROXIES",
                    reason: format!("`{s}` is not an IP address"),
                })
            })
            .collect::<Result<Vec<IpAddr>, _>>()?;
        let tls = match (source.get("TLS_CERT_FILE"), source.get("TLS_KEY_FILE")) {
            (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => Some((c.into(), k.into())),
            (None, None) => None,
            (Some(c), Some(k)) if c.is_empty() && k.is_empty() => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "TLS_CERT_FILE",
                    reason: "set both TLS_CERT_FILE and TLS_KEY_FILE, or neither".into(),
                })
            }
        };
        let upstream_tls = MutualTls::from_source(source, UPSTREAM_TLS)?;
        if let Some(tls) = &upstream_tls {
            tls.client_config()?;
        }
        Ok(Self {
            listen: source.parse_or("LISTEN_ADDR", ([0, 0, 0, 0], 8080).into())?,
            admin_listen: source.parse_or("ADMIN_ADDR", ([127, 0, 0, 1], 9090).into())?,
            central: DbSettings::central(source)?,
            tokens: TokenService::from_source(source)?,
            internal: InternalKey::from_source(source)?,
            refresh_ttl: Duration::from_secs(source.parse_or("REFRESH_TOKEN_TTL", 30 * 86_400)?),
            default_region: source.get("DEFAULT_REGION").filter(|r| !r.is_empty()),
            max_body_bytes: source.parse_or("MAX_BODY_BYTES", 1 << 20)?,
            upstream_timeout: Duration::from_secs(source.parse_or("UPSTREAM_TIMEOUT_SECS", 30)?),
            upstream_tls,
            cache_size: source.parse_or("PLACEMENT_CACHE_SIZE", 100_000)?,
            cache_ttl: Duration::from_secs(source.parse_or("PLACEMENT_CACHE_TTL_SECS", 60)?),
            trusted_proxies,
            tls,
            shutdown_grace: Duration::from_secs(source.parse_or("SHUTDOWN_GRACE_SECS", 25)?),
            shutdown_delay: Duration::from_secs(source.parse_or("SHUTDOWN_DELAY_SECS", 0)?),
        })
    }
}
