//! Where the admin commands connect, read from the environment (over the file named
//! by `MEDICALPRO_CONFIG`) with the same names the worker uses:
//!
//! - the central database: `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`,
//!   `CENTRAL_DB_NAME` (default `medicalpro_central`);
//! - the region's PostgreSQL server, as a role that owns the clinic databases (the
//!   worker's provisioning role): `REGION_DB_HOST`, `REGION_DB_PORT`,
//!   `REGION_DB_USER`, `REGION_DB_PASSWORD`;
//! - for `relocate`, the destination region's server as well:
//!   `TARGET_REGION_DB_HOST`, `TARGET_REGION_DB_PORT`, `TARGET_REGION_DB_USER`,
//!   `TARGET_REGION_DB_PASSWORD`;
//! - each server's TLS: `…SSLMODE` (`verify-full`, the default, or `disable`) and
//!   `…SSLROOTCERT` (the CA file) with the same prefixes;
//! - the audit chain's key, for commands that record in or verify the central
//!   audit trail: `AUDIT_KEY`, `AUDIT_KEY_ID`, `AUDIT_KEYS_RETIRED`.

use common::audit::AuditKeys;
use common::config::{ConfigError, DbSettings, Source};

/// Connection settings of the admin commands.
#[derive(Clone, Debug)]
pub struct AdminSettings {
    /// The central database.
    pub central: DbSettings,
    /// The regional server; `dbname` is its maintenance database (`postgres`), and
    /// clinic and template databases are reached with [`DbSettings::with_dbname`].
    pub regional: DbSettings,
    /// The destination server of a relocation, when `TARGET_REGION_DB_HOST` is set.
    pub target: Option<DbSettings>,
    /// The audit chain's keys, when `AUDIT_KEY` is set.
    pub audit_keys: Option<AuditKeys>,
}

impl AdminSettings {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Ok(Self {
            central: DbSettings::central(source)?,
            regional: DbSettings::regional(source)?,
            target: match source.get("TARGET_REGION_DB_HOST") {
                Some(_) => Some(DbSettings::from_source(
                    source,
                    [
                        "TARGET_REGION_DB_HOST",
                        "TARGET_REGION_DB_PORT",
                        "TARGET_REGION_DB_USER",
                        "TARGET_REGION_DB_PASSWORD",
                        "TARGET_REGION_DB_SSLMODE",
                        "TARGET_REGION_DB_SSLROOTCERT",
                    ],
                    "postgres".into(),
                )?),
                None => None,
            },
            audit_keys: match source.get("AUDIT_KEY").filter(|k| !k.is_empty()) {
                Some(_) => Some(AuditKeys::from_source(source)?),
                None => None,
            },
        })
    }

    /// The audit chain's keys, or an error saying which settings to give.
    pub fn audit_keys(&self) -> anyhow::Result<&AuditKeys> {
        self.audit_keys.as_ref().ok_or_else(|| {
            anyhow::anyhow!("set AUDIT_KEY (and AUDIT_KEY_ID) as the services have them: this command records in the audit trail")
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_worker_names() {
        let src = Source::from_pairs([
            ("DB_HOST", "central.internal"),
            ("DB_PORT", "5433"),
            ("DB_USER", "medicalpro"),
            ("DB_PASSWORD", "c-secret"),
            ("REGION_DB_HOST", "pg.eu-west.internal"),
            ("REGION_DB_PORT", "5434"),
            ("REGION_DB_USER", "provisioner"),
            ("REGION_DB_PASSWORD", "r-secret"),
            ("DB_SSLMODE", "disable"),
            ("REGION_DB_SSLMODE", "disable"),
        ]);
        let s = AdminSettings::from_source(&src).unwrap();
        assert_eq!(s.central.host, "central.internal");
        assert_eq!(s.central.port, 5433);
        assert_eq!(s.central.dbname, "medicalpro_central");
        assert_eq!(s.central.password.expose(), "c-secret");
        assert_eq!(s.regional.host, "pg.eu-west.internal");
        assert_eq!(s.regional.port, 5434);
        assert_eq!(s.regional.user, "provisioner");
        assert_eq!(s.regional.dbname, "postgres");
        assert_eq!(s.regional.password.expose(), "r-secret");
    }

    #[test]
    fn bad_port_is_refused() {
        let src = Source::from_pairs([
            ("REGION_DB_PORT", "many"),
            ("DB_SSLMODE", "disable"),
            ("REGION_DB_SSLMODE", "disable"),
        ]);
        let err = AdminSettings::from_source(&src).unwrap_err().to_string();
        assert!(err.contains("REGION_DB_PORT"), "{err}");
    }

    #[test]
    fn tls_is_required_unless_disabled_explicitly() {
        let err = AdminSettings::from_source(&Source::from_pairs([("DB_HOST", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DB_SSLROOTCERT"), "{err}");
        let src = Source::from_pairs([
            ("DB_SSLROOTCERT", "/nonexistent/ca.pem"),
            ("REGION_DB_SSLMODE", "disable"),
        ]);
        let err = AdminSettings::from_source(&src).unwrap_err().to_string();
        assert!(
            err.contains("DB_SSLROOTCERT") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let src = Source::from_pairs([("DB_SSLMODE", "prefer")]);
        assert!(
            AdminSettings::from_source(&src).is_err(),
            "no silent downgrade modes"
        );
    }
}
