//! CONNECT tunnels: a request `CONNECT host:port` that a route explicitly allows (a match
//! with `method: {exact: CONNECT}`) whose destination cluster is the ServiceEntry port the
//! client named becomes a byte relay to an endpoint of that cluster, after
//! `200 Connection Established`. Everything else is refused by the caller with 403. Owns
//! the decision and the relay, with its idle timeout (`timeouts.downstreamIdle`, as every
//! other relayed TCP stream has); it does not parse heads, pick routes or write access logs.
//!
//! Memory: one fixed buffer per direction for the tunnel's life, however much flows.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use futures_lite::io::split;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProxyError;
use crate::proxy::buf::ReadBuf;
use crate::proxy::passthrough::idle_watch;
use crate::route::host::authority_port;
use crate::route::table::{HttpRoute, StrMatch};
use crate::runtime::shard::Shard;
use crate::upstream::cluster::Cluster;
use crate::upstream::connect::connect;

/// True when `route` allows CONNECT to `authority` through `cluster`: one of its matches
/// names the CONNECT method exactly, and the cluster serves the port the client asked for.
pub fn allowed(route: &HttpRoute, cluster: &Cluster, authority: &str) -> bool {
    let says_connect = route
        .matches
        .iter()
        .any(|m| matches!(&m.method, Some(StrMatch::Exact(x)) if x == "CONNECT"));
    says_connect && authority_port(authority) == Some(cluster.port)
}

/// Copy buffer of one tunnel direction.
const TUNNEL_BUF: usize = 16 * 1024;

/// Byte counts of a finished tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Tunnelled {
    pub upstream: SocketAddr,
    pub to_upstream: u64,
    pub to_downstream: u64,
    /// Nothing moved either way for the idle timeout, so the gateway closed the tunnel
    /// (Envoy's `SI` flag); false when the peers ended it.
    pub idle_timed_out: bool,
}

/// Opens the tunnel: connects to an endpoint of `cluster`, answers 200, forwards bytes
/// the client already sent after its head (`buf`), then relays both ways until both
/// directions have ended or nothing moved for `timeouts.downstreamIdle`. Only failures
/// before the 200 are errors (the caller answers them); after it the tunnel just ends.
pub async fn tunnel<D: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    cluster: &Cluster,
    down: &mut D,
    buf: &mut ReadBuf,
) -> Result<Tunnelled, ProxyError> {
    let idle = shard.snapshot().config.gateway.timeouts.downstream_idle;
    let state = shard.cluster_state(cluster);
    let addr = state
        .pick_endpoint(cluster, shard)
        .ok_or(ProxyError::NoHealthyUpstream)?;
    if !state.may_connect(cluster, shard) {
        return Err(ProxyError::UpstreamOverflow);
    }
    // The client speaks its own protocol (TLS included) inside: never originate TLS here.
    let mut up = match connect(addr, cluster.connect_timeout, state.stats.clone(), None).await {
        Ok(up) => up,
        Err(e) => {
            state.on_connect_fail(matches!(e, ProxyError::ConnectTimeout));
            return Err(e);
        }
    };
    down.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .map_err(ProxyError::DownstreamIo)?;
    down.flush().await.map_err(ProxyError::DownstreamIo)?;
    // `up` keeps the cluster's active-connection count until it drops at the end.
    let (up_r, mut up_w) = split(&mut up.stream);
    let to_up = Cell::new(0u64);
    let to_down = Cell::new(0u64);
    let last_activity = Cell::new(Instant::now());
    // From here on the client has its 200: failures end the tunnel, never a response.
    if up_w.write_all(buf.data()).await.is_ok() {
        to_up.set(buf.len() as u64);
    }
    buf.consume(buf.len());
    let (down_r, mut down_w) = split(down);
    // Each direction ends at EOF (or error) and then closes its write side, so a
    // half-close reaches the other end; the tunnel ends when both are done, or when the
    // idle watch wins and dropping both directions closes the upstream socket (the
    // caller closes the downstream one).
    let ends = async {
        let upward = async {
            pump(down_r, &mut up_w, &to_up, &last_activity).await;
            let _ = up_w.close().await;
        };
        let downward = async {
            pump(up_r, &mut down_w, &to_down, &last_activity).await;
            let _ = down_w.close().await;
        };
        futures_lite::future::zip(upward, downward).await;
        false
    };
    let idles = async {
        idle_watch(&last_activity, idle).await;
        true
    };
    let idle_timed_out = futures_lite::future::or(ends, idles).await;
    if idle_timed_out {
        tracing::info!(
            cluster = %cluster.name,
            upstream = %addr,
            idle = ?idle,
            "CONNECT tunnel closed: no byte either way for the idle timeout"
        );
    }
    state.on_bytes(to_up.get(), to_down.get());
    Ok(Tunnelled {
        upstream: addr,
        to_upstream: to_up.get(),
        to_downstream: to_down.get(),
        idle_timed_out,
    })
}

/// Copies `from` into `to` until EOF or an error on either side, counting the bytes in
/// `moved` and stamping `last_activity` whenever bytes arrive or leave.
async fn pump<R, W>(mut from: R, to: &mut W, moved: &Cell<u64>, last_activity: &Cell<Instant>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; TUNNEL_BUF];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        last_activity.set(Instant::now());
        // Flushed per chunk: a TLS-terminated downstream would otherwise hold the bytes.
        if to.write_all(&chunk[..n]).await.is_err() || to.flush().await.is_err() {
            return;
        }
        moved.set(moved.get() + n as u64);
        last_activity.set(Instant::now());
        // A sender faster than the relay completes every read at once: let the shard's
        // other connections run.
        glommio::yield_if_needed().await;
    }
}
