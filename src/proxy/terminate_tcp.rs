//! A TLS server (protocol TLS, mode SIMPLE/MUTUAL/ISTIO_MUTUAL) forwards the decrypted
//! stream — usually the application's own TLS — by the first tcp route bound to the
//! server's gateway and port (compiled into `ListenerSpec::l4` by `route::compile`, looked
//! up like passthrough's routes), with a plain copy loop in both directions and one
//! access-log line per connection.
//!
//! Owns: the lookup of the compiled route, the upstream connect, the copy loop.
//! Must not: splice (the downstream side is decrypted in user space, bytes pass anyway).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use super::deadline::within;
use super::http1::conn::DownstreamInfo;
use super::terminate::TerminatedStream;
use crate::obs::access_log::{AccessRecord, ResponseFlags};
use crate::obs::shard_stats::BLACKHOLE_CLUSTER;
use crate::obs::stats::ListenerDeny;
use crate::route::table::{ListenerSpec, Snapshot};
use crate::runtime::shard::Shard;
use crate::tls::listener::TermServer;

const COPY_BUF: usize = 16 * 1024;

/// Where a terminated TLS connection goes.
struct TcpTarget {
    cluster: Arc<str>,
    addr: Option<SocketAddr>,
}

pub async fn forward(
    shard: &Rc<Shard>,
    mut down: TerminatedStream,
    info: &DownstreamInfo,
    snapshot: &Arc<Snapshot>,
    listener: &ListenerSpec,
    server: &TermServer,
) {
    let started = Instant::now();
    let mut rec = AccessRecord::new(SystemTime::now(), info.local, info.peer);
    rec.requested_server_name = info.sni.clone();
    rec.downstream_peer_uri_san = info.peer_uri_san.clone();
    rec.downstream_peer_subject = info.peer_subject.clone();
    let gw = &snapshot.config.gateway;
    let Some(target) = tcp_target(shard, snapshot, listener, server) else {
        shard
            .stats
            .listener(listener.bind)
            .deny(ListenerDeny::NoRoute);
        shard.count_blackhole(0);
        rec.upstream_cluster = Some(BLACKHOLE_CLUSTER.into());
        rec.response_flags.insert(ResponseFlags::NO_ROUTE_FOUND);
        finish(shard, rec, started);
        let _ = down.close().await;
        return;
    };
    rec.upstream_cluster = Some(target.cluster.clone());
    let stats = shard.stats.cluster(&target.cluster);
    let Some(addr) = target.addr else {
        stats.upstream_cx_none_healthy.inc();
        rec.response_flags
            .insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
        finish(shard, rec, started);
        return;
    };
    rec.upstream_host = Some(addr);
    let up = match TcpStream::connect_timeout(addr, gw.timeouts.connect).await {
        Ok(up) => up,
        Err(e) => {
            stats.upstream_cx_connect_fail.inc();
            rec.response_flags
                .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            rec.upstream_transport_failure_reason = Some(e.to_string());
            finish(shard, rec, started);
            return;
        }
    };
    let _ = up.set_nodelay(true);
    rec.upstream_local_address = up.local_addr().ok();
    stats.upstream_cx_total.inc();
    stats.upstream_cx_active.inc();
    let idle = gw.timeouts.downstream_idle;
    let (mut down_r, mut down_w) = futures_lite::io::split(down);
    let (mut up_r, mut up_w) = futures_lite::io::split(up);
    let (sent_up, sent_down) = futures_lite::future::zip(
        pump(&mut down_r, &mut up_w, idle),
        pump(&mut up_r, &mut down_w, idle),
    )
    .await;
    stats.upstream_cx_active.dec();
    stats.upstream_cx_tx_bytes_total.add(sent_up.0);
    stats.upstream_cx_rx_bytes_total.add(sent_down.0);
    rec.bytes_received = sent_up.0;
    rec.bytes_sent = sent_down.0;
    if sent_down.1.is_err() {
        rec.response_flags
            .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
    }
    finish(shard, rec, started);
}

fn finish(shard: &Shard, mut rec: AccessRecord, started: Instant) {
    rec.duration = started.elapsed();
    shard.log_http(&rec);
}

/// Copies until EOF, then half-closes the destination (a TLS destination sends its
/// close_notify first). Returns the bytes moved and whether the source ended cleanly.
async fn pump<R, W>(src: &mut R, dst: &mut W, idle: Duration) -> (u64, io::Result<()>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUF];
    let mut moved = 0u64;
    let result = loop {
        let n = match within(Some(idle), src.read(&mut buf)).await {
            None => break Err(io::ErrorKind::TimedOut.into()),
            Some(Ok(0)) => break Ok(()),
            Some(Ok(n)) => n,
            Some(Err(e)) => break Err(e),
        };
        if let Err(e) = dst.write_all(&buf[..n]).await {
            break Err(e);
        }
        if let Err(e) = dst.flush().await {
            break Err(e);
        }
        moved += n as u64;
    };
    let _ = dst.close().await;
    (moved, result)
}

/// The compiled tcp route of `server` (see `L4Table::terminated_route`), its destination
/// picked by weight and an endpoint by the cluster's balancer. None = no route.
fn tcp_target(
    shard: &Shard,
    snapshot: &Snapshot,
    listener: &ListenerSpec,
    server: &TermServer,
) -> Option<TcpTarget> {
    let route = listener.l4.terminated_route(server.index)?;
    let cluster = snapshot.clusters.get(route.pick(shard.random()))?;
    let addr = shard.cluster_state(cluster).pick_endpoint(cluster, shard);
    Some(TcpTarget {
        cluster: cluster.name.clone(),
        addr,
    })
}
