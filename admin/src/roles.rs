//! The login roles services use on the central database: members of the group
//! roles `medicalpro_gateway` or `medicalpro_worker` (made, with their grants, by
//! `central/011_service_roles.sql`), owning nothing. The password is handed to
//! PostgreSQL as a SCRAM verifier only, never as plaintext SQL.

use crate::db;
use anyhow::{bail, Context};
use common::config::DbSettings;
use migrations::{ident, literal, provisioning};

/// Which service a login role is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceKind {
    Gateway,
    Worker,
}

impl ServiceKind {
    /// The group role holding the service's grants.
    pub fn group(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "medicalpro_gateway",
            ServiceKind::Worker => "medicalpro_worker",
        }
    }
}

/// Creates (or updates) login role `name` for `kind` with `password`; the central
/// database must be migrated first (the group roles exist then).
pub async fn create_service_role(
    central: &DbSettings,
    kind: ServiceKind,
    name: &str,
    password: &str,
) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!("a role name is 1 to 63 lowercase letters, digits and underscores");
    }
    if password.len() < 16 {
        bail!(
            "a service role's password is at least 16 characters (e.g. `openssl rand -base64 32`)"
        );
    }
    let central = db::connect(central).await.context("the central database")?;
    migrations::require_current(&central, migrations::CENTRAL).await?;
    let verifier = literal(&provisioning::scram_verifier(password));
    let exists = central
        .query_opt(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await?;
    if exists.as_ref().is_some_and(|r| r.get::<_, bool>(0)) {
        bail!(
            "role {name} exists with superuser or create privileges; a service role must have none"
        );
    }
    let mut sql = if exists.is_some() {
        format!("ALTER ROLE {} WITH LOGIN PASSWORD {verifier};", ident(name))
    } else {
        format!(
            "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {verifier};",
            ident(name)
        )
    };
    sql.push_str(&format!(
        " GRANT {} TO {};",
        ident(kind.group()),
        ident(name)
    ));
    central
        .batch_execute(&sql)
        .await
        .with_context(|| format!("creating service role {name}"))?;
    Ok(())
}
