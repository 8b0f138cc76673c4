//! The gateway's typed configuration, read from the environment at start-up.

use common::audit::AuditKeys;
use common::config::{ConfigError, DbSettings, Source};
use common::internal::InternalKey;
use common::tls::MutualTls;
use common::token::{TokenSigner, TokenVerifier};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Who may create a clinic through `POST /api/v1/auth/register`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Anyone, within the sign-up limits.
    Open,
    /// Only with a single-use code from `medicalpro-admin invite`.
    Invite,
    /// Nobody: clinics are created with `medicalpro-admin create-clinic`.
    Closed,
}

impl Registration {
    pub fn as_str(&self) -> &'static str {
        match self {
            Registration::Open => "open",
            Registration::Invite => "invite",
            Registration::Closed => "closed",
        }
    }
}

/// Limits on sign-ups and sign-in attempts (all counted in the central database,
/// so they hold across every gateway).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `SIGNUPS_PER_ADDRESS_PER_HOUR` (open registration; IPv6 by /64).
    pub signups_per_address: u32,
    /// `SIGNUPS_PER_HOUR`: every address together, fleet-wide.
    pub signups_fleet: u32,
    /// `SIGNUPS_PROVISIONING_MAX`: clinics being set up at once (created within the
    /// last hour and not active yet); past it, sign-ups wait.
    pub provisioning_max: u32,
    /// `LOGIN_ATTEMPTS_PER_ACCOUNT_ADDRESS` per `LOGIN_WINDOW_SECS`: attempts on one
    /// account from one address (the owner elsewhere is not locked out by them).
    pub login_per_account_address: u32,
    /// `LOGIN_ATTEMPTS_PER_ACCOUNT`: on one account from every address together.
    pub login_per_account: u32,
    /// `LOGIN_ATTEMPTS_PER_ADDRESS`: on any account from one address.
    pub login_per_address: u32,
    pub login_window: Duration,
    /// `PASSWORD_HASH_QUEUE`: password checks waiting for a hashing thread; past
    /// it a sign-in is shed with 503 + retry-after.
    pub hash_queue: usize,
}

/// Protections against slow and greedy clients on the public listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// `MAX_CONNECTIONS`: open client connections; past it new ones are closed at once.
    pub max_connections: usize,
    /// `HEADER_READ_TIMEOUT_SECS`: time to send a request's head (a kept-alive
    /// connection idle for that long is closed too).
    pub header_read_timeout: Duration,
    /// `BODY_READ_TIMEOUT_SECS`: time to send a request's body (→ 408).
    pub body_read_timeout: Duration,
}

/// The settings naming the gateway's client certificate chain, its key, and the CA
/// that workers' server certificates must chain to.
pub const UPSTREAM_TLS: [&str; 3] = [
    "UPSTREAM_TLS_CERT_FILE",
    "UPSTREAM_TLS_KEY_FILE",
    "UPSTREAM_TLS_CA_FILE",
];

