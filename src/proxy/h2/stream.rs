//! One HTTP/2 request: its head written out as the HTTP/1.1 head the exchange parses (so
//! the same strict checks, limits, routing by authority, retries, pooling and access-log
//! record apply), then the exchange run over the stream's `StreamIo`.
//!
//! Owns: translating the request head, the stream's access-log record and counters.
//! Must not: route or talk to upstreams itself (`http1::conn::route_and_forward` does).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::request::Parts;
use http::{header, Method, Request};

use super::stream_io::StreamIo;
use crate::error::ProxyError;
use crate::obs::access_log::PROTOCOL_HTTP2;
use crate::proxy::buf::ReadBuf;
use crate::proxy::http1::conn::{reject, route_and_forward, DownstreamInfo};
use crate::proxy::http1::exchange::UpstreamOutcome;
use crate::proxy::http1::head::{parse_request, RequestHead};
use crate::proxy::http1::log;
use crate::runtime::shard::Shard;

/// Tracks the connection's open streams, for its idle timeout.
pub struct Liveness {
    pub open: Cell<usize>,
    pub last_end: Cell<Instant>,
}

pub async fn serve(
    shard: Rc<Shard>,
    info: Rc<DownstreamInfo>,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    live: Rc<Liveness>,
) {
    live.open.set(live.open.get() + 1);
    exchange(&shard, &info, request, respond).await;
    live.open.set(live.open.get() - 1);
    live.last_end.set(Instant::now());
}

async fn exchange(
    shard: &Rc<Shard>,
    info: &DownstreamInfo,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let start_time = SystemTime::now();
    let started = Instant::now();
    let limits = shard.snapshot().config.gateway.limits.clone();
    let head_limit = (limits.max_request_headers_kb as usize * 1024).max(1024);
    let (parts, body) = request.into_parts();
    let connect = parts.method == Method::CONNECT;
    let chunked =
        !connect && !body.is_end_stream() && !parts.headers.contains_key(header::CONTENT_LENGTH);
    let mut io = StreamIo::new(body, respond, chunked, parts.method == Method::HEAD);
    let wire = http1_head(&parts, chunked);
    // From the shard's buffer pool, given back below: zeroing a fresh 60 KiB buffer per
    // stream was a third of this path's instructions (callgrind).
    let mut buf = ReadBuf::lazy(head_limit);
    let mut head = RequestHead::default();
    let mut rec = log::new_record(start_time, info);
    rec.protocol = PROTOCOL_HTTP2;
    let mut wire_out = Vec::new();
    let mut resp_wire = Vec::new();
    let parsed = if wire.len() > head_limit {
        Err(ProxyError::HeaderTooLarge)
    } else {
        let mut rest = &wire[..];
        while !rest.is_empty() && matches!(buf.fill(&mut rest).await, Ok(n) if n > 0) {}
        match parse_request(buf.data(), limits.max_headers as usize, &mut head) {
            Ok(Some(len)) => Ok(len),
            Ok(None) => Err(ProxyError::HeaderTooLarge),
            Err(e) => Err(e),
        }
    };
    let mut outcome = UpstreamOutcome::default();
    match parsed {
        Err(e) => reject(shard, &mut io, &mut resp_wire, e, &mut rec, false).await,
        Ok(head_len) => {
            let result;
            (result, outcome) = Box::pin(route_and_forward(
                shard,
                info,
                &mut io,
                &mut buf,
                &head,
                head_len,
                &mut wire_out,
                &mut resp_wire,
                &mut rec,
            ))
            .await;
            log::take_request(&mut rec, &mut head);
            rec.protocol = PROTOCOL_HTTP2;
            log::set_outcome(&mut rec, &outcome);
            if let Err(e) = result {
                reject(shard, &mut io, &mut resp_wire, e, &mut rec, false).await;
            }
        }
    }
    io.finish(outcome.flag.is_some()).await;
    buf.release();
    log::finish(&mut rec, started);
    let stats = &info.http_stats;
    stats.downstream_rq_total.inc();
    stats.http2.downstream_rq_http2_total.inc();
    stats.record_response(rec.response_code);
    shard.log_http(&rec);
}

/// The HTTP/1.1 head equivalent to an HTTP/2 request: `:authority` becomes Host (a Host
/// header beside it is dropped, as RFC 9113 §8.3.1 says the authority wins), crumbled
/// cookies are joined again (§8.2.3), and a body without content-length is chunked.
fn http1_head(parts: &Parts, chunked: bool) -> Vec<u8> {
    let authority = parts.uri.authority().map(|a| a.as_str());
    let target = match (&parts.method, parts.uri.path_and_query()) {
        (&Method::CONNECT, _) => authority.unwrap_or(""),
        (_, Some(pq)) => pq.as_str(),
        (_, None) => "/",
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(a) = authority {
        push_header(&mut out, b"host", a.as_bytes());
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        if *name == header::HOST && authority.is_some() {
            continue;
        }
        if *name == header::COOKIE {
            cookies.push(value.as_bytes());
            continue;
        }
        push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !cookies.is_empty() {
        push_header(&mut out, b"cookie", &cookies.join(&b"; "[..]));
    }
    if chunked {
        push_header(&mut out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http1_head_carries_authority_cookies_and_framing() {
        let req = Request::builder()
            .method("POST")
            .uri("https://edition.cnn.com/politics?x=1")
            .header("host", "evil.example")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-b3", "v")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let head = String::from_utf8(http1_head(&parts, true)).unwrap();
        assert_eq!(
            head,
            "POST /politics?x=1 HTTP/1.1\r\nhost: edition.cnn.com\r\nx-b3: v\r\n\
             cookie: a=1; b=2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let connect = Request::builder()
            .method("CONNECT")
            .uri("edition.cnn.com:443")
            .body(())
            .unwrap();
        let (parts, ()) = connect.into_parts();
        let head = String::from_utf8(http1_head(&parts, false)).unwrap();
        assert_eq!(
            head,
            "CONNECT edition.cnn.com:443 HTTP/1.1\r\nhost: edition.cnn.com:443\r\n\r\n"
        );
    }
}
