//! The statements that give a clinic its own role and database on a regional
//! server, each checking before it acts so running them again converges. Shared by
//! the worker's provisioning and the admin tool's relocation.

use crate::{ident, literal, CLINIC_APP_ROLE, CLINIC_TEMPLATE_DB};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Error};

/// Creates the clinic's login role in the clinic group role if it is missing, and
/// sets its password (converging on `password` even if an earlier attempt set
/// another).
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
                literal(password),
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
    admin
        .batch_execute(&format!(
            "ALTER ROLE {} WITH LOGIN PASSWORD {}",
            ident(role),
            literal(password)
        ))
        .await
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
