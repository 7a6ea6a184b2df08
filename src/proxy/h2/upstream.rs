//! The exchange with an HTTP/2 upstream (DestinationRule `h2UpgradePolicy: UPGRADE`): the
//! request head the HTTP/1.1 path serialized (hop-by-hop headers already dropped,
//! `x-forwarded-for`/`x-request-id` set) becomes a stream on the shard's pooled connection
//! to the endpoint, the body follows under flow control, and the response comes back to the
//! downstream as HTTP/1.1 (which `StreamIo` turns into HTTP/2 again for HTTP/2 clients).
//! Retries follow the route: connect failure, refused stream, reset, 5xx, as on HTTP/1.1.
//!
//! Owns: translating heads between the protocols and streaming bodies across.
//! Must not: pick routes or endpoints (the caller and the balancer do).

use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future::poll_fn;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use h2::RecvStream;
use http::{header, Method, Request, Uri};

use super::dechunk::Dechunk;
use super::flow_send::{h2_io, FlowSend};
use crate::config::model::RetryOn;
use crate::error::ProxyError;
use crate::obs::fast_fmt;
use crate::proxy::buf::ReadBuf;
use crate::proxy::deadline::within;
use crate::proxy::http1::body::{copy_body, BodyError};
use crate::proxy::http1::exchange::{
    connect_within, min_opt, origination, wire_head_len, Outgoing, UpstreamOutcome,
};
use crate::proxy::http1::head::{is_hop_by_hop, Framing};
use crate::route::table::HttpRoute;
use crate::runtime::shard::{ClusterLocal, Shard};
use crate::upstream::cluster::Cluster;
use crate::upstream::pool::PoolKey;

