//! ALPN on terminating servers, as Istio sidecars use it: `istio-h2` → HTTP/2,
//! `istio-http/1.1` and `istio-http/1.0` → HTTP/1.x, `istio` → opaque TCP, beside the
//! standard `h2`/`http/1.1`. `istio-peer-exchange` is never selected: it would oblige the
//! peer to start with Istio's metadata-exchange preamble, which egressd does not speak.
//!
//! The choice is made from the ClientHello before the handshake, so rustls is handed a
//! config that offers exactly the chosen protocol (or, to refuse, only ones the client did
//! not offer: rustls then ends the handshake with a `no_application_protocol` alert).
//!
//! Owns: which protocol each server serves, by ALPN value. Must not: build certificates.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::model::Protocol;

/// What the decrypted stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProtocol {
    Http2,
    Http1,
    Opaque,
}

/// HTTP servers' values in preference order: HTTP/2 first, as a sidecar multiplexes on it.
const HTTP_VALUES: [(&[u8], AppProtocol); 6] = [
    (b"h2", AppProtocol::Http2),
    (b"istio-h2", AppProtocol::Http2),
    (b"http/1.1", AppProtocol::Http1),
    (b"istio-http/1.1", AppProtocol::Http1),
    (b"istio-http/1.0", AppProtocol::Http1),
    (b"http/1.0", AppProtocol::Http1),
];
const OPAQUE_VALUES: [(&[u8], AppProtocol); 1] = [(b"istio", AppProtocol::Opaque)];

fn served(server: Protocol) -> &'static [(&'static [u8], AppProtocol)] {
    match server {
        Protocol::Tls | Protocol::Tcp => &OPAQUE_VALUES,
        _ => &HTTP_VALUES,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The client sent no ALPN, or an opaque server does not negotiate what it offered.
    NoAlpn,
    Select(&'static [u8]),
    /// Nothing offered can be served on this server.
    Refuse,
}

/// Picks the ALPN value for a ClientHello offering `offered` (None: no ALPN extension).
pub fn choose<'a>(offered: Option<impl Iterator<Item = &'a [u8]>>, server: Protocol) -> Choice {
    let Some(offered) = offered else {
        return Choice::NoAlpn;
    };
    let offered: Vec<&[u8]> = offered.collect();
    if offered.is_empty() {
        return Choice::NoAlpn;
    }
    let pick = served(server)
        .iter()
        .find(|(value, _)| offered.contains(value));
    match pick {
        Some((value, _)) => Choice::Select(value),
        // An opaque server forwards whatever the client speaks; only a client asking for
        // nothing but the peer-exchange preamble is refused.
        None if server == Protocol::Tls && offered.iter().any(|v| *v != b"istio-peer-exchange") => {
            Choice::NoAlpn
        }
        None => Choice::Refuse,
    }
}

/// The rustls config for `choice`: `base` itself when there is nothing to negotiate.
pub fn config_for(base: Arc<ServerConfig>, choice: &Choice, server: Protocol) -> Arc<ServerConfig> {
    let alpn: Vec<Vec<u8>> = match choice {
        Choice::NoAlpn => return base,
        Choice::Select(value) => vec![value.to_vec()],
        Choice::Refuse => served(server).iter().map(|(v, _)| v.to_vec()).collect(),
    };
    let mut config = (*base).clone();
    config.alpn_protocols = alpn;
    Arc::new(config)
}

/// What the stream carries after a handshake that negotiated `selected`.
pub fn app_protocol(selected: Option<&[u8]>, server: Protocol) -> AppProtocol {
    let by_value = selected.and_then(|s| {
        HTTP_VALUES
            .iter()
            .chain(OPAQUE_VALUES.iter())
            .find(|(v, _)| *v == s)
            .map(|(_, p)| *p)
    });
    match (by_value, server) {
        (Some(p), _) => p,
        (None, Protocol::Tls | Protocol::Tcp) => AppProtocol::Opaque,
        (None, _) => AppProtocol::Http1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(offered: &[&str], server: Protocol) -> Choice {
        choose(Some(offered.iter().map(|s| s.as_bytes())), server)
    }

    #[test]
    fn istio_values_map_and_peer_exchange_is_never_chosen() {
        use Protocol::{Https, Tls};
        let sidecar = ["istio-peer-exchange", "istio-h2", "istio-http/1.1"];
        assert_eq!(pick(&sidecar, Https), Choice::Select(b"istio-h2"));
        assert_eq!(
            pick(&["istio-peer-exchange", "istio-http/1.0"], Https),
            Choice::Select(b"istio-http/1.0")
        );
        assert_eq!(pick(&["http/1.1", "h2"], Https), Choice::Select(b"h2"));
        assert_eq!(pick(&["istio-peer-exchange"], Https), Choice::Refuse);
        assert_eq!(pick(&["istio"], Https), Choice::Refuse);
        assert_eq!(pick(&["spdy/3"], Https), Choice::Refuse);
        assert_eq!(
            pick(&["istio-peer-exchange", "istio"], Tls),
            Choice::Select(b"istio")
        );
        assert_eq!(pick(&["h2", "http/1.1"], Tls), Choice::NoAlpn);
        assert_eq!(pick(&["istio-peer-exchange"], Tls), Choice::Refuse);
        assert_eq!(
            choose(None::<std::iter::Empty<&[u8]>>, Https),
            Choice::NoAlpn
        );
    }

    #[test]
    fn negotiated_value_decides_the_stream_protocol() {
        use AppProtocol::*;
        assert_eq!(app_protocol(Some(b"istio-h2"), Protocol::Https), Http2);
        assert_eq!(
            app_protocol(Some(b"istio-http/1.1"), Protocol::Https),
            Http1
        );
        assert_eq!(app_protocol(None, Protocol::Https), Http1);
        assert_eq!(app_protocol(Some(b"istio"), Protocol::Tls), Opaque);
        assert_eq!(app_protocol(None, Protocol::Tls), Opaque);
    }
}
