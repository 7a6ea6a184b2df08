//! Per-shard HTTP/2 connections to upstreams whose DestinationRule says
//! `h2UpgradePolicy: UPGRADE`: one connection per pool key (endpoint, and for TLS the SNI
//! and client identity), every request of the shard to that endpoint multiplexed on it as
//! a stream, as Envoy's HTTP/2 connection pool does per worker. A connection that failed
//! or went away is replaced on the next request; one idle past the cluster's idle timeout
//! is closed by the shard's sweep.
//!
//! Owns: the connections and the task driving each one.
//! Must not: build requests or read responses (the exchange does, on its stream).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::sync::Semaphore;
use h2::client::SendRequest;

use super::pool::{PoolKey, UpstreamConn};
use crate::error::ProxyError;
use crate::proxy::h2::io::GuardedIo;

/// Receive window per upstream stream and per connection: what an upstream may send ahead
/// of a slow client.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

struct H2Conn {
    send: SendRequest<Bytes>,
    local: Option<SocketAddr>,
    /// Set by the driving task when the connection ends.
    closed: Rc<Cell<bool>>,
    /// Streams open now, and when the last one ended (for the idle timeout).
    streams: Rc<Cell<usize>>,
    last_used: Rc<Cell<Instant>>,
    idle_timeout: Duration,
}

/// A stream slot on a pooled connection; dropping it marks the stream finished.
pub struct H2Stream {
    pub send: SendRequest<Bytes>,
    pub local: Option<SocketAddr>,
    streams: Rc<Cell<usize>>,
    last_used: Rc<Cell<Instant>>,
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.streams.set(self.streams.get() - 1);
        self.last_used.set(Instant::now());
    }
}

#[derive(Default)]
pub struct H2Pool {
    conns: RefCell<HashMap<PoolKey, H2Conn>>,
    /// One opener per key: requests arriving while a connection is being made wait for it
    /// instead of each opening their own.
    openers: RefCell<HashMap<PoolKey, Rc<Semaphore>>>,
}

impl H2Pool {
    /// A stream on the connection for `key`, opening one with `connect` when there is none
    /// (or the last one ended).
    pub async fn stream<F>(
        &self,
        key: &PoolKey,
        idle_timeout: Duration,
        connect: impl FnOnce() -> F,
    ) -> Result<H2Stream, ProxyError>
    where
        F: Future<Output = Result<Box<UpstreamConn>, ProxyError>>,
    {
        let send = match self.existing(key) {
            Some(send) => send,
            None => {
                let opener = self
                    .openers
                    .borrow_mut()
                    .entry(key.clone())
                    .or_insert_with(|| Rc::new(Semaphore::new(1)))
                    .clone();
                let _turn = opener
                    .acquire_permit(1)
                    .await
                    .map_err(|e| ProxyError::ConnectFailed(io::Error::other(e.to_string())))?;
                match self.existing(key) {
                    Some(send) => send,
                    None => {
                        let conn = open(connect().await?, idle_timeout).await?;
                        let send = conn.send.clone();
                        self.conns.borrow_mut().insert(key.clone(), conn);
                        send
                    }
                }
            }
        };
        // Waits while the upstream's concurrent-stream limit is reached.
        let send = send.ready().await.map_err(|e| {
            self.conns.borrow_mut().remove(key);
            ProxyError::UpstreamReset(crate::proxy::h2::flow_send::h2_io(e))
        })?;
        let conns = self.conns.borrow();
        let conn = conns.get(key).ok_or(ProxyError::UpstreamClosed)?;
        conn.streams.set(conn.streams.get() + 1);
        Ok(H2Stream {
            send,
            local: conn.local,
            streams: conn.streams.clone(),
            last_used: conn.last_used.clone(),
        })
    }

    fn existing(&self, key: &PoolKey) -> Option<SendRequest<Bytes>> {
        self.conns
            .borrow()
            .get(key)
            .filter(|c| !c.closed.get())
            .map(|c| c.send.clone())
    }

    /// Forgets the connection for `key` (it failed a request): the next request opens anew.
    pub fn discard(&self, key: &PoolKey) {
        self.conns.borrow_mut().remove(key);
    }

    /// Closes connections that ended or sat without streams past their idle timeout.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.conns.borrow_mut().retain(|_, c| {
            !c.closed.get()
                && (c.streams.get() > 0 || now.duration_since(c.last_used.get()) < c.idle_timeout)
        });
        let conns = self.conns.borrow();
        self.openers
            .borrow_mut()
            .retain(|key, opener| conns.contains_key(key) || Rc::strong_count(opener) > 1);
    }
}

/// The HTTP/2 handshake on a fresh upstream connection, then a task that drives it until
/// it ends (dropping the last `SendRequest` with no stream open ends it too).
async fn open(up: Box<UpstreamConn>, idle_timeout: Duration) -> Result<H2Conn, ProxyError> {
    let local = up.local;
    let peer = up.peer;
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(64 * 1024)
        .handshake::<_, Bytes>(GuardedIo::plain(Owned(up)));
    let (send, connection) = handshake
        .await
        .map_err(|e| ProxyError::UpstreamReset(crate::proxy::h2::flow_send::h2_io(e)))?;
    let closed = Rc::new(Cell::new(false));
    let done = closed.clone();
    glommio::spawn_local(async move {
        if let Err(e) = connection.await {
            tracing::debug!(upstream = %peer, error = %e, "upstream http2 connection ended");
        }
        done.set(true);
    })
    .detach();
    Ok(H2Conn {
        send,
        local,
        closed,
        streams: Rc::new(Cell::new(0)),
        last_used: Rc::new(Cell::new(Instant::now())),
        idle_timeout,
    })
}

/// An upstream connection the HTTP/2 driver owns (its `Drop` keeps `upstream_cx_active`).
struct Owned(Box<UpstreamConn>);

impl AsyncRead for Owned {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Owned {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_close(cx)
    }
}
