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
//!   `TARGET_REGION_DB_PASSWORD`.

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
                    ],
                    "postgres".into(),
                )?),
                None => None,
            },
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
        let src = Source::from_pairs([("REGION_DB_PORT", "many")]);
        assert!(AdminSettings::from_source(&src).is_err());
    }
}