/// Where password-reset mail goes and what its links point at.
#[derive(Clone, Debug)]
pub struct MailSettings {
    /// `SMTP_URL` (`smtp://host:port`, `smtps://…`, lettre's URL form): send over SMTP.
    pub smtp_url: Option<String>,
    /// `MAIL_DIR`: without `SMTP_URL`, write each message there as a `.eml` file.
    pub mail_dir: Option<PathBuf>,
    /// `MAIL_FROM`, default `MedicalPro <no-reply@localhost>`.
    pub from: String,
    /// `PUBLIC_URL`: the base of the links in messages, default `http://localhost:8080`.
    pub public_url: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// `LISTEN_ADDR`, default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// `ADMIN_ADDR` (metrics and health), default `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`, `CENTRAL_DB_NAME`.
    pub central: DbSettings,
    /// `JWT_SIGNING_KEY_FILE`, `JWT_KID`: the Ed25519 key access tokens are signed with.
    pub signer: TokenSigner,
    /// The gateway's own and retired (`JWT_RETIRED_PUBLIC_KEYS`) public keys.
    pub verifier: Arc<TokenVerifier>,
    /// `AUDIT_KEY`, `AUDIT_KEY_ID`: the audit chain's key.
    pub audit_keys: AuditKeys,
    pub internal: InternalKey,
    /// The key users' TOTP secrets are sealed with: HKDF-SHA256 of `INTERNAL_SECRET`
    /// (see [`crate::totp::sealing_keys`]), so gateways need no setting of their own.
    pub mfa_keys: Arc<common::crypto::KeyRing>,
    /// `REGISTRATION`: `open`, `invite` (the default) or `closed`.
    pub registration: Registration,
    pub limits: Limits,
    pub connections: ConnectionLimits,
    /// `REFRESH_TOKEN_TTL` in seconds, default 30 days.
    pub refresh_ttl: Duration,
    /// `DEFAULT_REGION`: where new clinics go when they do not ask; else the first region.
    pub default_region: Option<String>,
    /// `MAX_BODY_BYTES`, default 1 MiB.
    pub max_body_bytes: usize,
    /// `MAX_IMPORT_BYTES`, default 16 MiB: the body limit of a patient import.
    pub max_import_bytes: usize,
    /// `MAX_ATTACHMENT_BYTES`, default 25 MiB: the body limit of a file uploaded
    /// onto a patient (`POST /api/v1/patients/{id}/attachments`).
    pub max_attachment_bytes: usize,
    /// `ATTACHMENT_READ_TIMEOUT_SECS`, default 300: time to send such a file (at
    /// least `BODY_READ_TIMEOUT_SECS`); the caller's token was checked before.
    pub attachment_read_timeout: Duration,
    /// `UPLOAD_BUFFER_BYTES`, default 256 MiB: the bytes of imports and
    /// attachments this gateway holds in memory at once, over all clients
    /// (each upload reserves its declared length, or its limit when it declares
    /// none); past it an upload is `503` with `retry-after`.
    pub upload_buffer_bytes: usize,
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
    /// Password-reset mail (`SMTP_URL`, `MAIL_DIR`, `MAIL_FROM`, `PUBLIC_URL`).
    pub mail: MailSettings,
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
        let registration = match source.or("REGISTRATION", "invite").as_str() {
            "open" => Registration::Open,
            "invite" => Registration::Invite,
            "closed" => Registration::Closed,
            other => {
                return Err(ConfigError::Invalid {
                    name: "REGISTRATION",
                    reason: format!("`{other}`: use open, invite or closed"),
                })
            }
        };
        let limits = Limits {
            signups_per_address: source.parse_or("SIGNUPS_PER_ADDRESS_PER_HOUR", 3)?,
            signups_fleet: source.parse_or("SIGNUPS_PER_HOUR", 100)?,
            provisioning_max: source.parse_or("SIGNUPS_PROVISIONING_MAX", 10)?,
            login_per_account_address: source.parse_or("LOGIN_ATTEMPTS_PER_ACCOUNT_ADDRESS", 5)?,
            login_per_account: source.parse_or("LOGIN_ATTEMPTS_PER_ACCOUNT", 50)?,
            login_per_address: source.parse_or("LOGIN_ATTEMPTS_PER_ADDRESS", 30)?,
            login_window: Duration::from_secs(source.parse_or("LOGIN_WINDOW_SECS", 900)?),
            hash_queue: source.parse_or("PASSWORD_HASH_QUEUE", 16)?,
        };
        if limits.login_window.is_zero() || limits.login_per_account_address == 0 {
            return Err(ConfigError::Invalid {
                name: "LOGIN_WINDOW_SECS",
                reason: "the window and every limit must be at least 1".into(),
            });
        }
        let connections = ConnectionLimits {
            max_connections: source.parse_or("MAX_CONNECTIONS", 10_000)?,
            header_read_timeout: Duration::from_secs(
                source.parse_or("HEADER_READ_TIMEOUT_SECS", 10)?,
            ),
            body_read_timeout: Duration::from_secs(source.parse_or("BODY_READ_TIMEOUT_SECS", 30)?),
        };
        if connections.max_connections == 0
            || connections.header_read_timeout.is_zero()
            || connections.body_read_timeout.is_zero()
        {
            return Err(ConfigError::Invalid {
                name: "MAX_CONNECTIONS",
                reason: "connection limits and timeouts must be at least 1".into(),
            });
        }
        let mail = MailSettings {
            smtp_url: source.get("SMTP_URL").filter(|u| !u.is_empty()),
            mail_dir: source
                .get("MAIL_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            from: source.or("MAIL_FROM", "MedicalPro <no-reply@localhost>"),
            public_url: source
                .or("PUBLIC_URL", "http://localhost:8080")
                .trim_end_matches('/')
                .to_owned(),
        };
        if mail.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::Invalid {
                name: "MAIL_FROM",
                reason: "not a mailbox (`Name <address>` or `address`)".into(),
            });
        }
        if let Some(url) = &mail.smtp_url {
            if let Err(e) = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url) {
                return Err(ConfigError::Invalid {
                    name: "SMTP_URL",
                    reason: e.to_string(),
                });
            }
        }
        let largest_upload = [
            source.parse_or("MAX_ATTACHMENT_BYTES", 25usize << 20)?,
            source.parse_or("MAX_IMPORT_BYTES", 16usize << 20)?,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if source.parse_or("UPLOAD_BUFFER_BYTES", 256usize << 20)? < largest_upload {
            return Err(ConfigError::Invalid {
                name: "UPLOAD_BUFFER_BYTES",
                reason: format!(
                    "must be at least the largest upload allowed ({largest_upload} bytes: MAX_ATTACHMENT_BYTES, MAX_IMPORT_BYTES)"
                ),
            });
        }
        let (signer, verifier) = common::token::gateway_tokens(source)?;
        Ok(Self {
            listen: source.parse_or("LISTEN_ADDR", ([0, 0, 0, 0], 8080).into())?,
            admin_listen: source.parse_or("ADMIN_ADDR", ([127, 0, 0, 1], 9090).into())?,
            central: DbSettings::central(source)?,
            signer,
            verifier: Arc::new(verifier),
            audit_keys: AuditKeys::from_source(source)?,
            internal: InternalKey::from_source(source)?,
            mfa_keys: Arc::new(crate::totp::sealing_keys(
                source.required("INTERNAL_SECRET")?.as_bytes(),
            )),
            registration,
            limits,
            connections,
            refresh_ttl: Duration::from_secs(source.parse_or("REFRESH_TOKEN_TTL", 30 * 86_400)?),
            default_region: source.get("DEFAULT_REGION").filter(|r| !r.is_empty()),
            max_body_bytes: source.parse_or("MAX_BODY_BYTES", 1 << 20)?,
            max_import_bytes: source.parse_or("MAX_IMPORT_BYTES", 16 << 20)?,
            max_attachment_bytes: source.parse_or("MAX_ATTACHMENT_BYTES", 25 << 20)?,
            attachment_read_timeout: Duration::from_secs(
                source.parse_or("ATTACHMENT_READ_TIMEOUT_SECS", 300)?,
            )
            .max(connections.body_read_timeout),
            upload_buffer_bytes: source.parse_or("UPLOAD_BUFFER_BYTES", 256 << 20)?,
            upstream_timeout: Duration::from_secs(source.parse_or("UPSTREAM_TIMEOUT_SECS", 30)?),
            upstream_tls,
            cache_size: source.parse_or("PLACEMENT_CACHE_SIZE", 100_000)?,
            cache_ttl: Duration::from_secs(source.parse_or("PLACEMENT_CACHE_TTL_SECS", 60)?),
            trusted_proxies,
            tls,
            shutdown_grace: Duration::from_secs(source.parse_or("SHUTDOWN_GRACE_SECS", 25)?),
            shutdown_delay: Duration::from_secs(source.parse_or("SHUTDOWN_DELAY_SECS", 0)?),
            mail,
        })
    }
}
