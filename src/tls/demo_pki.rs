//! A throw-away PKI for demos and tests (`egressd certs --out DIR`): one root CA, the
//! gateway's certificate (Istio's egress gateway SPIFFE id plus DNS names) and a sidecar
//! client certificate (`sleep`'s SPIFFE id), all ECDSA P-256 as Istio issues them.
//!
//! Owns: generating keys and certificates with rcgen, writing the PEM files.
//! Must not: be used for anything but demos and tests (keys are written unencrypted).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// The egress gateway's SPIFFE id in the demo PKI.
pub const GATEWAY_SPIFFE: &str =
    "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account";
/// The sidecar client's SPIFFE id in the demo PKI.
pub const CLIENT_SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/sleep";
/// The gateway certificate's DNS names.
pub const GATEWAY_DNS: [&str; 3] = [
    "istio-egressgateway.istio-system.svc.cluster.local",
    "localhost",
    "edition.cnn.com",
];

/// Why the PKI could not be made: rcgen refused a parameter (our bug) or the output
/// directory could not be written (the operator's environment).
#[derive(Debug, Error)]
pub enum PkiError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate authority able to sign leaf certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its private key, PEM encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf certificate says about its holder.
#[derive(Clone, Debug, Default)]
pub struct LeafSpec {
    pub common_name: String,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// None = one day ago.
    pub not_before: Option<OffsetDateTime>,
    /// None = one year from now.
    pub not_after: Option<OffsetDateTime>,
}

impl LeafSpec {
    pub fn new(common_name: &str) -> Self {
        LeafSpec {
            common_name: common_name.to_string(),
            ..Default::default()
        }
    }

    pub fn uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.to_string());
        self
    }

    pub fn dns(mut self, name: &str) -> Self {
        self.dns.push(name.to_string());
        self
    }
}

impl Ca {
    /// A new self-signed root CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Ca, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(Ca {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Signs a leaf usable both as a TLS server and a TLS client certificate.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name);
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = spec.not_before.unwrap_or(now - Duration::days(1));
        params.not_after = spec.not_after.unwrap_or(now + Duration::days(365));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "egressd demo");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The files `write_demo` wrote.
#[derive(Clone, Debug)]
pub struct DemoPki {
    pub root_cert: PathBuf,
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The gateway's leaf: Istio's egress gateway identity and the demo DNS names.
pub fn gateway_leaf(ca: &Ca) -> Result<Issued, PkiError> {
    let mut spec = LeafSpec::new("istio-egressgateway").uri(GATEWAY_SPIFFE);
    for dns in GATEWAY_DNS {
        spec = spec.dns(dns);
    }
    ca.issue(&spec)
}

/// The sidecar client's leaf (`sleep` in namespace `default`).
pub fn client_leaf(ca: &Ca) -> Result<Issued, PkiError> {
    ca.issue(&LeafSpec::new("sleep").uri(CLIENT_SPIFFE))
}

/// Writes root-cert.pem, cert-chain.pem + key.pem (gateway) and client-cert.pem +
/// client-key.pem (sidecar) into `out`, creating it if needed.
pub fn write_demo(out: &Path) -> Result<DemoPki, PkiError> {
    std::fs::create_dir_all(out).map_err(|source| PkiError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let ca = Ca::new("egressd demo root CA")?;
    let gateway = gateway_leaf(&ca)?;
    let client = client_leaf(&ca)?;
    let pki = DemoPki {
        root_cert: out.join("root-cert.pem"),
        cert_chain: out.join("cert-chain.pem"),
        key: out.join("key.pem"),
        client_cert: out.join("client-cert.pem"),
        client_key: out.join("client-key.pem"),
    };
    write(&pki.root_cert, &ca.cert_pem())?;
    write(&pki.cert_chain, &gateway.cert_pem)?;
    write(&pki.key, &gateway.key_pem)?;
    write(&pki.client_cert, &client.cert_pem)?;
    write(&pki.client_key, &client.key_pem)?;
    Ok(pki)
}

/// Writes through a temporary file and a rename, so a reloading gateway never reads half
/// a file.
pub fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_files_parse_and_carry_the_spiffe_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = write_demo(dir.path()).expect("pki");
        let chain = crate::tls::pem::load_certs(&pki.cert_chain).expect("chain");
        let id = crate::tls::identity::PeerIdentity::from_cert(&chain[0]);
        assert_eq!(id.uri_san.as_deref(), Some(GATEWAY_SPIFFE));
        assert!(id.dns_sans.iter().any(|d| d == "edition.cnn.com"));
        let client = crate::tls::pem::load_certs(&pki.client_cert).expect("client");
        let id = crate::tls::identity::PeerIdentity::from_cert(&client[0]);
        assert_eq!(id.uri_san.as_deref(), Some(CLIENT_SPIFFE));
        crate::tls::pem::load_key(&pki.client_key).expect("key");
        assert_eq!(
            crate::tls::pem::load_certs(&pki.root_cert)
                .expect("root")
                .len(),
            1
        );
    }
}
