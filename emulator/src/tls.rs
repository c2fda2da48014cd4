// SPDX-License-Identifier: MPL-2.0
//! `serve --tls`: a CA of the emulator's own, made at start (rcgen), a server certificate it
//! signs for `localhost`, `127.0.0.1` and `::1`, and the rustls acceptor that serves HTTPS
//! (HTTP/2 or HTTP/1.1 by ALPN) on the emulator's port. The plugins trust the CA through
//! `AMAZONMUSIC_CA_FILE` (the env file names the PEM this writes), never by skipping
//! verification.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::rustls;

/// What the server names in its certificate: every way a test or a user reaches loopback.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The generated CA (its PEM, for clients) and the acceptor presenting the server certificate.
pub struct Tls {
    pub ca_pem: String,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// A fresh CA and server certificate, valid from a day ago for 30 days.
pub fn generate() -> Result<Tls> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let (not_before, not_after) = (
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    );

    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "amzmusic-emulator test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().context("server key")?;
    let mut server = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())
        .context("server certificate parameters")?;
    server
        .distinguished_name
        .push(DnType::CommonName, "amzmusic-emulator");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = not_before;
    server.not_after = not_after;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("server certificate")?;

    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let chain = vec![server_cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("server certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    })
}

/// Where the CA's PEM goes: beside the env file (`<env-file>.ca.pem`), else in the data dir.
pub fn ca_file_path(env_file: Option<&Path>, data_dir: &Path) -> PathBuf {
    match env_file {
        Some(f) => {
            let mut name = f.as_os_str().to_owned();
            name.push(".ca.pem");
            PathBuf::from(name)
        }
        None => data_dir.join("emulator-ca.pem"),
    }
}

/// How long a connection may take to send its first byte and finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the port speaks TLS, and what its handshakes did (`GET /_emulator/tls`): a client
/// that refuses the certificate shows as a failed handshake, since no request reaches the log.
#[derive(Default)]
pub struct TlsStatus {
    enabled: AtomicBool,
    handshakes: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Serialize)]
pub struct TlsReport {
    pub enabled: bool,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes that failed (a client refusing the certificate, a timeout).
    pub failed: u64,
    pub last_error: Option<String>,
}

impl TlsStatus {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
    pub fn completed(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn failed(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = Some(why);
    }
    pub fn report(&self) -> TlsReport {
        TlsReport {
            enabled: self.is_enabled(),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }
}

/// What the observe layer learns about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub tls: bool,
    pub peer: std::net::SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_pem_and_the_acceptor_offers_h2_and_http1() {
        let t = generate().unwrap();
        assert!(t.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let cfg = t.acceptor.config();
        assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(
            ca_file_path(Some(Path::new("/tmp/x/amz.env")), Path::new("/d")),
            Path::new("/tmp/x/amz.env.ca.pem")
        );
        assert_eq!(
            ca_file_path(None, Path::new("/d")),
            Path::new("/d/emulator-ca.pem")
        );
    }
}
