//! Mutual TLS between gateway and worker: rustls configurations built from PEM files
//! named by settings, with the `ring` provider and TLS 1.2 and 1.3 only. Each side
//! presents a certificate and checks the other's against a CA of its own choosing.
//! A file that cannot be read or holds nothing usable is a configuration error that
//! names its setting, so a process refuses to start (exit 64) and `--check` tells.

use crate::source::{ConfigError, Source};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One end of a mutual-TLS link: its own certificate chain and private key, and the
/// CA certificates the other end's certificate must chain to (all PEM files).
#[derive(Clone, Debug)]
pub struct MutualTls {
    /// The settings the three paths came from: certificate, key, CA.
    names: [&'static str; 3],
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl MutualTls {
    /// Files named directly; `names` (certificate, key, CA) label errors.
    pub fn new(names: [&'static str; 3], cert: PathBuf, key: PathBuf, ca: PathBuf) -> Self {
        Self {
            names,
            cert,
            key,
            ca,
        }
    }

    /// Reads three settings naming the certificate, key and CA files: all three set
    /// is mutual TLS, none is plain HTTP, anything in between is refused.
    pub fn from_source(
        source: &Source,
        names: [&'static str; 3],
    ) -> Result<Option<Self>, ConfigError> {
        let [cert, key, ca] = names.map(|n| source.get(n).filter(|v| !v.is_empty()));
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                Ok(Some(Self::new(names, cert.into(), key.into(), ca.into())))
            }
            _ => Err(ConfigError::Invalid {
                name: names[0],
                reason: format!(
                    "set {}, {} and {} together (mutual TLS), or none of them",
                    names[0], names[1], names[2]
                ),
            }),
        }
    }

    /// Each setting with the file it names: certificate, key, CA.
    pub fn settings(&self) -> [(&'static str, &Path); 3] {
        [
            (self.names[0], &self.cert),
            (self.names[1], &self.key),
            (self.names[2], &self.ca),
        ]
    }

    /// A server that completes a handshake only with a client whose certificate
    /// chains to the CA; ALPN offers HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ConfigError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider())
                .build()
                .map_err(|e| self.invalid(2, &self.ca, e))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| self.invalid(0, &self.cert, e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain()?, self.private_key()?)
            .map_err(|e| self.invalid(1, &self.key, e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client that presents its certificate and accepts only a server whose
    /// certificate chains to the CA and names the host it dialled.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, ConfigError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| self.invalid(0, &self.cert, e))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain()?, self.private_key()?)
            .map_err(|e| self.invalid(1, &self.key, e))?;
        Ok(Arc::new(config))
    }

    fn invalid(&self, which: usize, path: &Path, e: impl Display) -> ConfigError {
        ConfigError::Invalid {
            name: self.names[which],
            reason: format!("{}: {e}", path.display()),
        }
    }

    fn certificates(
        &self,
        which: usize,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| self.invalid(which, path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(which, path, e))?;
        if certs.is_empty() {
            return Err(self.invalid(which, path, "no PEM certificate in the file"));
        }
        Ok(certs)
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        self.certificates(0, &self.cert)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, ConfigError> {
        PrivateKeyDer::from_pem_file(&self.key).map_err(|e| self.invalid(1, &self.key, e))
    }

    fn roots(&self) -> Result<RootCertStore, ConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates(2, &self.ca)? {
            roots.add(cert).map_err(|e| self.invalid(2, &self.ca, e))?;
        }
        Ok(roots)
    }
}

/// A client (to a PostgreSQL server) that accepts only a server certificate chaining
/// to the CA in `ca_file` and naming the host it dialled; `name` labels errors.
pub fn verifying_client(
    name: &'static str,
    ca_file: &Path,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let invalid = |e: &dyn Display| ConfigError::Invalid {
        name,
        reason: format!("{}: {e}", ca_file.display()),
    };
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| invalid(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&e))?;
    if certs.is_empty() {
        return Err(invalid(&"no PEM certificate in the file"));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| invalid(&e))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| invalid(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client for the public web (webhook receivers): servers proven by the
/// Mozilla root programme's CAs (`webpki-roots`, compiled in).
pub fn public_web_client() -> Result<Arc<ClientConfig>, rustls::Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A client that trusts no CA, so every TLS handshake fails: what a gateway without
/// client settings uses for `https` upstreams, which it must not reach unauthenticated.
pub fn client_trusting_nothing() -> Result<Arc<ClientConfig>, rustls::Error> {
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 3] = ["T_CERT", "T_KEY", "T_CA"];

    #[test]
    fn all_three_or_none() {
        let none = Source::from_pairs(Vec::<(String, String)>::new());
        assert!(MutualTls::from_source(&none, NAMES).unwrap().is_none());
        let empty = Source::from_pairs([("T_CERT", ""), ("T_KEY", ""), ("T_CA", "")]);
        assert!(MutualTls::from_source(&empty, NAMES).unwrap().is_none());
        let all = Source::from_pairs([("T_CERT", "c"), ("T_KEY", "k"), ("T_CA", "a")]);
        let tls = MutualTls::from_source(&all, NAMES).unwrap().unwrap();
        assert_eq!(tls.ca, PathBuf::from("a"));
        let partial = Source::from_pairs([("T_CERT", "c"), ("T_KEY", "k")]);
        let err = MutualTls::from_source(&partial, NAMES).unwrap_err();
        assert!(err.to_string().contains("T_CA"), "{err}");
    }

    #[test]
    fn unreadable_files_name_their_setting() {
        let tls = MutualTls::new(
            NAMES,
            "/nonexistent/cert.pem".into(),
            "/nonexistent/key.pem".into(),
            "/nonexistent/ca.pem".into(),
        );
        let err = tls.server_config().unwrap_err().to_string();
        assert!(err.starts_with("T_CA is invalid"), "{err}");
        let dir = std::env::temp_dir().join(format!("medicalpro-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let tls = MutualTls::new(NAMES, ca.clone(), ca.clone(), ca);
        let err = tls.client_config().unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
