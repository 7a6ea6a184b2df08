//! A shard's accept loop for one listener: accepts, enforces the connection caps, and hands
//! each connection to the data path its listener's protocol calls for. The connection lives
//! on this shard from accept to close.
//!
//! Accepting costs one system call while connections are queued: the listener is made
//! O_NONBLOCK once and `accept4(SOCK_NONBLOCK)` returns a nonblocking socket (what splice
//! needs) with its peer address. Only on EAGAIN does the loop wait in glommio's `accept`
//! (which itself costs three fcntl and an io_uring accept), then goes back to `accept4`.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use super::bind::ShardListener;
use crate::config::model::Protocol;
use crate::obs::stats::{HttpConnManagerStats, ListenerDeny, ListenerStats};
use crate::proxy::http1::conn::{serve, DownstreamInfo};
use crate::proxy::tcp_conn::{self, L4Downstream};
use crate::runtime::shard::Shard;
use crate::sys::{fd, socket};

/// Connections accepted in a row before the accept loop yields to the shard's other tasks.
const ACCEPT_BURST: u32 = 32;

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
    listener: ShardListener,
    ctx: ListenerCtx,
    stop: Rc<Cell<bool>>,
) {
    let ctx = Rc::new(ctx);
    let ShardListener {
        listener,
        fd: listen_fd,
    } = listener;
    // Without O_NONBLOCK on the listener, accept4 would block the shard: then every accept
    // goes through glommio.
    let try_first = match socket::set_nonblocking(listen_fd, true) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "listener stays blocking; accepting through glommio only");
            false
        }
    };
    let listen_addr = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    // Accepted sockets inherit TCP_NODELAY from the listener: one call here instead of
    // one per connection.
    let nodelay = socket::set_nodelay(listen_fd).is_ok();
    let mut in_a_row = 0u32;
    while !stop.get() {
        let accepted = if try_first {
            match socket::accept_nonblocking(listen_fd) {
                Ok((conn, peer)) => {
                    // A full queue never makes accept4 wait: let the connections already
                    // accepted (and the rest of the shard) run now and then.
                    in_a_row += 1;
                    if in_a_row % ACCEPT_BURST == 0 {
                        futures_lite::future::yield_now().await;
                    }
                    Ok((fd::stream_from_fd(conn), Some(peer)))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_accept(&listener).await,
                Err(e) => Err(e),
            }
        } else {
            wait_accept(&listener).await
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
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
            let addrs = peer.zip(listen_addr);
            handle_accepted(shard2.clone(), stream, addrs, nodelay, &ctx2).await;
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

/// Waits in glommio for the next connection, made nonblocking like those of `accept4`.
async fn wait_accept(listener: &TcpListener) -> io::Result<(TcpStream, Option<SocketAddr>)> {
    let stream = listener.accept().await.map_err(|e| match e {
        glommio::GlommioError::IoError(io) => io,
        other => io::Error::other(other.to_string()),
    })?;
    socket::set_nonblocking(stream.as_raw_fd(), true)?;
    Ok((stream, None))
}

/// Serves one accepted connection; asks the kernel for its addresses.
pub(crate) async fn handle(shard: Rc<Shard>, stream: TcpStream, ctx: &ListenerCtx) {
    handle_accepted(shard, stream, None, false, ctx).await
}

/// Serves one accepted connection. `addrs` (peer, local), when the accept loop knows them
/// (accept4's peer address and the listener's own specific address), saves the
/// getpeername/getsockname calls; `nodelay` says TCP_NODELAY came with the socket.
async fn handle_accepted(
    shard: Rc<Shard>,
    stream: TcpStream,
    addrs: Option<(SocketAddr, SocketAddr)>,
    nodelay: bool,
    ctx: &ListenerCtx,
) {
    let (peer, local) = match addrs {
        Some(known) => known,
        None => match (stream.peer_addr(), stream.local_addr()) {
            (Ok(peer), Ok(local)) => (peer, local),
            _ => return,
        },
    };
    if !nodelay {
        let _ = stream.set_nodelay(true);
    }
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
