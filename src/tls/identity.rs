//! Who a certificate names: its URI SANs (SPIFFE ids), DNS SANs and subject, and the
//! `subjectAltNames` check Istio applies to peers.
//!
//! Owns: parsing the end-entity certificate with x509-parser, matching allowed SANs.
//! Must not: verify chains or validity (rustls/webpki do that before this runs).

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The names in a peer's end-entity certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The first `spiffe://` URI SAN, else the first URI SAN.
    pub uri_san: Option<String>,
    pub uris: Vec<String>,
    pub dns_sans: Vec<String>,
    /// RFC 4514 form, e.g. `CN=sleep,O=egressd demo`.
    pub subject: Option<String>,
}

impl PeerIdentity {
    /// The identity in `cert`; empty when it does not parse (it already verified, so that
    /// means an extension x509-parser does not know, not a forged certificate).
    pub fn from_cert(cert: &CertificateDer<'_>) -> PeerIdentity {
        let Ok((_, x509)) = X509Certificate::from_der(cert.as_ref()) else {
            return PeerIdentity::default();
        };
        let mut id = PeerIdentity::default();
        if let Ok(Some(san)) = x509.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => id.uris.push(u.to_string()),
                    GeneralName::DNSName(d) => id.dns_sans.push(d.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        id.uri_san = id
            .uris
            .iter()
            .find(|u| u.starts_with("spiffe://"))
            .or(id.uris.first())
            .cloned();
        id.subject = Some(rfc4514(&x509)).filter(|s| !s.is_empty());
        id
    }

    /// Istio's `subjectAltNames`: empty allows anyone the CA vouches for; otherwise one of
    /// the certificate's URI or DNS SANs must equal one of `allowed` (DNS case-insensitive,
    /// `*.` entries match one leftmost label).
    pub fn allowed_by(&self, allowed: &[String]) -> bool {
        allowed.is_empty()
            || allowed.iter().any(|a| {
                self.uris.iter().any(|u| u == a) || self.dns_sans.iter().any(|d| dns_matches(a, d))
            })
    }
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

/// The subject in RFC 4514 order (most specific first), as Envoy prints it.
fn rfc4514(cert: &X509Certificate<'_>) -> String {
    let mut parts = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        for attr in rdn.iter() {
            let key = match attr.attr_type().to_id_string().as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                _ => continue,
            };
            if let Ok(v) = attr.as_str() {
                parts.push(format!("{key}={v}"));
            }
        }
    }
    parts.reverse();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::demo_pki::{Ca, LeafSpec};

    fn identity(spec: &LeafSpec) -> PeerIdentity {
        let ca = Ca::new("test root").expect("ca");
        let leaf = ca.issue(spec).expect("leaf");
        let der = rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes())
            .next()
            .expect("one cert")
            .expect("pem");
        PeerIdentity::from_cert(&der)
    }

    #[test]
    fn spiffe_uri_is_preferred_and_subject_is_rfc4514() {
        let id = identity(
            &LeafSpec::new("sleep")
                .uri("urn:x")
                .uri("spiffe://cluster.local/ns/default/sa/sleep")
                .dns("Sleep.Default.svc"),
        );
        assert_eq!(
            id.uri_san.as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/sleep")
        );
        assert_eq!(id.subject.as_deref(), Some("CN=sleep,O=egressd demo"));
        assert_eq!(id.dns_sans, vec!["sleep.default.svc".to_string()]);
    }

    #[test]
    fn allowed_sans_match_uris_and_dns_names() {
        let id = identity(
            &LeafSpec::new("a")
                .uri("spiffe://x/ns/a")
                .dns("a.example.com"),
        );
        assert!(id.allowed_by(&[]));
        assert!(id.allowed_by(&["spiffe://x/ns/a".into()]));
        assert!(id.allowed_by(&["*.example.com".into()]));
        assert!(id.allowed_by(&["A.example.com".into()]));
        assert!(!id.allowed_by(&["spiffe://x/ns/b".into(), "example.com".into()]));
        assert!(!id.allowed_by(&["*.a.example.com".into()]));
    }
}
