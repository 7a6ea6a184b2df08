//! Opening a new upstream connection from a shard: bounded by the cluster's connect timeout,
//! Nagle off (the proxy writes whole heads and body pieces itself).

use std::net::SocketAddr;
use std::time::Duration;

use glommio::net::TcpStream;

use std::rc::Rc;

use super::pool::UpstreamConn;
use crate::error::ProxyError;
use crate::obs::stats::ClusterStats;
use crate::proxy::buf::ReadBuf;

/// Size of each upstream connection's read buffer.
pub const UPSTREAM_BUF: usize = 16 * 1024;

/// Connects to `addr`; counts the connection on `stats` (total and active) once it is up.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    stats: Rc<ClusterStats>,
) -> Result<UpstreamConn, ProxyError> {
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| match e {
            glommio::GlommioError::TimedOut(_) => ProxyError::ConnectTimeout,
            glommio::GlommioError::IoError(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ProxyError::ConnectTimeout
            }
            glommio::GlommioError::IoError(io) => ProxyError::ConnectFailed(io),
            other => ProxyError::ConnectFailed(std::io::Error::other(other.to_string())),
        })?;
    // Failing to disable Nagle costs latency, not correctness.
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    stats.upstream_cx_total.inc();
    stats.upstream_cx_active.inc();
    Ok(UpstreamConn {
        stream,
        buf: ReadBuf::new(UPSTREAM_BUF),
        peer: addr,
        local,
        requests: 0,
        stats,
    })
}
