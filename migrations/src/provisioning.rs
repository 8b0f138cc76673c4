//! The statements that give a clinic its own role and database on a regional
//! server, each checking before it acts so running them again converges. Shared by
//! the worker's provisioning and the admin tool's relocation.

use crate::{ident, literal, CLINIC_APP_ROLE, CLINIC_TEMPLATE_DB};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Error};

/// Server-side limits every clinic role's sessions run under, whoever connects with
/// it: a runaway statement is cancelled, and a session idle inside a transaction
/// (an export whose client stopped reading) is ended.
pub const ROLE_SETTINGS: &[(&str, &str)] = &[
    ("statement_timeout", "30s"),
    ("idle_in_transaction_session_timeout", "60s"),
];

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password`, computed here so the
/// password itself never appears in SQL text (nor in the server's logs or
/// `pg_stat_activity`).
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Creates the clinic's login role in the clinic group role if it is missing, and
/// sets its password as a SCRAM verifier (converging on `password` even if an
/// earlier attempt set another) and its session limits ([`ROLE_SETTINGS`]).
pub async fn ensure_role(admin: &Client, role: &str, password: &str) -> Result<(), Error> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some();
    if !exists {
        let created = admin
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}",
                ident(role),
                literal(&scram_verifier(password)),
                ident(CLINIC_APP_ROLE)
            ))
            .await;
        if let Err(e) = created {
            // Created meanwhile by a concurrent attempt.
            if !matches!(
                e.code(),
                Some(&SqlState::DUPLICATE_OBJECT) | Some(&SqlState::UNIQUE_VIOLATION)
            ) {
                return Err(e);
            }
        }
    }
    let mut sql = format!(
        "ALTER ROLE {} WITH LOGIN PASSWORD {};",
        ident(role),
        literal(&scram_verifier(password))
    );
    for (name, value) in ROLE_SETTINGS {
        sql.push_str(&format!(
            " ALTER ROLE {} SET {name} = {};",
            ident(role),
            literal(value)
        ));
    }
    admin.batch_execute(&sql).await
}

/// Whether a database of that name exists on the server.
pub async fn database_exists(admin: &Client, db: &str) -> Result<bool, Error> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await?
        .is_some())
}

/// Creates the clinic database as a copy of the server's migrated template unless
/// it exists. Cloning needs the template free of sessions, so a busy template
/// (another clone, a fleet migration) is waited for, up to about five seconds;
/// `Ok(false)` when it stayed busy.
pub async fn clone_template(admin: &Client, db: &str) -> Result<bool, Error> {
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        ident(db),
        ident(CLINIC_TEMPLATE_DB)
    );
    for attempt in 0..50u32 {
        match admin.batch_execute(&sql).await {
            Ok(()) => return Ok(true),
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => return Ok(true),
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < 49 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Only the clinic's role may connect to the clinic's database.
pub async fn restrict_connect(admin: &Client, db: &str, role: &str) -> Result<(), Error> {
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO {role}",
            db = ident(db),
            role = ident(role)
        ))
        .await
}
