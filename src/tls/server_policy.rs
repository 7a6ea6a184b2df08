//! The policy part of a terminating server's rustls config: protocol versions (Gateway
//! `minProtocolVersion` / `maxProtocolVersion`), TLS 1.2 cipher suites (`cipherSuites`,
//! Envoy names already checked by `config::tls_params`), and session resumption.
//!
//! Resumption: stateless TLS 1.3 session tickets (TLS 1.2 tickets too), no server-side
//! session cache. Why tickets rather than a bounded cache: the `ServerConfig` is shared by
//! every shard, and SO_REUSEPORT sends a sidecar's next connection to any shard; a cache
//! would need a cross-shard mutex on every handshake (rustls' `ServerSessionMemoryCache`),
//! or per-shard caches that miss whenever the kernel picks another shard. Tickets carry
//! their state, so any shard resumes, at the cost of one AEAD seal per ticket issued.
//! Safety of resumption with client certificates: a resumed session skips certificate
//! verification, so (1) the ticket keys belong to one built config: a certificate, CA or
//! `subjectAltNames` change builds a new config with new keys and every older ticket is
//! refused (full handshake); (2) keys rotate every `TICKET_KEY_ROTATION` and are erased
//! after two periods, bounding a ticket's life; (3) `check_resumed` lets the
//! handshake refuse a resumed session whose client certificate has since expired.
//!
//! Owns: turning the policy into a rustls builder and the ticketer. Must not: load files or
//! verify peers (`server`).

use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::{aws_lc_rs, CryptoProvider, GetRandomFailed};
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::{
    ConfigBuilder, HandshakeKind, ServerConfig, ServerConnection, SupportedCipherSuite,
    SupportedProtocolVersion, WantsVerifier,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::pem::{provider, TlsConfigError};
use crate::config::model::ServerTls;

/// How long one ticket key issues tickets; it still decrypts for one more period, then is
/// erased. So a ticket resumes for at most twice this (and clients are told so).
pub const TICKET_KEY_ROTATION_SECS: u32 = 30 * 60;
/// Tickets sent after each full handshake (rustls' default): one spare lets a sidecar open
/// two connections in parallel and resume both.
pub const TLS13_TICKETS: usize = 2;

/// The policy of one terminating server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServerPolicy {
    /// "TLSV1_2" | "TLSV1_3"; None = TLS 1.2.
    pub min_version: Option<String>,
    /// "TLSV1_2" | "TLSV1_3"; None = TLS 1.3.
    pub max_version: Option<String>,
    /// TLS 1.2 suites by Envoy name, in order; empty = every suite `pem::provider` allows.
    pub cipher_suites: Vec<String>,
}

/// Envoy's name for a TLS 1.2 suite → the aws-lc-rs suite. Every name in
/// `config::tls_params::ACCEPTED_CIPHERS` is here (a test checks).
fn suite(name: &str) -> Option<SupportedCipherSuite> {
    use aws_lc_rs::cipher_suite as cs;
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES256-GCM-SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-CHACHA20-POLY1305" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

impl ServerPolicy {
    pub fn from_model(tls: &ServerTls) -> Self {
        ServerPolicy {
            min_version: tls.min_protocol_version.clone(),
            max_version: tls.max_protocol_version.clone(),
            cipher_suites: tls.cipher_suites.clone(),
        }
    }

    /// The versions between min and max (validation guarantees min ≤ max).
    pub fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let is = |v: &Option<String>, name: &str| v.as_deref() == Some(name);
        let mut out = Vec::with_capacity(2);
        if !is(&self.max_version, "TLSV1_2") {
            out.push(&rustls::version::TLS13);
        }
        if !is(&self.min_version, "TLSV1_3") {
            out.push(&rustls::version::TLS12);
        }
        out
    }

    /// egressd's provider with the TLS 1.2 suites replaced by `cipher_suites` (in that
    /// order), TLS 1.3 suites untouched, as Envoy does.
    pub fn provider(&self) -> Result<Arc<CryptoProvider>, TlsConfigError> {
        let base = provider();
        if self.cipher_suites.is_empty() {
            return Ok(base);
        }
        let mut p = (*base).clone();
        p.cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13);
        for name in &self.cipher_suites {
            let s = suite(name).ok_or_else(|| {
                TlsConfigError::Rustls(rustls::Error::General(format!(
                    "cipher suite {name} is not one egressd offers"
                )))
            })?;
            p.cipher_suites.push(s);
        }
        Ok(Arc::new(p))
    }

    /// A server config builder with this policy's suites and versions.
    pub fn builder(&self) -> Result<ConfigBuilder<ServerConfig, WantsVerifier>, TlsConfigError> {
        Ok(ServerConfig::builder_with_provider(self.provider()?)
            .with_protocol_versions(&self.versions())?)
    }

    /// Session resumption by tickets only (see the module comment), keys private to this
    /// config and rotated every `TICKET_KEY_ROTATION_SECS`.
    pub fn enable_resumption(config: &mut ServerConfig) -> Result<(), TlsConfigError> {
        config.ticketer = Arc::new(rustls::TicketRotator::new(
            TICKET_KEY_ROTATION_SECS,
            ticket_keys,
        )?);
        config.send_tls13_tickets = TLS13_TICKETS;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Ok(())
    }
}

