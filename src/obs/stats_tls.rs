//! TLS and server-wide stats: Envoy's `ssl.*` (per listener and per cluster) and the TLS
//! inspector's `tls_inspector.*` (unscoped).
//!
//! Owns: handshake outcomes by reason, ClientHello peek outcomes by reason.
//! Must not: use atomics or locks (shard-local cells, like every stat in `stats`).

use crate::obs::stats::{put, Counter};
use crate::obs::stats_snapshot::{Scope, StatsSnapshot};

/// Why a TLS handshake failed, as Envoy's `ssl.*` stats name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// `ssl.connection_error`: protocol error, reset, bad record.
    ConnectionError,
    /// `ssl.fail_verify_no_cert`: mTLS required and the peer sent no certificate.
    NoPeerCertificate,
    /// `ssl.fail_verify_san`: the peer's SAN is not an allowed one.
    SanMismatch,
    /// `ssl.fail_verify_error`: the peer's chain did not verify.
    VerifyError,
    /// `ssl.handshake_timeout` (egressd's name: Envoy has none): `timeouts.tlsHandshake`.
    Timeout,
    /// `ssl.no_application_protocol` (egressd's name): the client offered only ALPN values
    /// the server cannot serve.
    NoApplicationProtocol,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::ConnectionError,
        HandshakeFailure::NoPeerCertificate,
        HandshakeFailure::SanMismatch,
        HandshakeFailure::VerifyError,
        HandshakeFailure::Timeout,
        HandshakeFailure::NoApplicationProtocol,
    ];

    pub fn stat_name(self) -> &'static str {
        match self {
            HandshakeFailure::ConnectionError => "ssl.connection_error",
            HandshakeFailure::NoPeerCertificate => "ssl.fail_verify_no_cert",
            HandshakeFailure::SanMismatch => "ssl.fail_verify_san",
            HandshakeFailure::VerifyError => "ssl.fail_verify_error",
            HandshakeFailure::Timeout => "ssl.handshake_timeout",
            HandshakeFailure::NoApplicationProtocol => "ssl.no_application_protocol",
        }
    }
}

/// Envoy's `ssl.*` stats: under a listener for terminated TLS, under a cluster for TLS
/// origination.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// `ssl.handshake`: completed handshakes.
    pub handshake: Counter,
    failures: [Counter; HandshakeFailure::ALL.len()],
}

impl TlsStats {
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        self.failures[why as usize].inc();
    }

    pub fn failures(&self, why: HandshakeFailure) -> u64 {
        self.failures[why as usize].get()
    }

    pub(crate) fn snapshot_into(&self, scope: &Scope, out: &mut StatsSnapshot) {
        put(out, scope, "ssl.handshake", &self.handshake);
        for why in HandshakeFailure::ALL {
            put(out, scope, why.stat_name(), &self.failures[why as usize]);
        }
    }
}

/// Outcome of the ClientHello peek, as Envoy's TLS inspector names it (`tls_inspector.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SniPeek {
    TlsFound,
    TlsNotFound,
    SniFound,
    SniNotFound,
    ClientHelloTooLarge,
    ReadError,
    ConnectionClosed,
}

impl SniPeek {
    const ALL: [SniPeek; 7] = [
        SniPeek::TlsFound,
        SniPeek::TlsNotFound,
        SniPeek::SniFound,
        SniPeek::SniNotFound,
        SniPeek::ClientHelloTooLarge,
        SniPeek::ReadError,
        SniPeek::ConnectionClosed,
    ];

    pub fn stat_name(self) -> &'static str {
        match self {
            SniPeek::TlsFound => "tls_inspector.tls_found",
            SniPeek::TlsNotFound => "tls_inspector.tls_not_found",
            SniPeek::SniFound => "tls_inspector.sni_found",
            SniPeek::SniNotFound => "tls_inspector.sni_not_found",
            SniPeek::ClientHelloTooLarge => "tls_inspector.client_hello_too_large",
            SniPeek::ReadError => "tls_inspector.read_error",
            SniPeek::ConnectionClosed => "tls_inspector.connection_closed",
        }
    }
}

/// Unscoped stats of the shard.
#[derive(Debug, Default)]
pub struct ServerStats {
    sni_peek: [Counter; SniPeek::ALL.len()],
}

impl ServerStats {
    pub fn sni_peek(&self, outcome: SniPeek) {
        self.sni_peek[outcome as usize].inc();
    }

    pub(crate) fn snapshot_into(&self, out: &mut StatsSnapshot) {
        for o in SniPeek::ALL {
            put(
                out,
                &Scope::Global,
                o.stat_name(),
                &self.sni_peek[o as usize],
            );
        }
    }
}
