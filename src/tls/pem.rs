//! Reading certificates and private keys from PEM files, and the error type every TLS
//! configuration step returns.
//!
//! Owns: file → rustls types, with errors naming the file.
//! Must not: cache anything (`store` decides when files are read again).

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// A TLS configuration that cannot be built. Always the operator's fault (files, keys,
/// settings), except `Rustls`, which may also be a certificate rustls does not support.
#[derive(Debug, Error)]
pub enum TlsConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no {what} found in the PEM file")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{0}: a required file is not configured")]
    Missing(&'static str),
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("rustls refused the configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in `path`, in file order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let bytes = read(path)?;
    let certs = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Invalid {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Empty {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key in `path` (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let bytes = read(path)?;
    rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| TlsConfigError::Invalid {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?
        .ok_or_else(|| TlsConfigError::Empty {
            path: path.to_path_buf(),
            what: "private key",
        })
}

/// A root store from the CA certificates in `path`.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsConfigError::Invalid {
            path: path.to_path_buf(),
            why: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The aws-lc-rs provider restricted to what egressd allows: TLS 1.3 suites and the
/// TLS 1.2 ECDHE + AEAD suites (forward secrecy, no CBC, no static RSA).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs as aws;
    let mut p = aws::default_provider();
    p.cipher_suites = vec![
        aws::cipher_suite::TLS13_AES_128_GCM_SHA256,
        aws::cipher_suite::TLS13_AES_256_GCM_SHA384,
        aws::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        aws::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        aws::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        aws::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        aws::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        aws::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        aws::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    std::sync::Arc::new(p)
}

/// Protocol versions from Istio's `minProtocolVersion` (TLSV1_2 when unset or lower:
/// egressd never speaks TLS 1.0/1.1).
pub fn versions(min: Option<&str>) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        Some(v) if v.eq_ignore_ascii_case("TLSV1_3") => &TLS13_ONLY,
        _ => rustls::ALL_VERSIONS,
    }
}
