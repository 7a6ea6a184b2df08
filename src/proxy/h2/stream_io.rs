//! One HTTP/2 stream presented to the HTTP/1.1 exchange as the byte stream it already
//! knows how to proxy: reads yield the request body (re-framed as chunks when the client
//! gave no content-length, as the synthesized head says), writes take the HTTP/1.1
//! response the exchange produces and send it as HEADERS and DATA frames. Reusing the
//! exchange keeps one routing, retry, pooling and logging path for both protocols; the
//! response head it parses here is the gateway's own serialization, so it is well formed.
//!
//! Owns: the stream's flow control in both directions (the client's window is released
//! only as its bytes are taken; response bytes wait for send capacity, so a slow reader
//! stalls the upstream instead of filling memory).
//! Must not: route or decide anything about the request.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::dechunk::Dechunk;
use super::flow_send::{h2_io, FlowSend};
use crate::proxy::http1::head::{is_hop_by_hop, parse_response, Framing, ResponseHead};

/// A response head the exchange writes is a few hundred bytes; this bounds a broken one.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

pub struct StreamIo {
    body: RecvStream,
    /// Re-frame the client's DATA as HTTP/1.1 chunks (the head says `transfer-encoding:
    /// chunked`); false when it carries the client's content-length or is a CONNECT tunnel.
    chunked: bool,
    pending: Bytes,
    request_done: bool,
    respond: Option<SendResponse<Bytes>>,
    /// The response body's stream, once HEADERS went out without END_STREAM.
    send: Option<FlowSend>,
    head_request: bool,
    head: Vec<u8>,
    framing: Framing,
    length_left: u64,
    dechunk: Dechunk,
    /// The whole response body has been accepted.
    complete: bool,
    /// END_STREAM (or a reset) has been sent.
    ended: bool,
}

impl StreamIo {
    pub fn new(
        body: RecvStream,
        respond: SendResponse<Bytes>,
        chunked: bool,
        head_request: bool,
    ) -> Self {
        StreamIo {
            request_done: body.is_end_stream() && !chunked,
            body,
            chunked,
            pending: Bytes::new(),
            respond: Some(respond),
            send: None,
            head_request,
            head: Vec::new(),
            framing: Framing::None,
            length_left: 0,
            dechunk: Dechunk::default(),
            complete: false,
            ended: false,
        }
    }

    /// Ends the stream after the exchange: END_STREAM after the last bytes, or a reset when
    /// the exchange `failed` after the response head or never answered at all.
    pub async fn finish(&mut self, failed: bool) {
        if self.framing == Framing::UntilClose && !failed {
            // The upstream closed: that was the end of this body.
            self.complete = true;
        }
        let drained = futures_lite::future::poll_fn(|cx| self.poll_drain(cx)).await;
        if self.ended || (drained.is_ok() && !failed && self.complete) {
            return;
        }
        match (&mut self.send, &mut self.respond) {
            (Some(send), _) => send.reset(Reason::INTERNAL_ERROR),
            (None, Some(respond)) => respond.send_reset(Reason::INTERNAL_ERROR),
            _ => {}
        }
        self.ended = true;
    }

    fn next_request_bytes(&mut self, data: Bytes) -> Bytes {
        if !self.chunked {
            return data;
        }
        let mut framed = BytesMut::with_capacity(data.len() + 12);
        framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        framed.extend_from_slice(&data);
        framed.extend_from_slice(b"\r\n");
        framed.freeze()
    }

    /// Parses the response head once it is complete and sends HEADERS (interim 1xx heads
    /// become informational responses). Returns the body bytes that followed the head.
    fn take_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let mut rh = ResponseHead::default();
            let Some(len) = parse_response(&self.head, self.head_request, &mut rh)
                .map_err(|e| io::Error::other(e.to_string()))?
            else {
                if self.head.len() > MAX_RESPONSE_HEAD {
                    return Err(io::Error::other("response head too large"));
                }
                return Ok(None);
            };
            let response = to_h2_response(&rh, &self.head)?;
            let respond = self
                .respond
                .as_mut()
                .ok_or_else(|| io::Error::other("response after the end"))?;
            if (100..200).contains(&rh.status) {
                respond.send_informational(response).map_err(h2_io)?;
                self.head.drain(..len);
                continue;
            }
            let end = matches!(rh.framing, Framing::None | Framing::Length(0));
            let send = respond.send_response(response, end).map_err(h2_io)?;
            self.respond = None;
            self.framing = rh.framing;
            if let Framing::Length(n) = rh.framing {
                self.length_left = n;
            }
            if end {
                (self.complete, self.ended) = (true, true);
            } else {
                self.send = Some(FlowSend::new(send));
            }
            let rest = self.head.split_off(len);
            self.head = Vec::new();
            return Ok(Some(rest));
        }
    }

    /// Takes response body bytes (still in HTTP/1.1 framing) into the send backlog.
    fn accept_body(&mut self, input: &[u8]) {
        let Some(send) = &mut self.send else {
            self.complete = true;
            return;
        };
        match self.framing {
            Framing::Length(_) => {
                let take = (self.length_left.min(input.len() as u64)) as usize;
                send.push(&input[..take]);
                self.length_left -= take as u64;
                self.complete = self.length_left == 0;
            }
            Framing::Chunked => {
                self.dechunk.feed(input, |data| send.push(data));
                self.complete = self.dechunk.is_done();
            }
            Framing::UntilClose => send.push(input),
            Framing::None => self.complete = true,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(send) = &mut self.send else {
            return Poll::Ready(Ok(()));
        };
        let result = send.poll_drain(cx, self.complete);
        self.ended |= send.is_ended();
        result
    }
}

/// The HTTP/2 response for a head the exchange serialized (hop-by-hop headers dropped:
/// HTTP/2 forbids them).
fn to_h2_response(rh: &ResponseHead, raw: &[u8]) -> io::Result<Response<()>> {
    let status = StatusCode::from_u16(rh.status).map_err(io::Error::other)?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (n, v) in &rh.headers {
        let name = &raw[n.clone()];
        if is_hop_by_hop(name) {
            continue;
        }
        match (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(&raw[v.clone()]),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::debug!("response header not valid in HTTP/2, dropped"),
        }
    }
    Ok(response)
}

impl AsyncRead for StreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = out.len().min(this.pending.len());
                out[..n].copy_from_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(n));
            }
            if this.request_done {
                return Poll::Ready(Ok(0));
            }
            match ready!(this.body.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Given back as it is taken: the client's window bounds what waits here.
                    let _ = this.body.flow_control().release_capacity(data.len());
                    if !data.is_empty() {
                        this.pending = this.next_request_bytes(data);
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                None => {
                    this.request_done = true;
                    if this.chunked {
                        this.pending = Bytes::from_static(b"0\r\n\r\n");
                    }
                }
            }
        }
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // What was accepted before goes out first: at most one write waits here.
        ready!(this.poll_drain(cx))?;
        if this.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.respond.is_some() {
            this.head.extend_from_slice(data);
            if let Some(rest) = this.take_head()? {
                this.accept_body(&rest);
            }
        } else {
            this.accept_body(data);
        }
        // Start sending now; what does not fit waits for the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }
}