/// Runs the exchange; errors before any response byte reached the client come back as
/// `Err` (the caller answers locally), later failures are in the outcome.
#[allow(clippy::too_many_arguments)]
pub async fn forward<D: AsyncRead + AsyncWrite + Unpin>(
    shard: &Shard,
    cluster: &Cluster,
    state: &ClusterLocal,
    route: &HttpRoute,
    req: Outgoing<'_>,
    down: &mut D,
    down_buf: &mut ReadBuf,
    resp_wire: &mut Vec<u8>,
    outcome: &mut UpstreamOutcome,
) -> Result<(), ProxyError> {
    let started = Instant::now();
    let deadline = route.timeout.map(|t| started + t);
    let tls = origination(shard, cluster)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let head_len = wire_head_len(req.wire);
    let wire_body = &req.wire[head_len..];
    let resendable = req.body_in_wire;
    let mut tries = 0u32;
    let mut _in_flight = None;
    let (response, _stream) = loop {
        let may_retry = |cause: RetryOn| route.retry.may_retry(tries, cause);
        let addr = state
            .pick_endpoint(cluster, shard)
            .ok_or(ProxyError::NoHealthyUpstream)?;
        outcome.upstream_host = Some(addr);
        _in_flight = Some(state.request_started(addr));
        let key = PoolKey {
            addr,
            tls: tls.as_ref().map(|o| o.tag.clone()),
        };
        let connect = || async {
            if !state.may_connect(cluster, shard) {
                return Err(ProxyError::UpstreamOverflow);
            }
            connect_within(addr, cluster, deadline, state, tls.as_deref()).await
        };
        let slot = match shard
            .h2_pool
            .stream(&key, cluster.idle_timeout, connect)
            .await
        {
            Ok(slot) => slot,
            Err(e) => {
                if matches!(e, ProxyError::ConnectFailed(_) | ProxyError::ConnectTimeout) {
                    state.on_connect_fail(matches!(e, ProxyError::ConnectTimeout));
                }
                state.on_endpoint_result(cluster, addr, None);
                if may_retry(RetryOn::ConnectFailure) && !matches!(e, ProxyError::UpstreamOverflow)
                {
                    (tries, outcome.retried) = (tries + 1, true);
                    continue;
                }
                return Err(e);
            }
        };
        outcome.upstream_local = slot.local;
        let request = to_h2_request(&req.wire[..head_len], scheme)?;
        let end = req.body_in_wire && wire_body.is_empty();
        let mut send = slot.send.clone();
        let (response, body_tx) = match send.send_request(request, end) {
            Ok(sent) => sent,
            Err(e) => {
                shard.h2_pool.discard(&key);
                if resendable && may_retry(RetryOn::Reset) {
                    (tries, outcome.retried) = (tries + 1, true);
                    continue;
                }
                return Err(ProxyError::UpstreamReset(h2_io(e)));
            }
        };
        if !end {
            let mut flow = FlowSend::new(body_tx);
            if req.body_in_wire {
                flow.push(wire_body);
            } else {
                if req.head.expect_continue {
                    // The upstream stream is open and takes the body at once: tell the
                    // client to send it, as Envoy does when it does not proxy 100-continue.
                    down.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .map_err(ProxyError::DownstreamIo)?;
                }
                outcome.bytes_received =
                    stream_request_body(&req, down, down_buf, &mut flow).await?;
            }
            poll_fn(|cx| flow.poll_drain(cx, true))
                .await
                .map_err(ProxyError::UpstreamReset)?;
        }
        let try_timeout = min_opt(
            route.retry.per_try_timeout,
            deadline.map(|d| d.saturating_duration_since(Instant::now())),
        );
        let response = match within(try_timeout, response).await {
            Some(Ok(r)) => r,
            answer => {
                state.on_endpoint_result(cluster, addr, None);
                let (cause, err) = match answer {
                    None => (RetryOn::Status5xx, ProxyError::UpstreamTimeout),
                    Some(Err(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                        (RetryOn::RefusedStream, ProxyError::UpstreamReset(h2_io(e)))
                    }
                    Some(Err(e)) => {
                        if e.is_go_away() || e.is_io() {
                            shard.h2_pool.discard(&key);
                        }
                        (RetryOn::Reset, ProxyError::UpstreamReset(h2_io(e)))
                    }
                    Some(Ok(_)) => unreachable!("matched above"),
                };
                if resendable && may_retry(cause) {
                    (tries, outcome.retried) = (tries + 1, true);
                    continue;
                }
                return Err(err);
            }
        };
        let status = response.status().as_u16();
        if resendable && route.retry.retries_status(tries, status) {
            state.on_response(status, started.elapsed());
            state.on_endpoint_result(cluster, addr, Some(status));
            (tries, outcome.retried) = (tries + 1, true);
            continue;
        }
        break (response, slot);
    };
    if req.body_in_wire {
        outcome.bytes_received = wire_body.len() as u64;
    }
    let service_time = started.elapsed();
    let status = response.status().as_u16();
    outcome.status = status;
    outcome.service_time = Some(service_time);
    state.on_response(status, service_time);
    if let Some(addr) = outcome.upstream_host {
        state.on_endpoint_result(cluster, addr, Some(status));
    }
    outcome.close = req.head.close || shard.draining();
    let (parts, mut body) = response.into_parts();
    let framing = response_framing(&parts, req.head_request, body.is_end_stream());
    http1_response_head(resp_wire, &parts, framing, service_time, outcome.close);
    if down.write_all(resp_wire).await.is_err() {
        (outcome.close, outcome.flag) = (true, Some("DC"));
        return Ok(());
    }
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match within(left, copy_response_body(&mut body, down, framing)).await {
        Some(Ok(n)) => outcome.bytes_sent = n,
        Some(Err(BodyError::Write(_))) => (outcome.close, outcome.flag) = (true, Some("DC")),
        Some(Err(_)) => (outcome.close, outcome.flag) = (true, Some("UC")),
        None => (outcome.close, outcome.flag) = (true, Some("UT")),
    }
    state.on_bytes(head_len as u64 + outcome.bytes_received, outcome.bytes_sent);
    let _ = down.flush().await;
    Ok(())
}

/// The HTTP/2 request for the HTTP/1.1 head the gateway serialized: Host becomes
/// `:authority`, and what HTTP/2 forbids (hop-by-hop headers) stays behind.
fn to_h2_request(head: &[u8], scheme: &str) -> Result<Request<()>, ProxyError> {
    let mut storage = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Request::new(&mut storage);
    const BAD: ProxyError = ProxyError::BadRequest("request not expressible in HTTP/2");
    parsed
        .parse(head)
        .map_err(|_| ProxyError::BadRequest("request head"))?;
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return Err(ProxyError::BadRequest("request head"));
    };
    let host = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .unwrap_or_default();
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(host.as_str())
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::BadRequest("request target not valid for HTTP/2"))?;
    let mut request = Request::new(());
    *request.method_mut() = Method::from_bytes(method.as_bytes()).map_err(|_| BAD)?;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") || is_hop_by_hop(name) {
            continue;
        }
        let name = header::HeaderName::from_bytes(name).map_err(|_| BAD)?;
        let value = header::HeaderValue::from_bytes(h.value).map_err(|_| BAD)?;
        headers.append(name, value);
    }
    Ok(request)
}

