//! CONNECT tunnels: a request `CONNECT host:port` that a route explicitly allows (a match
//! with `method: {exact: CONNECT}`) whose destination cluster is the ServiceEntry port the
//! client named becomes a byte relay to an endpoint of that cluster, after
//! `200 Connection Established`. Everything else is refused by the caller with 403. Owns
//! the decision and the relay; it does not parse heads or pick routes.

use futures_lite::io::{copy, split};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::ProxyError;
use crate::proxy::buf::ReadBuf;
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

/// Byte counts of a finished tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Tunnelled {
    pub upstream: std::net::SocketAddr,
    pub to_upstream: u64,
    pub to_downstream: u64,
}

/// Opens the tunnel: connects to an endpoint of `cluster`, answers 200, forwards bytes
/// the client already sent after its head (`buf`), then relays both ways until both
/// directions have ended. Only failures before the 200 are errors (the caller answers them);
/// after it the tunnel just ends.
pub async fn tunnel<D: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    cluster: &Cluster,
    down: &mut D,
    buf: &mut ReadBuf,
) -> Result<Tunnelled, ProxyError> {
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
    // From here on the client has its 200: failures end the tunnel, never a response.
    let early = match up_w.write_all(buf.data()).await {
        Ok(()) => buf.len() as u64,
        Err(_) => 0,
    };
    buf.consume(buf.len());
    let (down_r, mut down_w) = split(down);
    // Each direction ends at EOF (or error) and then closes its write side, so a
    // half-close reaches the other end; the tunnel ends when both are done.
    let to_up = async {
        let n = copy(down_r, &mut up_w).await.unwrap_or(0);
        let _ = up_w.close().await;
        n
    };
    let to_down = async {
        let n = copy(up_r, &mut down_w).await.unwrap_or(0);
        let _ = down_w.close().await;
        n
    };
    let (a, b) = futures_lite::future::zip(to_up, to_down).await;
    Ok(Tunnelled {
        upstream: addr,
        to_upstream: early + a,
        to_downstream: b,
    })
}