/// One ticket key generation: a fresh aws-lc-rs ticketer (AES-256 + HMAC-SHA256, random
/// keys). Its own 6-hour rotation never fires: the outer rotator drops it after two periods.
fn ticket_keys() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
    let keys = aws_lc_rs::Ticketer::new().map_err(|_| GetRandomFailed)?;
    Ok(Box::new(Keys(keys)))
}

#[derive(Debug)]
struct Keys(Arc<dyn ProducesTickets>);

impl ProducesTickets for Keys {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        TICKET_KEY_ROTATION_SECS
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

/// Refuses a resumed session whose client certificate is no longer within its validity
/// period (a resumed handshake does not re-verify it); the error reads as rustls' own
/// "expired certificate", so counters and logs treat it like a full handshake's refusal.
/// Full handshakes and sessions without a client certificate pass.
pub fn check_resumed(conn: &ServerConnection) -> Result<(), std::io::Error> {
    if conn.handshake_kind() != Some(HandshakeKind::Resumed) {
        return Ok(());
    }
    let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Ok(());
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let valid = X509Certificate::from_der(leaf.as_ref()).is_ok_and(|(_, cert)| {
        let v = cert.validity();
        v.not_before.timestamp() <= now && now <= v.not_after.timestamp()
    });
    if valid {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls_params::ACCEPTED_CIPHERS;

    fn policy(min: Option<&str>, max: Option<&str>, suites: &[&str]) -> ServerPolicy {
        ServerPolicy {
            min_version: min.map(String::from),
            max_version: max.map(String::from),
            cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn every_accepted_envoy_name_maps_to_a_tls12_suite_egressd_offers() {
        let offered = provider();
        for name in ACCEPTED_CIPHERS {
            let s = suite(name).unwrap_or_else(|| panic!("{name} has no rustls suite"));
            assert_eq!(s.version(), &rustls::version::TLS12, "{name}");
            assert!(
                offered.cipher_suites.contains(&s),
                "{name} not in pem::provider"
            );
        }
    }

    #[test]
    fn versions_follow_min_and_max() {
        let v = |min, max| {
            policy(min, max, &[])
                .versions()
                .iter()
                .map(|v| v.version)
                .collect::<Vec<_>>()
        };
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(v(None, None), [TLSv1_3, TLSv1_2]);
        assert_eq!(v(None, Some("TLSV1_2")), [TLSv1_2]);
        assert_eq!(v(Some("TLSV1_3"), None), [TLSv1_3]);
        assert_eq!(v(Some("TLSV1_2"), Some("TLSV1_3")), [TLSv1_3, TLSv1_2]);
    }

    #[test]
    fn cipher_suites_replace_tls12_suites_in_order_and_keep_tls13() {
        let p = policy(
            None,
            None,
            &[
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
            ],
        )
        .provider()
        .expect("provider");
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls12,
            [
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]
        );
        assert_eq!(
            p.cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .count(),
            3
        );
        assert!(policy(None, None, &["AES128-SHA"]).provider().is_err());
    }

    #[test]
    fn tickets_are_issued_and_read_back_only_by_the_config_that_made_them() {
        let build = || {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
            ServerPolicy::enable_resumption(&mut c).expect("ticketer");
            c
        };
        let (a, b) = (build(), build());
        assert!(a.ticketer.enabled() && a.send_tls13_tickets == TLS13_TICKETS);
        assert_eq!(a.ticketer.lifetime(), 2 * TICKET_KEY_ROTATION_SECS);
        let ticket = a.ticketer.encrypt(b"session state").expect("sealed");
        assert_eq!(
            a.ticketer.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        assert_eq!(
            b.ticketer.decrypt(&ticket),
            None,
            "another config's keys opened it"
        );
    }
}
