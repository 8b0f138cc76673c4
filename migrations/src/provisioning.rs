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
/// `pg_stat_activity`). 4 096 PBKDF2 iterations, for passwords people choose.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// PBKDF2 iterations of a clinic role's verifier. Its password is 256 random bits:
/// iterations only slow down guessing a weak password, and would cost every new
/// clinic connection (the client derives the key again) ~2 ms of CPU for nothing.
pub const CLINIC_ROLE_ITERATIONS: u32 = 1;

/// A SCRAM-SHA-256 verifier (RFC 5802/7677, PostgreSQL's format) of a random ASCII
/// password with `iterations` PBKDF2 rounds and a fresh 16-byte salt.
pub fn scram_verifier_random_password(password: &str, iterations: u32) -> String {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    verifier_with_salt(password, &salt, iterations)
        // HMAC takes keys of any length: unreachable, but never a panic.
        .unwrap_or_else(|| scram_verifier(password))
}

fn verifier_with_salt(password: &str, salt: &[u8], iterations: u32) -> Option<String> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let mac = |key: &[u8], data: &[&[u8]]| -> Option<[u8; 32]> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        for d in data {
            m.update(d);
        }
        Some(m.finalize().into_bytes().into())
    };
    let iterations = iterations.max(1);
    // Hi(): PBKDF2-HMAC-SHA-256, one 32-byte block (the password is ASCII, which
    // SASLprep leaves as it is).
    let mut u = mac(password.as_bytes(), &[salt, &1u32.to_be_bytes()])?;
    let mut salted = u;
    for _ in 1..iterations {
        u = mac(password.as_bytes(), &[&u])?;
        salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
    }
    let client_key = mac(&salted, &[b"Client Key"])?;
    let stored_key = Sha256::digest(client_key);
    let server_key = mac(&salted, &[b"Server Key"])?;
    Some(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    ))
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
                literal(&scram_verifier_random_password(
                    password,
                    CLINIC_ROLE_ITERATIONS
                )),
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
        literal(&scram_verifier_random_password(
            password,
            CLINIC_ROLE_ITERATIONS
        ))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    #[test]
    fn verifiers_match_the_reference_implementation() {
        let password = "8f14e45fceea167a5a36dedd4bea2543";
        let reference = scram_verifier(password);
        // SCRAM-SHA-256$4096:<salt>$<stored>:<server>
        let salt_b64 = reference.split(['$', ':']).nth(2).unwrap();
        let salt = STANDARD.decode(salt_b64).unwrap();
        assert_eq!(
            verifier_with_salt(password, &salt, 4096).unwrap(),
            reference
        );
        let cheap = scram_verifier_random_password(password, CLINIC_ROLE_ITERATIONS);
        assert!(cheap.starts_with("SCRAM-SHA-256$1:"), "{cheap}");
        assert_ne!(
            cheap,
            scram_verifier_random_password(password, 1),
            "fresh salt"
        );
    }
}
