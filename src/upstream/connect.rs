//! Opening a new upstream connection from a shard: bounded by the cluster's connect timeout,
//! Nagle off (the proxy writes whole heads and body pieces itself), then the TLS handshake
//! when the cluster originates TLS (within the same timeout).

use std::net::SocketAddr;
use std::time::Duration;

use glommio::net::TcpStream;

use std::rc::Rc;

use super::pool::UpstreamConn;
use crate::error::ProxyError;
use crate::obs::stats::ClusterStats;
use crate::proxy::buf::ReadBuf;
use crate::proxy::deadline::within;
use crate::tls::origination::{handshake, Origination};
use crate::tls::stream::{classify, UpstreamStream};

/// Size of each upstream connection's read buffer.
pub const UPSTREAM_BUF: usize = 16 * 1024;

/// Connects to `addr`; counts the connection on `stats` (total and active) once it is up.
/// With `tls`, a failed or late handshake fails the connect (never falls back to plain).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    stats: Rc<ClusterStats>,
    tls: Option<&Origination>,
) -> Result<UpstreamConn, ProxyError> {
    let started = std::time::Instant::now();
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
    let stream = match tls {
        None => UpstreamStream::Plain(stream),
        Some(orig) => {
            let left = timeout.saturating_sub(started.elapsed());
            let result = within(Some(left), handshake(orig, stream))
                .await
                .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into()));
            match result {
                Ok(tls) => {
                    stats.ssl.handshake.inc();
                    UpstreamStream::Tls(Box::new(tls))
                }
                Err(e) => {
                    let why = classify(&e);
                    stats.ssl.handshake_failed(why);
                    tracing::warn!(upstream = %addr, sni = ?orig.sni, error = %e, reason = why.stat_name(), "TLS origination handshake failed");
                    return Err(ProxyError::ConnectFailed(std::io::Error::new(
                        e.kind(),
                        format!("TLS error: {e}"),
                    )));
                }
            }
        }
    };
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
