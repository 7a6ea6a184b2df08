//! A throw-away PKI for the TLS scenarios: one root CA (ECDSA P-256, made with rcgen), a
//! server certificate for the names the scenarios use, and a sidecar client certificate
//! carrying a SPIFFE id, written as PEM files into the run's temp directory.
//!
//! Owns: generating the keys and certificates and the file layouts each peer wants
//! (haproxy takes certificate and key in one file). Must not: start anything.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::error::BenchError;

/// The DNS names on the server certificate: the mTLS scenario's SNI, the origination
/// scenario's upstream host, and localhost for poking at it by hand.
pub const SERVER_NAMES: [&str; 3] = ["bench.local", "tls.bench.local", "localhost"];
/// The sidecar client's identity, as Istio issues it.
pub const CLIENT_SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/sleep";

/// Paths of the written files.
#[derive(Debug, Clone)]
pub struct Pki {
    pub root: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Certificate then key, for haproxy's `crt`.
    pub server_combined: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn gen(what: &str, e: rcgen::Error) -> BenchError {
    BenchError::Machine(format!("rcgen could not make the {what}: {e}"))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "egressd bench");
    dn.push(DnType::CommonName, cn);
    dn
}

/// A leaf signed by `ca`, valid from a day ago for a year, usable for server and client auth.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
) -> Result<(String, String), BenchError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(365);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| gen(cn, e))?;
    let cert = p.signed_by(&key, ca).map_err(|e| gen(cn, e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    /// The file names `write` uses in `dir` (nothing is read or written).
    pub fn at(dir: &Path) -> Pki {
        Pki {
            root: dir.join("root-cert.pem"),
            server_cert: dir.join("server-cert.pem"),
            server_key: dir.join("server-key.pem"),
            server_combined: dir.join("server-combined.pem"),
            client_cert: dir.join("client-cert.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }

    /// Generates the PKI and writes it into `dir`.
    pub fn write(dir: &Path) -> Result<Pki, BenchError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn("egressd bench root CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(3650);
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| gen("CA", e))?;
        let ca = CertifiedIssuer::self_signed(p, key).map_err(|e| gen("CA", e))?;
        let mut sans = Vec::new();
        for n in SERVER_NAMES {
            sans.push(SanType::DnsName(n.try_into().map_err(|e| gen(n, e))?));
        }
        let (server_cert, server_key) = leaf(&ca, "bench server", sans)?;
        let uri = SanType::URI(CLIENT_SPIFFE.try_into().map_err(|e| gen("client", e))?);
        let (client_cert, client_key) = leaf(&ca, "sleep", vec![uri])?;
        let pki = Pki::at(dir);
        let files = [
            (&pki.root, ca.pem()),
            (&pki.server_cert, server_cert.clone()),
            (&pki.server_key, server_key.clone()),
            (&pki.server_combined, format!("{server_cert}{server_key}")),
            (&pki.client_cert, client_cert),
            (&pki.client_key, client_key),
        ];
        for (path, text) in files {
            std::fs::write(path, text)
                .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
        }
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hold_one_certificate_or_key_each_and_the_combined_file_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::write(dir.path()).expect("pki");
        let read = |p: &PathBuf| std::fs::read_to_string(p).expect("read");
        for p in [&pki.root, &pki.server_cert, &pki.client_cert] {
            assert_eq!(read(p).matches("BEGIN CERTIFICATE").count(), 1, "{p:?}");
        }
        for p in [&pki.server_key, &pki.client_key] {
            assert!(read(p).contains("PRIVATE KEY"), "{p:?}");
        }
        let both = read(&pki.server_combined);
        assert!(both.contains("BEGIN CERTIFICATE") && both.contains("PRIVATE KEY"));
    }
}
