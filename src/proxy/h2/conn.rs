//! A downstream HTTP/2 connection (ALPN `h2`/`istio-h2` after TLS, or h2c with prior
//! knowledge): the `h2` crate runs the protocol; this drives it on the shard, gives each
//! stream its own task, and ends the connection with GOAWAY on floods, on the idle
//! timeout and while draining.
//!
//! Owns: the connection's settings (limits), its lifetime and its `http2.*` counters.
//! Must not: handle a request itself (`stream` does).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::poll_fn;
use futures_lite::{AsyncRead, AsyncWrite};
use h2::Reason;

use super::guard::{Flood, FrameGuard};
use super::io::GuardedIo;
use super::stream::{self, Liveness};
use crate::config::model::Bootstrap;
use crate::proxy::deadline::within;
use crate::proxy::http1::conn::DownstreamInfo;
use crate::runtime::shard::Shard;

/// Streams one connection may have open at once (the RFC 9113 §6.5.2 recommended floor;
/// a sidecar opens more connections rather than queueing behind this).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Per-stream receive window: what one request body may have in flight before the client
/// waits for the gateway to pass it on.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

fn settings(gw: &Bootstrap) -> h2::server::Builder {
    let header_list = (gw.limits.max_request_headers_kb * 1024).max(1024);
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(header_list)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(16 * 1024)
        .max_send_buffer_size(64 * 1024);
    b
}

/// A request stream as `h2` hands it over.
type Accepted = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<Bytes>,
);

enum Next {
    /// Boxed: a request's parts are large and most turns carry none.
    Stream(Option<Result<Box<Accepted>, h2::Error>>),
    Flood(Flood),
}

/// Serves `io` as HTTP/2 until the client or the gateway ends it.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    io: &mut S,
    info: DownstreamInfo,
) {
    let stats = info.http_stats.clone();
    stats.http2.downstream_cx_http2_total.inc();
    stats.http2.downstream_cx_http2_active.inc();
    run(shard, &mut *io, info).await;
    linger(io).await;
    stats.http2.downstream_cx_http2_active.dec();
}

/// After the last frame (a GOAWAY, often), reads and discards what the client still sends
/// for a moment before closing, as nginx's `lingering_close` does: closing with unread
/// bytes would make the kernel answer with a reset that can destroy the GOAWAY before the
/// client reads it.
async fn linger<S: AsyncRead + Unpin>(io: &mut S) {
    const LINGER: Duration = Duration::from_secs(1);
    const LINGER_BYTES: usize = 1 << 20;
    let discard = async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match futures_lite::AsyncReadExt::read(io, &mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = within(Some(LINGER), discard).await;
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    io: &mut S,
    info: DownstreamInfo,
) {
    let gw = shard.snapshot().config.gateway.clone();
    let guard = Rc::new(RefCell::new(FrameGuard::new(Instant::now())));
    let handshake = settings(&gw).handshake::<_, Bytes>(GuardedIo::new(io, guard.clone()));
    let mut conn = match within(Some(gw.timeouts.header_read), handshake).await {
        Some(Ok(conn)) => conn,
        Some(Err(e)) => {
            tracing::debug!(peer = %info.peer, error = %e, "http2 handshake failed");
            return;
        }
        None => {
            tracing::debug!(peer = %info.peer, "http2 handshake timed out");
            return;
        }
    };
    let info = Rc::new(info);
    let live = Rc::new(Liveness {
        open: Cell::new(0),
        last_end: Cell::new(Instant::now()),
    });
    let idle = gw.timeouts.downstream_idle;
    let mut wait = idle;
    let mut going_away = false;
    loop {
        let next = within(
            Some(wait),
            poll_fn(|cx| {
                if let Some(flood) = guard.borrow().tripped() {
                    return Poll::Ready(Next::Flood(flood));
                }
                conn.poll_accept(cx)
                    .map(|next| Next::Stream(next.map(|r| r.map(Box::new))))
            }),
        )
        .await;
        match next {
            None => {
                // Idle means no open stream for `idle`; a stream that ended lately re-arms.
                let quiet = live.last_end.get().elapsed();
                if live.open.get() > 0 || (quiet < idle && !going_away) {
                    wait = if live.open.get() > 0 {
                        idle
                    } else {
                        idle - quiet
                    };
                    continue;
                }
                if going_away {
                    return; // streams outlived the drain deadline: drop them
                }
                tracing::debug!(peer = %info.peer, "http2 connection idle, sending GOAWAY");
                conn.graceful_shutdown();
                (going_away, wait) = (true, gw.timeouts.drain);
            }
            Some(Next::Flood(flood)) => {
                stats_flood(&info, flood);
                tracing::info!(peer = %info.peer, flood = flood.stat_name(), "http2 flood, sending GOAWAY ENHANCE_YOUR_CALM");
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                // Flush the GOAWAY, then drop the connection and its streams.
                let _ = within(
                    Some(Duration::from_secs(1)),
                    poll_fn(|cx| conn.poll_closed(cx)),
                )
                .await;
                return;
            }
            Some(Next::Stream(None)) => return,
            Some(Next::Stream(Some(Err(e)))) => {
                connection_error(&info, &e, guard.borrow().resets());
                return;
            }
            Some(Next::Stream(Some(Ok(accepted)))) => {
                let (request, respond) = *accepted;
                if shard.draining() && !going_away {
                    // Finish what is open, refuse what comes after the GOAWAY.
                    conn.graceful_shutdown();
                    (going_away, wait) = (true, gw.timeouts.drain);
                }
                if !going_away {
                    wait = idle;
                }
                let task =
                    stream::serve(shard.clone(), info.clone(), request, respond, live.clone());
                glommio::spawn_local(task).detach();
            }
        }
    }
}

fn stats_flood(info: &DownstreamInfo, flood: Flood) {
    info.http_stats.http2.flood(flood);
    info.http_stats.http2.goaway_sent.inc();
}

/// Counts and logs why `h2` ended the connection.
fn connection_error(info: &DownstreamInfo, e: &h2::Error, resets_seen: u64) {
    if e.is_io() || e.is_remote() {
        tracing::debug!(peer = %info.peer, error = %e, "http2 connection closed by the client");
        return;
    }
    if !e.is_go_away() {
        tracing::debug!(peer = %info.peer, error = %e, "http2 connection ended");
        return;
    }
    if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
        // `h2`'s own limits: streams reset before they were accepted, or tiny DATA frames.
        let flood = if resets_seen > 0 {
            Flood::RapidReset
        } else {
            Flood::Frames
        };
        stats_flood(info, flood);
        tracing::info!(peer = %info.peer, flood = flood.stat_name(), "http2 flood, GOAWAY ENHANCE_YOUR_CALM sent");
        return;
    }
    info.http_stats.http2.rx_messaging_error.inc();
    info.http_stats.http2.goaway_sent.inc();
    tracing::info!(peer = %info.peer, error = %e, "http2 protocol error by the client, GOAWAY sent");
}