/// Streams the client's body (HTTP/1.1 framing taken off) into the upstream stream.
async fn stream_request_body<D: AsyncRead + Unpin>(
    req: &Outgoing<'_>,
    down: &mut D,
    down_buf: &mut ReadBuf,
    flow: &mut FlowSend,
) -> Result<u64, ProxyError> {
    let mut sink = BodySink {
        flow,
        dechunk: (req.head.framing == Framing::Chunked).then(Dechunk::default),
    };
    copy_body(req.head.framing, down_buf, down, &mut sink, req.body_limit)
        .await
        .map_err(|e| match e {
            BodyError::Write(e) => ProxyError::UpstreamReset(e),
            BodyError::Read(e) => ProxyError::DownstreamIo(e),
            BodyError::Truncated => ProxyError::DownstreamClosed,
            BodyError::Framing(why) => ProxyError::BadRequest(why),
            BodyError::TooLarge => ProxyError::BodyTooLarge,
        })
}

/// How the HTTP/1.1 client will find the end of the response body.
fn response_framing(parts: &http::response::Parts, head_request: bool, no_body: bool) -> Framing {
    let status = parts.status.as_u16();
    if head_request || status < 200 || status == 204 || status == 304 {
        return Framing::None;
    }
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match (length, no_body) {
        (Some(n), _) => Framing::Length(n),
        (None, true) => Framing::Length(0),
        (None, false) => Framing::Chunked,
    }
}

fn http1_response_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    service_time: Duration,
    close: bool,
) {
    out.clear();
    let status = parts.status;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut has_length = false;
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name.as_str().as_bytes()) {
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if framing == Framing::Chunked {
                continue;
            }
            has_length = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-envoy-upstream-service-time: ");
    out.extend_from_slice(fast_fmt::decimal(service_time.as_millis() as u64, 0).as_bytes());
    out.extend_from_slice(b"\r\n");
    match framing {
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(0) if !has_length => out.extend_from_slice(b"content-length: 0\r\n"),
        _ => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Copies DATA frames to the client in `framing`, giving the upstream window back only as
/// the client takes the bytes.
async fn copy_response_body<D: AsyncWrite + Unpin>(
    body: &mut RecvStream,
    down: &mut D,
    framing: Framing,
) -> Result<u64, BodyError> {
    if framing == Framing::None {
        return Ok(0);
    }
    let chunked = framing == Framing::Chunked;
    let mut sent = 0u64;
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| BodyError::Read(h2_io(e)))?;
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            down.write_all(size.as_bytes())
                .await
                .map_err(BodyError::Write)?;
        }
        down.write_all(&data).await.map_err(BodyError::Write)?;
        if chunked {
            down.write_all(b"\r\n").await.map_err(BodyError::Write)?;
        }
        let _ = body.flow_control().release_capacity(data.len());
        sent += data.len() as u64;
    }
    if chunked {
        down.write_all(b"0\r\n\r\n")
            .await
            .map_err(BodyError::Write)?;
    }
    Ok(sent)
}

/// The request body's way into the upstream stream: HTTP/1.1 chunk framing removed, bytes
/// sent as the upstream's window allows.
struct BodySink<'a> {
    flow: &'a mut FlowSend,
    dechunk: Option<Dechunk>,
}

impl AsyncWrite for BodySink<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.flow.poll_drain(cx, false))?;
        match &mut this.dechunk {
            Some(d) => d.feed(data, |b| this.flow.push(b)),
            None => this.flow.push(data),
        }
        if let Poll::Ready(Err(e)) = this.flow.poll_drain(cx, false) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flow.poll_drain(cx, false)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.flow.poll_drain(cx, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serialized_head_becomes_an_http2_request() {
        let head = b"POST /a?b=1 HTTP/1.1\r\nhost: api.example.com\r\nx-request-id: r1\r\n\
                     transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n";
        let req = to_h2_request(head, "https").unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().to_string(), "https://api.example.com/a?b=1");
        assert_eq!(req.headers().len(), 1);
        assert_eq!(req.headers()["x-request-id"], "r1");
    }

    #[test]
    fn response_framing_follows_http1_rules() {
        let resp = |status: u16, len: Option<&str>| {
            let mut b = http::Response::builder().status(status);
            if let Some(l) = len {
                b = b.header("content-length", l);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            response_framing(&resp(200, Some("5")), false, false),
            Framing::Length(5)
        );
        assert_eq!(
            response_framing(&resp(200, None), false, false),
            Framing::Chunked
        );
        assert_eq!(
            response_framing(&resp(200, None), false, true),
            Framing::Length(0)
        );
        assert_eq!(
            response_framing(&resp(204, None), false, false),
            Framing::None
        );
        assert_eq!(
            response_framing(&resp(200, Some("5")), true, false),
            Framing::None
        );
        let mut out = Vec::new();
        http1_response_head(
            &mut out,
            &resp(200, None),
            Framing::Chunked,
            Duration::from_millis(7),
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nx-envoy-upstream-service-time: 7\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
    }
}
