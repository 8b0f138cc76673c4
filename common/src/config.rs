//! Configuration plumbing shared by the binaries: values come from the environment,
//! optionally from a `KEY=VALUE` file named by `MEDICALPRO_CONFIG` (the environment
//! wins), are parsed into typed settings at start-up, and secrets never print. The
//! reading itself is [`crate::source`]; this module adds the typed settings every
//! service shares (how to reach a PostgreSQL database, and its TLS).

use std::sync::Arc;

pub use crate::source::{ConfigError, Secret, Source, EXIT_BAD_CONFIG, PROCESS_ENV};

/// How the connection to a PostgreSQL server is protected.
#[derive(Clone, Debug)]
pub struct DbTls {
    /// The CA file (PEM) the server's certificate must chain to, with the host name
    /// it was dialled by checked too (libpq's `sslmode=verify-full`); `None` is plain
    /// TCP, only where an operator said so explicitly (`…SSLMODE=disable`).
    pub ca_file: Option<std::path::PathBuf>,
    /// The rustls client configuration (trusting nothing under `disable`, where no
    /// TLS is ever negotiated).
    pub config: Arc<rustls::ClientConfig>,
}

impl DbTls {
    /// TLS verified against the CA in `ca_file`; `name` labels errors.
    pub fn verify_full(
        name: &'static str,
        ca_file: std::path::PathBuf,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            config: crate::tls::verifying_client(name, &ca_file)?,
            ca_file: Some(ca_file),
        })
    }

    /// Plain TCP.
    pub fn disabled() -> Result<Self, ConfigError> {
        Ok(Self {
            ca_file: None,
            config: crate::tls::client_trusting_nothing().map_err(|e| ConfigError::Invalid {
                name: "SSLMODE",
                reason: e.to_string(),
            })?,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.ca_file.is_some()
    }
}

/// How to reach one PostgreSQL database.
#[derive(Clone, Debug)]
pub struct DbSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret<String>,
    pub dbname: String,
    pub tls: DbTls,
}

impl DbSettings {
    /// Reads `{prefix}HOST`, `{prefix}PORT`, `{prefix}USER`, `{prefix}PASSWORD`,
    /// `{prefix}SSLMODE` (`verify-full`, the default, or `disable`) and
    /// `{prefix}SSLROOTCERT` (the CA file, PEM; required under `verify-full`).
    pub fn from_source(
        source: &Source,
        names: [&'static str; 6],
        dbname: String,
    ) -> Result<Self, ConfigError> {
        let [host, port, user, password, sslmode, sslrootcert] = names;
        let tls = match source.or(sslmode, "verify-full").as_str() {
            "verify-full" => {
                let ca = source.get(sslrootcert).filter(|v| !v.is_empty()).ok_or(
                    ConfigError::Invalid {
                        name: sslrootcert,
                        reason: format!(
                            "is required: the CA file (PEM) that the PostgreSQL server's certificate must chain to (or set {sslmode}=disable to connect without TLS)"
                        ),
                    },
                )?;
                DbTls::verify_full(sslrootcert, ca.into())?
            }
            "disable" => DbTls::disabled()?,
            other => {
                return Err(ConfigError::Invalid {
                    name: sslmode,
                    reason: format!("`{other}`: use verify-full (the default) or disable"),
                })
            }
        };
        Ok(Self {
            host: source.or(host, "127.0.0.1"),
            port: source.parse_or(port, 5432)?,
            user: source.or(user, "postgres"),
            password: Secret::new(source.get(password).unwrap_or_default()),
            dbname,
            tls,
        })
    }

    /// The central database: `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`,
    /// `DB_SSLMODE`, `DB_SSLROOTCERT`, `CENTRAL_DB_NAME` (default `medicalpro_central`).
    pub fn central(source: &Source) -> Result<Self, ConfigError> {
        Self::from_source(
            source,
            [
                "DB_HOST",
                "DB_PORT",
                "DB_USER",
                "DB_PASSWORD",
                "DB_SSLMODE",
                "DB_SSLROOTCERT",
            ],
            source.or("CENTRAL_DB_NAME", "medicalpro_central"),
        )
    }

    /// A region's PostgreSQL server, at its maintenance database: `REGION_DB_HOST`,
    /// `REGION_DB_PORT`, `REGION_DB_USER`, `REGION_DB_PASSWORD`,
    /// `REGION_DB_SSLMODE`, `REGION_DB_SSLROOTCERT`.
    pub fn regional(source: &Source) -> Result<Self, ConfigError> {
        Self::from_source(
            source,
            [
                "REGION_DB_HOST",
                "REGION_DB_PORT",
                "REGION_DB_USER",
                "REGION_DB_PASSWORD",
                "REGION_DB_SSLMODE",
                "REGION_DB_SSLROOTCERT",
            ],
            "postgres".into(),
        )
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        Self {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }

    /// The same server and database as another role.
    pub fn with_login(&self, user: &str, password: Secret<String>) -> Self {
        Self {
            user: user.to_owned(),
            password,
            ..self.clone()
        }
    }

    /// libpq's view of the TLS settings (`sslmode`, `sslrootcert`), for the
    /// PostgreSQL tools (`pg_dump`, `pg_restore`) and replication connections.
    pub fn libpq_tls(&self) -> Vec<(&'static str, String)> {
        match &self.tls.ca_file {
            Some(ca_file) => vec![
                ("sslmode", "verify-full".into()),
                ("sslrootcert", ca_file.display().to_string()),
            ],
            None => vec![("sslmode", "disable".into())],
        }
    }
}
