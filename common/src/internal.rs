//! The gateway → worker credential.
//!
//! The gateway signs what the worker must be able to trust about a forwarded request
//! (time, request id, client IP, method and path) with HMAC-SHA256 under
//! `INTERNAL_SECRET`; the worker recomputes it and refuses anything unsigned, stale or
//! altered. Clients cannot set these headers: the gateway strips every `x-medicalpro-*`
//! header it receives.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

use crate::config::{ConfigError, Secret, Source};

pub const HEADER_PREFIX: &str = "x-medicalpro-";
pub const HEADER_TIMESTAMP: &str = "x-medicalpro-timestamp";
pub const HEADER_CLIENT_IP: &str = "x-medicalpro-client-ip";
pub const HEADER_SIGNATURE: &str = "x-medicalpro-signature";
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// How far a signature's timestamp may be from the worker's clock.
pub const MAX_SKEW_SECS: i64 = 60;

/// What the signature covers.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded<'a> {
    pub timestamp: i64,
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub path_and_query: &'a str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("missing gateway credential")]
    Missing,
    #[error("gateway credential is stale")]
    Stale,
    #[error("gateway credential does not match")]
    Mismatch,
}

#[derive(Clone, Debug)]
pub struct InternalKey(Secret<Vec<u8>>);

impl InternalKey {
    /// Reads `INTERNAL_SECRET` (at least 32 bytes).
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Self::new(source.required("INTERNAL_SECRET")?.as_bytes())
    }

    pub fn new(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < 32 {
            return Err(ConfigError::Invalid {
                name: "INTERNAL_SECRET",
                reason: "must be at least 32 bytes".into(),
            });
        }
        Ok(Self(Secret::new(secret.to_vec())))
    }

    fn mac(&self, f: &Forwarded<'_>) -> Vec<u8> {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.0.expose()) else {
            unreachable!("HMAC-SHA256 takes keys of any length")
        };
        let text = format!(
            "{}\n{}\n{}\n{}\n{}",
            f.timestamp, f.request_id, f.client_ip, f.method, f.path_and_query
        );
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The hex signature the gateway sends.
    pub fn sign(&self, f: &Forwarded<'_>) -> String {
        hex::encode(self.mac(f))
    }

    /// Checks a signature against what the worker saw, at time `now`.
    pub fn verify(
        &self,
        f: &Forwarded<'_>,
        signature: &str,
        now: i64,
    ) -> Result<(), CredentialError> {
        if (now - f.timestamp).abs() > MAX_SKEW_SECS {
            return Err(CredentialError::Stale);
        }
        let given = hex::decode(signature).map_err(|_| CredentialError::Mismatch)?;
        if bool::from(self.mac(f).ct_eq(&given)) {
            Ok(())
        } else {
            Err(CredentialError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_signed_part() {
        let key = InternalKey::new(&[9u8; 32]).unwrap();
        let f = Forwarded {
            timestamp: 1000,
            request_id: "r1",
            client_ip: "10.1.2.3".parse().unwrap(),
            method: "GET",
            path_and_query: "/api/v1/patients",
        };
        let sig = key.sign(&f);
        assert_eq!(key.verify(&f, &sig, 1010), Ok(()));
        assert_eq!(key.verify(&f, &sig, 2000), Err(CredentialError::Stale));
        let spoofed = Forwarded {
            client_ip: "1.1.1.1".parse().unwrap(),
            ..f
        };
        assert_eq!(
            key.verify(&spoofed, &sig, 1000),
            Err(CredentialError::Mismatch)
        );
        let other_path = Forwarded {
            path_and_query: "/api/v1/patients/x",
            ..f
        };
        assert_eq!(
            key.verify(&other_path, &sig, 1000),
            Err(CredentialError::Mismatch)
        );
        assert_eq!(key.verify(&f, "zz", 1000), Err(CredentialError::Mismatch));
        assert!(InternalKey::new(b"short").is_err());
    }
}
