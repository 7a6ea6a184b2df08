//! rustls client configs for TLS origination (DestinationRule `tls` modes SIMPLE, MUTUAL
//! and ISTIO_MUTUAL): which roots verify the upstream, which names it must carry, and
//! which certificate the gateway presents.
//!
//! Owns: `ClientSpec` and building it; the server-certificate verifier honouring
//! `subjectAltNames`.
//! Must not: hold per-shard state (session caches live in `origination`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct};

use super::identity::PeerIdentity;
use super::pem::{load_certs, load_key, load_roots, provider, versions, TlsConfigError};
use super::store::{global, Entry, Material, Store};
use crate::config::model::{Bootstrap, ClientTls, ClientTlsMode};

/// What one origination config is built from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientSpec {
    /// None = the Mozilla roots compiled in (webpki-roots).
    pub ca: Option<PathBuf>,
    /// (certificate chain, private key) the gateway presents, for MUTUAL/ISTIO_MUTUAL.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Non-empty: the upstream's certificate must carry one of these instead of the SNI.
    pub allowed_sans: Vec<String>,
}

impl ClientSpec {
    /// The spec for a cluster's merged `tls` policy; None for DISABLE.
    pub fn from_model(
        tls: &ClientTls,
        gateway: &Bootstrap,
    ) -> Result<Option<Self>, TlsConfigError> {
        let (ca, client_cert) = match tls.mode {
            ClientTlsMode::Disable => return Ok(None),
            ClientTlsMode::Simple => (tls.ca_certificates.clone(), None),
            ClientTlsMode::Mutual => {
                let cert = tls
                    .client_certificate
                    .clone()
                    .ok_or(TlsConfigError::Missing("tls.clientCertificate"))?;
                let key = tls
                    .private_key
                    .clone()
                    .ok_or(TlsConfigError::Missing("tls.privateKey"))?;
                (tls.ca_certificates.clone(), Some((cert, key)))
            }
            ClientTlsMode::IstioMutual => {
                let id = gateway
                    .identity
                    .as_ref()
                    .ok_or(TlsConfigError::Missing("bootstrap identity (ISTIO_MUTUAL)"))?;
                (
                    Some(id.root_cert.clone()),
                    Some((id.cert_chain.clone(), id.private_key.clone())),
                )
            }
        };
        Ok(Some(ClientSpec {
            ca,
            client_cert,
            allowed_sans: tls.subject_alt_names.clone(),
        }))
    }

    /// The shared, reloading entry for this spec.
    pub fn entry(&self) -> Result<Arc<Entry<ClientSpec>>, TlsConfigError> {
        static STORE: OnceLock<Arc<Store<ClientSpec>>> = OnceLock::new();
        global(&STORE).get(self)
    }

    /// What tells pooled connections of this spec apart from others to the same address.
    pub fn identity_tag(&self) -> String {
        let cert = self
            .client_cert
            .as_ref()
            .map_or_else(String::new, |(c, _)| c.display().to_string());
        let ca = self
            .ca
            .as_ref()
            .map_or_else(|| "webpki-roots".to_string(), |c| c.display().to_string());
        format!("{cert}|{ca}|{}", self.allowed_sans.join(","))
    }
}

impl Material for ClientSpec {
    type Built = ClientConfig;

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.ca.iter().cloned().collect();
        if let Some((c, k)) = &self.client_cert {
            files.push(c.clone());
            files.push(k.clone());
        }
        files
    }

    fn build(&self) -> Result<ClientConfig, TlsConfigError> {
        let provider = provider();
        let roots = match &self.ca {
            Some(ca) => load_roots(ca)?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsConfigError::Invalid {
                path: self.ca.clone().unwrap_or_default(),
                why: e.to_string(),
            })?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions(None))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SanVerifier {
                inner,
                allowed: self.allowed_sans.clone(),
            }));
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?
            }
        };
        Ok(config)
    }
}

/// webpki's chain, validity and name check; with `subjectAltNames` set, the name check is
/// against those instead of the SNI (Istio's semantics).
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<WebPkiServerVerifier>,
    allowed: Vec<String>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        if self.allowed.is_empty() {
            return result;
        }
        match result {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                if PeerIdentity::from_cert(end_entity).allowed_by(&self.allowed) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName,
                    ))
                }
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
