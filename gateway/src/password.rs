//! Password hashing with argon2id at OWASP parameters (m = 19 MiB, t = 2, p = 1),
//! run on blocking threads behind a semaphore so a burst of logins cannot starve the
//! proxy or exhaust memory.

use crate::error::GatewayError;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Accepted password lengths, in characters; longer ones are refused, never truncated.
pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 128;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A real hash verified for unknown e-mails, so timing does not tell them apart.
    dummy: Arc<String>,
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants within argon2's accepted ranges.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &str) -> Result<String, GatewayError> {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| GatewayError::Internal(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| GatewayError::Internal(e.to_string()))
}

fn verify_blocking(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Hasher {
    pub fn new() -> Result<Self, GatewayError> {
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Self {
            permits: Arc::new(Semaphore::new(parallel)),
            dummy: Arc::new(hash_blocking("medicalpro-dummy-password")?),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GatewayError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))
    }

    pub async fn hash(&self, password: &str) -> Result<String, GatewayError> {
        let password = password.to_owned();
        self.blocking(move || hash_blocking(&password)).await?
    }

    /// Verifies against `hash`, or against the dummy hash when there is none.
    pub async fn verify(&self, hash: Option<String>, password: &str) -> Result<bool, GatewayError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_str().to_owned());
        let password = password.to_owned();
        let ok = self
            .blocking(move || verify_blocking(&hash, &password))
            .await?;
        Ok(ok && known)
    }
}

/// Checks a new password's length (in characters).
pub fn check_new(password: &str) -> Result<(), GatewayError> {
    let n = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&n) {
        return Err(GatewayError::BadRequest(format!(
            "The password must be {MIN_LEN} to {MAX_LEN} characters long."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_pass() {
        let h = Hasher::new().unwrap();
        let hash = h.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify(Some(hash.clone()), "correct horse battery")
            .await
            .unwrap());
        assert!(!h.verify(Some(hash), "correct horse batterx").await.unwrap());
        assert!(!h.verify(None, "medicalpro-dummy-password").await.unwrap());
        assert!(check_new("short").is_err());
        assert!(check_new(&"x".repeat(129)).is_err());
        assert!(check_new(&"é".repeat(12)).is_ok());
    }
}
