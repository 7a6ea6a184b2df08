//! Sending a body on an HTTP/2 stream under flow control, for both directions the gateway
//! sends bodies in (responses to downstream clients, requests to HTTP/2 upstreams): bytes
//! wait in a backlog until the peer's window grants capacity, so a slow reader stalls the
//! writer instead of filling memory. END_STREAM rides on the last DATA frame.
//!
//! Owns: one stream's send side and its backlog. Must not: frame or decode HTTP/1.1.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::{Reason, SendStream};

pub struct FlowSend {
    send: SendStream<Bytes>,
    backlog: BytesMut,
    ended: bool,
}

impl FlowSend {
    pub fn new(send: SendStream<Bytes>) -> Self {
        FlowSend {
            send,
            backlog: BytesMut::new(),
            ended: false,
        }
    }

    /// END_STREAM or a reset has been sent.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Queues body bytes; `poll_drain` sends them.
    pub fn push(&mut self, data: &[u8]) {
        self.backlog.extend_from_slice(data);
    }

    /// Sends the backlog as capacity allows; with `last`, ends the stream after it.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>, last: bool) -> Poll<io::Result<()>> {
        while !self.backlog.is_empty() && !self.ended {
            self.send.reserve_capacity(self.backlog.len());
            let granted = match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(n)) => n,
                Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            };
            let chunk = self
                .backlog
                .split_to(granted.min(self.backlog.len()))
                .freeze();
            let end = last && self.backlog.is_empty();
            self.send.send_data(chunk, end).map_err(h2_io)?;
            self.ended = end;
        }
        if last && !self.ended {
            self.send.send_data(Bytes::new(), true).map_err(h2_io)?;
            self.ended = true;
        }
        Poll::Ready(Ok(()))
    }

    pub fn reset(&mut self, reason: Reason) {
        if !self.ended {
            self.send.send_reset(reason);
            self.ended = true;
        }
    }
}

/// An `h2` error as the I/O error the HTTP/1.1 exchange expects from a failed write or read.
pub fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into());
    }
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}
