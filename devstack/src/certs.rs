//! Throwaway certificates for mutual TLS between the stack's gateway and workers
//! (rcgen, ECDSA P-256): a CA made afresh at every start, a server certificate for
//! the workers (loopback names) and a client certificate for the gateway, written as
//! PEM files. Tests use [`Authority`] too, to make certificates a worker must refuse.

use common::tls::MutualTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server on this machine: `localhost`, `127.0.0.1` and `::1`.
    Server,
    /// A TLS client.
    Client,
}

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority held in memory.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn write(path: &Path, pem: &str, private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    options.open(path)?.write_all(pem.as_bytes())?;
    Ok(())
}

impl Authority {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// Writes the CA certificate (what peers are told to trust) to `path`.
    pub fn write_cert(&self, path: &Path) -> anyhow::Result<()> {
        write(path, &self.cert.pem(), false)
    }

    /// Issues a certificate named `name` for `usage`, written to `dir` as
    /// `<name>.pem` and `<name>-key.pem` (the key readable by its owner only).
    pub fn issue(&self, dir: &Path, name: &str, usage: Usage) -> anyhow::Result<Issued> {
        let sans = match usage {
            Usage::Server => vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()],
            Usage::Client => Vec::new(),
        };
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        write(&issued.cert, &cert.pem(), false)?;
        write(&issued.key, &key.serialize_pem(), true)?;
        Ok(issued)
    }
}

/// The files of a stack whose gateway and workers speak mutual TLS.
#[derive(Clone, Debug)]
pub struct StackCerts {
    /// The CA both sides trust (`ca.pem`).
    pub ca: PathBuf,
    /// The workers' server certificate.
    pub worker: Issued,
    /// The gateway's client certificate.
    pub gateway: Issued,
}

impl StackCerts {
    /// A fresh CA in `dir` (emptied first), a worker and a gateway certificate.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let authority = Authority::new("MedicalPro devstack CA")?;
        let ca = dir.join("ca.pem");
        authority.write_cert(&ca)?;
        Ok(Self {
            worker: authority.issue(dir, "worker", Usage::Server)?,
            gateway: authority.issue(dir, "gateway", Usage::Client)?,
            ca,
        })
    }

    /// The workers' side, as their `WORKER_TLS_*` settings name it.
    pub fn worker_tls(&self) -> MutualTls {
        MutualTls::new(
            worker::tls::SETTINGS,
            self.worker.cert.clone(),
            self.worker.key.clone(),
            self.ca.clone(),
        )
    }

    /// The gateway's side, as its `UPSTREAM_TLS_*` settings name it.
    pub fn gateway_tls(&self) -> MutualTls {
        MutualTls::new(
            gateway::config::UPSTREAM_TLS,
            self.gateway.cert.clone(),
            self.gateway.key.clone(),
            self.ca.clone(),
        )
    }
}
