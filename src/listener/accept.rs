//! A shard's accept loop for one listener: accepts, enforces the connection caps, and hands
//! each connection to the data path its listener's protocol calls for. The connection lives
//! on this shard from accept to close.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use crate::config::model::Protocol;
use crate::obs::stats::{HttpConnManagerStats, ListenerDeny, ListenerStats};
use crate::proxy::http1::conn::{serve, DownstreamInfo};
use crate::proxy::tcp_conn::{self, L4Downstream};
use crate::runtime::shard::Shard;

/// What an accept loop needs to know about its listener.
pub struct ListenerCtx {
    pub gateway_port: u16,
    pub protocol: Protocol,
    /// Connections open on this listener on this shard.
    pub active: Rc<Cell<u64>>,
    pub stats: Rc<ListenerStats>,
    pub http_stats: Rc<HttpConnManagerStats>,
}

/// Accepts until `stop` says so. EMFILE/ENFILE back off instead of spinning.
pub async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    ctx: ListenerCtx,
    stop: Rc<Cell<bool>>,
) {
    let ctx = Rc::new(ctx);
    while !stop.get() {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                let raw = match &e {
                    glommio::GlommioError::IoError(io) => io.raw_os_error(),
                    _ => None,
                };
                if matches!(
                    raw,
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                ) {
                    tracing::warn!(error = %e, shard = shard.id, "accept: out of resources, backing off");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        if !admit(&shard, &ctx) {
            ctx.stats.deny(ListenerDeny::Overflow);
            drop(stream);
            continue;
        }
        let shard2 = shard.clone();
        let ctx2 = ctx.clone();
        glommio::spawn_local(async move {
            ctx2.active.set(ctx2.active.get() + 1);
            shard2.conn_opened();
            ctx2.stats.downstream_cx_total.inc();
            ctx2.stats.downstream_cx_active.inc();
            handle(shard2.clone(), stream, &ctx2).await;
            ctx2.active.set(ctx2.active.get() - 1);
            shard2.conn_closed();
            ctx2.stats.downstream_cx_active.dec();
        })
        .detach();
    }
}

/// Connection caps: `maxConnections` is split evenly across shards (no shared counter on the
/// data path); `maxConnectionsPerListener` likewise per listener.
fn admit(shard: &Shard, ctx: &ListenerCtx) -> bool {
    let snapshot = shard.snapshot();
    let limits = &snapshot.config.gateway.limits;
    let shards = shard.shard_count() as u64;
    let global_cap = limits.max_connections.div_ceil(shards).max(1);
    let listener_cap = match limits.max_connections_per_listener {
        0 => u64::MAX,
        n => n.div_ceil(shards).max(1),
    };
    shard.open_connections() < global_cap && ctx.active.get() < listener_cap
}

pub(crate) async fn handle(shard: Rc<Shard>, stream: TcpStream, ctx: &ListenerCtx) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    if matches!(
        ctx.protocol,
        Protocol::Tls | Protocol::Https | Protocol::Tcp
    ) {
        // The SNI (peeked there once, when needed) selects the server: passthrough and TCP
        // relay there, terminating servers go on to `proxy::terminate` from that one point.
        let down = L4Downstream {
            peer,
            local,
            gateway_port: ctx.gateway_port,
            protocol: ctx.protocol,
            stats: ctx.stats.clone(),
            http_stats: ctx.http_stats.clone(),
        };
        // Boxed: its (TLS) state would otherwise size every HTTP connection's task too.
        return Box::pin(tcp_conn::serve(shard, stream, down)).await;
    }
    let info = DownstreamInfo {
        http_stats: ctx.http_stats.clone(),
        peer,
        local,
        gateway_port: ctx.gateway_port,
        sni: None,
        peer_uri_san: None,
        peer_subject: None,
    };
    match ctx.protocol {
        Protocol::Http | Protocol::Http2 | Protocol::Grpc => serve(shard, stream, info).await,
        other => tracing::warn!(?other, "listener protocol not served yet; closing"),
    }
}
