//! Opening a new upstream connection from a shard: bounded by the cluster's connect timeout,
//! Nagle off (the proxy writes whole heads and body pieces itself), then the TLS handshake
//! when the cluster originates TLS (within the same timeout). For relays that have bytes to
//! send first (a peeked ClientHello), [`connect_sending`] connects and sends them in one go.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use std::rc::Rc;

use super::pool::UpstreamConn;
use crate::error::ProxyError;
use crate::obs::stats::ClusterStats;
use crate::proxy::buf::ReadBuf;
use crate::proxy::deadline::within;
use crate::sys::{fd, socket};
use crate::tls::origination::{handshake, Origination};
use crate::tls::stream::{classify, UpstreamStream};

/// Size of each upstream connection's read buffer.
pub const UPSTREAM_BUF: usize = 16 * 1024;

/// Connects to `addr`; counts the connection on `stats` (total and active) once it is up.
/// With `tls`, a failed or late handshake fails the connect (never falls back to plain).
/// Boxed: a pooled connection moves out of the pool, through the exchange and back on every
/// request, and a box moves as one pointer.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    stats: Rc<ClusterStats>,
    tls: Option<&Origination>,
) -> Result<Box<UpstreamConn>, ProxyError> {
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
    Ok(Box::new(UpstreamConn {
        stream,
        buf: ReadBuf::new(UPSTREAM_BUF),
        peer: addr,
        local,
        requests: 0,
        stats,
    }))
}

/// Connects to `addr` and sends `first` on the new connection, within `timeout`, the way
/// a nonblocking client does it: connect(2) returns at once, the first send goes out when
/// the handshake is done (on loopback it already is, so the whole connect costs no io_uring
/// round trip and no wake-up of the shard). The socket is O_NONBLOCK with TCP_NODELAY, as
/// a splice relay needs. Any failure before `first` is fully sent (refused, unreachable,
/// reset, timed out: `ErrorKind::TimedOut`) is a failed connect, for the caller to retry
/// elsewhere.
pub async fn connect_sending(
    addr: SocketAddr,
    timeout: Duration,
    first: &[u8],
) -> io::Result<TcpStream> {
    let stream = fd::stream_from_fd(socket::connect_nonblocking(addr)?);
    let mut rest = first;
    while !rest.is_empty() {
        match socket::send_nowait(stream.as_raw_fd(), rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if !rest.is_empty() {
        // Still connecting, or the send buffer is full: glommio's write waits for room.
        let mut stream = stream;
        let sent = within(Some(timeout), stream.write_all(rest)).await;
        return match sent {
            Some(Ok(())) => Ok(stream),
            Some(Err(e)) => Err(e),
            None => Err(io::ErrorKind::TimedOut.into()),
        };
    }
    Ok(stream)
}

/// Connects to `addr` with nothing to send first (a relay of a `tcp` route, no peek):
/// glommio waits for the handshake. Nagle off; the socket stays blocking (a splice relay
/// makes it nonblocking when a transfer turns bulk).
pub async fn connect_silent(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| match e {
            glommio::GlommioError::TimedOut(_) => io::ErrorKind::TimedOut.into(),
            glommio::GlommioError::IoError(io) => io,
            other => io::Error::other(other.to_string()),
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
