//! Terminating TLS on a Gateway server (SIMPLE, MUTUAL, ISTIO_MUTUAL): read the ClientHello
//! (after replaying whatever the SNI peek already took off the socket), choose the server by
//! SNI, handshake under `timeouts.tlsHandshake` with that server's current rustls config,
//! take the peer's identity from its certificate, then hand the decrypted stream to the
//! HTTP/2 or HTTP/1.1 proxy (HTTPS servers, by ALPN) or forward it by the listener's tcp
//! route (TLS servers).
//!
//! Owns: the handshake, its counters (`listener.<addr>.ssl.*`, `no_filter_chain_match`)
//! and its failure logs.
//! Must not: build TLS configs (`tls::listener` hands out the shared, reloading ones) or
//! route HTTP itself (`http1::conn` does, with the domain-fronting check).

use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use futures_rustls::server::TlsStream;
use futures_rustls::LazyConfigAcceptor;
use glommio::net::TcpStream;
use rustls::server::Acceptor;

use super::deadline::within;
use super::http1::conn::{self, DownstreamInfo};
use super::terminate_tcp;
use crate::config::model::Protocol;
use crate::obs::stats::{ListenerDeny, ListenerStats};
use crate::obs::stats_tls::HandshakeFailure;
use crate::route::table::ListenerSpec;
use crate::runtime::shard::Shard;
use crate::tls::alpn::{self, AppProtocol, Choice};
use crate::tls::identity::PeerIdentity;
use crate::tls::listener::{ListenerTls, TermServer};
use crate::tls::rewind::Rewind;
use crate::tls::stream::classify;

/// The decrypted downstream stream.
pub type TerminatedStream = TlsStream<Rewind<TcpStream>>;

/// Serves one connection on a terminating listener. `replay` = bytes the caller already
/// read from `stream` (the peeked ClientHello), empty when it read none.
pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    mut info: DownstreamInfo,
    listener: &ListenerSpec,
    replay: Vec<u8>,
) {
    let stats = shard.stats.listener(listener.bind);
    let snapshot = shard.snapshot_for_port(listener.gateway_port);
    let limit = snapshot.config.gateway.timeouts.tls_handshake;
    let servers = ListenerTls::get(&snapshot, listener);
    let io = Rewind::new(replay, stream);
    // Boxed: the handshake's state is only needed until it completes; inline it would stay
    // allocated with every idle terminated connection (tests/idle_memory.rs measured 26.5 ->
    // 22.0 KiB per idle mTLS connection before session tickets; 27.3 KiB with them).
    let Some((tls, server_index, sni)) =
        Box::pin(handshake(io, &servers, &stats, limit, &info, listener)).await
    else {
        return;
    };
    stats.ssl.handshake.inc();
    let (_, conn_state) = tls.get_ref();
    if let Some(leaf) = conn_state.peer_certificates().and_then(|c| c.first()) {
        let id = PeerIdentity::from_cert(leaf);
        info.peer_uri_san = id.uri_san;
        info.peer_subject = id.subject;
    }
    info.sni = sni;
    let app = alpn::app_protocol(conn_state.alpn_protocol(), listener.protocol);
    tracing::debug!(peer = %info.peer, sni = ?info.sni, peer_uri_san = ?info.peer_uri_san, app = ?app, "tls terminated");
    match app {
        AppProtocol::Opaque if listener.protocol == Protocol::Tls => {
            let Some(server) = servers.servers.iter().find(|s| s.index == server_index) else {
                return;
            };
            terminate_tcp::forward(&shard, tls, &info, &snapshot, listener, server).await
        }
        AppProtocol::Opaque => {} // never negotiated on an HTTP server (alpn refuses it)
        AppProtocol::Http2 => {
            let mut tls = tls;
            // Boxed like the HTTP/2 branch of `http1::conn`: 13 KiB of state only h2 uses.
            Box::pin(super::h2::conn::serve(shard, &mut tls, info)).await;
            let _ = within(Some(Duration::from_secs(1)), tls.close()).await;
        }
        AppProtocol::Http1 => {
            let mut tls = tls;
            conn::serve(shard, &mut tls, info).await;
            // close_notify: lets the client tell a complete response from a truncated one.
            let _ = within(Some(Duration::from_secs(1)), tls.close()).await;
        }
    }
}

/// Runs the handshake; None when it failed (already counted and logged).
async fn handshake(
    io: Rewind<TcpStream>,
    servers: &ListenerTls,
    stats: &ListenerStats,
    limit: Duration,
    info: &DownstreamInfo,
    listener: &ListenerSpec,
) -> Option<(TerminatedStream, usize, Option<String>)> {
    let port = listener.gateway_port;
    let attempt = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io)
            .await
            .map_err(Refused::Tls)?;
        let sni = start
            .client_hello()
            .server_name()
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        let server: &TermServer = servers
            .select(sni.as_deref())
            .ok_or_else(|| Refused::NoServer(sni.clone()))?;
        let config = server
            .server_config()
            .map_err(|e| Refused::Config(e.to_string()))?;
        let choice = alpn::choose(start.client_hello().alpn(), listener.protocol);
        let config = alpn::config_for(config, &choice, listener.protocol);
        if choice == Choice::Refuse {
            // rustls sends the `no_application_protocol` alert while failing this.
            let offered = alpn_list(start.client_hello().alpn());
            let _ = start.into_stream(config).await;
            return Err(Refused::Alpn(offered));
        }
        let tls = start.into_stream(config).await.map_err(Refused::Tls)?;
        crate::tls::server_policy::check_resumed(tls.get_ref().1).map_err(Refused::Tls)?;
        Ok::<_, Refused>((tls, server.index, sni))
    };
    let outcome = within(Some(limit), attempt).await;
    let refused = match outcome {
        Some(Ok(done)) => return Some(done),
        Some(Err(r)) => r,
        None => Refused::Timeout,
    };
    match &refused {
        Refused::NoServer(sni) => {
            stats.deny(ListenerDeny::NoFilterChainMatch);
            tracing::info!(peer = %info.peer, port, sni = ?sni, "tls handshake refused: the SNI matches no server on this port");
        }
        Refused::Config(e) => {
            stats
                .ssl
                .handshake_failed(HandshakeFailure::ConnectionError);
            tracing::warn!(peer = %info.peer, port, error = %e, "tls handshake refused: the server's certificates do not load");
        }
        Refused::Alpn(offered) => {
            stats
                .ssl
                .handshake_failed(HandshakeFailure::NoApplicationProtocol);
            tracing::info!(peer = %info.peer, port, offered = %offered, "tls handshake refused: no ALPN protocol this server can serve");
        }
        Refused::Timeout => {
            stats.ssl.handshake_failed(HandshakeFailure::Timeout);
            tracing::info!(peer = %info.peer, port, limit = ?limit, "tls handshake refused: timed out");
        }
        Refused::Tls(e) => {
            let why = classify(e);
            stats.ssl.handshake_failed(why);
            tracing::info!(peer = %info.peer, port, reason = why.stat_name(), error = %e, "tls handshake refused");
        }
    }
    None
}

/// The offered ALPN values, for the log.
fn alpn_list<'a>(offered: Option<impl Iterator<Item = &'a [u8]>>) -> String {
    offered
        .into_iter()
        .flatten()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(",")
}

enum Refused {
    NoServer(Option<String>),
    Alpn(String),
    Config(String),
    Timeout,
    Tls(std::io::Error),
}
