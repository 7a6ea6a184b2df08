//! rustls server configs for Gateway servers that terminate TLS: SIMPLE (server
//! certificate only), MUTUAL (files from the server's `tls` block) and ISTIO_MUTUAL (the
//! bootstrap `identity`). Client certificates are required for the mutual modes and
//! checked against the CA and the server's `subjectAltNames`.
//!
//! Owns: `ServerSpec` (what a config is built from) and building it.
//! Must not: choose which server a connection belongs to (`listener` does, by SNI).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig};

use super::identity::PeerIdentity;
use super::pem::{load_certs, load_key, load_roots, provider, TlsConfigError};
use super::server_policy::ServerPolicy;
use super::store::{global, Entry, Material, Store};
use crate::config::model::{Bootstrap, ServerTls, ServerTlsMode};

/// What one terminating server's rustls config is built from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerSpec {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    /// Some = client certificates required and verified against these roots.
    pub client_ca: Option<PathBuf>,
    pub allowed_sans: Vec<String>,
    /// Versions, TLS 1.2 suites, resumption.
    pub policy: ServerPolicy,
}

impl ServerSpec {
    /// The spec for a server's `tls` block; None for PASSTHROUGH (nothing to terminate).
    pub fn from_model(
        tls: &ServerTls,
        gateway: &Bootstrap,
    ) -> Result<Option<Self>, TlsConfigError> {
        let (cert_chain, private_key, client_ca) = match tls.mode {
            ServerTlsMode::Passthrough => return Ok(None),
            ServerTlsMode::Simple => (
                need(&tls.server_certificate, "tls.serverCertificate")?,
                need(&tls.private_key, "tls.privateKey")?,
                None,
            ),
            ServerTlsMode::Mutual => (
                need(&tls.server_certificate, "tls.serverCertificate")?,
                need(&tls.private_key, "tls.privateKey")?,
                Some(need(&tls.ca_certificates, "tls.caCertificates")?),
            ),
            ServerTlsMode::IstioMutual => {
                let id = gateway
                    .identity
                    .as_ref()
                    .ok_or(TlsConfigError::Missing("bootstrap identity (ISTIO_MUTUAL)"))?;
                (
                    id.cert_chain.clone(),
                    id.private_key.clone(),
                    Some(id.root_cert.clone()),
                )
            }
        };
        Ok(Some(ServerSpec {
            cert_chain,
            private_key,
            client_ca,
            allowed_sans: tls.subject_alt_names.clone(),
            policy: ServerPolicy::from_model(tls),
        }))
    }

    /// The shared, reloading entry for this spec.
    pub fn entry(&self) -> Result<Arc<Entry<ServerSpec>>, TlsConfigError> {
        static STORE: OnceLock<Arc<Store<ServerSpec>>> = OnceLock::new();
        global(&STORE).get(self)
    }
}

fn need(p: &Option<PathBuf>, what: &'static str) -> Result<PathBuf, TlsConfigError> {
    p.clone().ok_or(TlsConfigError::Missing(what))
}

impl Material for ServerSpec {
    type Built = ServerConfig;

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert_chain.clone(), self.private_key.clone()];
        files.extend(self.client_ca.clone());
        files
    }

    fn build(&self) -> Result<ServerConfig, TlsConfigError> {
        let provider = provider();
        let chain = load_certs(&self.cert_chain)?;
        let key = load_key(&self.private_key)?;
        let builder = self.policy.builder()?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(load_roots(ca)?);
                let inner = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsConfigError::Invalid {
                        path: ca.clone(),
                        why: e.to_string(),
                    })?;
                builder.with_client_cert_verifier(Arc::new(SanVerifier {
                    inner,
                    allowed: self.allowed_sans.clone(),
                }))
            }
        };
        let mut config = builder.with_single_cert(chain, key)?;
        // Tickets are keyed to this build: a reload (new certificate, CA) refuses older ones.
        ServerPolicy::enable_resumption(&mut config)?;
        Ok(config)
    }
}

/// webpki's chain and validity check, then Istio's `subjectAltNames` on the leaf.
#[derive(Debug)]
struct SanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for SanVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !PeerIdentity::from_cert(end_entity).allowed_by(&self.allowed) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(verified)
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
