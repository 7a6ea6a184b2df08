//! One request/response exchange with an upstream: choose an endpoint, take a pooled
//! connection or open one, send the head and body, read the response head (with retries as
//! the route's policy allows), then stream the response back. The request body is streamed,
//! never buffered whole; once it has started flowing upstream the request is not retried.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::{copy_body, BodyError};
use super::head::{parse_response, Framing, RequestHead, ResponseHead};
use super::serialize;
use crate::config::model::RetryOn;
use crate::error::ProxyError;
use crate::proxy::buf::ReadBuf;
use crate::proxy::deadline::within;
use crate::route::table::HttpRoute;
use crate::runtime::shard::{ClusterLocal, Shard};
use crate::tls::origination::Origination;
use crate::upstream::cluster::Cluster;
use crate::upstream::connect::connect;
use crate::upstream::pool::{PoolKey, UpstreamConn};

/// What the access log and stats need to know about an exchange with an upstream.
#[derive(Default)]
pub struct UpstreamOutcome {
    pub status: u16,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_local: Option<SocketAddr>,
    /// Request body bytes sent upstream.
    pub bytes_received: u64,
    /// Response body bytes sent downstream.
    pub bytes_sent: u64,
    pub service_time: Option<Duration>,
    /// Envoy response flag when the exchange failed after the response head (e.g. "UC").
    pub flag: Option<&'static str>,
    /// The downstream connection must close after this exchange.
    pub close: bool,
    pub retried: bool,
}

/// The request as it goes upstream.
pub struct Outgoing<'a> {
    pub head: &'a RequestHead,
    /// The serialized head, followed by the whole body when `body_in_wire`.
    pub wire: &'a [u8],
    pub body_in_wire: bool,
    pub body_limit: u64,
    pub head_request: bool,
}

enum Answer {
    Continue,
    Final(ResponseHead, usize),
}

/// Runs the exchange. Errors before any response byte reached the client come back as
/// `Err` (the caller answers with a local response); later failures are in the outcome.
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
    if cluster.http2 {
        // Boxed: its state (2.7 KiB) would otherwise size every HTTP/1.1 exchange, which is
        // allocated and copied per request.
        let h2 = crate::proxy::h2::upstream::forward;
        return Box::pin(h2(
            shard, cluster, state, route, req, down, down_buf, resp_wire, outcome,
        ))
        .await;
    }
    let started = Instant::now();
    let deadline = route.timeout.map(|t| started + t);
    // Only a request whose body is entirely in `wire` may be sent twice.
    let resendable = req.body_in_wire;
    let mut tries = 0u32;
    let mut _in_flight = None; // LEAST_REQUEST load of the endpoint tried last
    let tls = origination(shard, cluster)?;
    let tls_tag = tls.as_ref().map(|o| o.tag.clone());
    let (mut up, resp, head_len, body_sent) = loop {
        let may_retry = |cause: RetryOn| route.retry.may_retry(tries, cause);
        let addr = state
            .pick_endpoint(cluster, shard)
            .ok_or(ProxyError::NoHealthyUpstream)?;
        outcome.upstream_host = Some(addr);
        _in_flight = Some(state.request_started(addr));
        let key = PoolKey {
            addr,
            tls: tls_tag.clone(),
        };
        let (mut up, reused) = match shard.pool.take(&key) {
            Some(conn) => (conn, true),
            None if !state.may_connect(cluster, shard) => return Err(ProxyError::UpstreamOverflow),
            None => match connect_within(addr, cluster, deadline, state, tls.as_deref()).await {
                Ok(conn) => (conn, false),
                Err(e) => {
                    state.on_connect_fail(matches!(e, ProxyError::ConnectTimeout));
                    state.on_endpoint_result(cluster, addr, None);
                    if may_retry(RetryOn::ConnectFailure) {
                        tries += 1;
                        outcome.retried = true;
                        continue;
                    }
                    return Err(e);
                }
            },
        };
        outcome.upstream_local = up.local;
        up.requests += 1;
        if let Err(e) = up.stream.write_all_batched(req.wire).await {
            if reused && resendable {
                // The upstream closed this pooled connection between our probe and our write.
                tracing::debug!(error = %e, "stale pooled connection, retrying on a new one");
                continue;
            }
            return Err(ProxyError::UpstreamReset(e));
        }
        let mut body_sent = req.body_in_wire;
        if !body_sent && !req.head.expect_continue {
            outcome.bytes_received = stream_body(&mut up, &req, down, down_buf).await?;
            body_sent = true;
        }
        let try_timeout = min_opt(
            route.retry.per_try_timeout,
            deadline.map(|d| d.saturating_duration_since(Instant::now())),
        );
        let answer = loop {
            match read_response_head(&mut up, req.head_request, try_timeout).await {
                Ok(Answer::Continue) if !body_sent => {
                    // The client waits for this before it sends its body (Expect: 100-continue).
                    down.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .map_err(ProxyError::DownstreamIo)?;
                    outcome.bytes_received = stream_body(&mut up, &req, down, down_buf).await?;
                    body_sent = true;
                }
                Ok(Answer::Continue) => {}
                Ok(Answer::Final(head, len)) => break Ok((head, len)),
                Err(e) => break Err(e),
            }
        };
        match answer {
            Ok((resp, len)) => {
                if resendable && route.retry.retries_status(tries, resp.status) {
                    state.on_response(resp.status, started.elapsed());
                    state.on_endpoint_result(cluster, addr, Some(resp.status));
                    tries += 1;
                    outcome.retried = true;
                    continue;
                }
                break (up, resp, len, body_sent);
            }
            Err(e) => {
                state.on_endpoint_result(cluster, addr, None);
                let cause = if matches!(e, ProxyError::UpstreamTimeout) {
                    RetryOn::Status5xx
                } else {
                    RetryOn::Reset
                };
                if resendable && may_retry(cause) {
                    tries += 1;
                    outcome.retried = true;
                    continue;
                }
                return Err(e);
            }
        }
    };
    if req.body_in_wire {
        outcome.bytes_received = req.wire.len() as u64 - wire_head_len(req.wire) as u64;
    }
    let service_time = started.elapsed();
    outcome.status = resp.status;
    outcome.service_time = Some(service_time);
    state.on_response(resp.status, service_time);
    state.on_endpoint_result(cluster, up.peer, Some(resp.status));
    // A body the client still owes us (final answer to Expect: 100-continue) cannot be skipped.
    outcome.close =
        req.head.close || shard.draining() || resp.framing == Framing::UntilClose || !body_sent;
    let upstream_reusable = !resp.close && body_sent;
    serialize::response_head(
        resp_wire,
        &resp,
        up.buf.data(),
        Some(service_time.as_millis() as u64),
        outcome.close,
    );
    up.buf.consume(head_len);
    // A small body already read with the head leaves in the same write: one send, not two.
    let whole_body = match resp.framing {
        Framing::Length(n) if n <= up.buf.len() as u64 => {
            resp_wire.extend_from_slice(&up.buf.data()[..n as usize]);
            up.buf.consume(n as usize);
            Some(n)
        }
        _ => None,
    };
    if down.write_all(resp_wire).await.is_err() {
        outcome.close = true;
        outcome.flag = Some("DC");
        return Ok(());
    }
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let body = match whole_body {
        Some(n) => Some(Ok(n)),
        None => {
            within(
                left,
                copy_body(resp.framing, &mut up.buf, &mut up.stream, down, 0),
            )
            .await
        }
    };
    match body {
        Some(Ok(n)) => {
            outcome.bytes_sent = n;
            let under_cap = cluster.max_requests_per_connection == 0
                || up.requests < cluster.max_requests_per_connection;
            if upstream_reusable && under_cap && up.buf.is_empty() {
                let key = PoolKey {
                    addr: up.peer,
                    tls: tls_tag,
                };
                shard.pool.put(key, up, cluster.idle_timeout);
            }
        }
        Some(Err(BodyError::Write(_))) => (outcome.close, outcome.flag) = (true, Some("DC")),
        Some(Err(_)) => (outcome.close, outcome.flag) = (true, Some("UC")),
        None => (outcome.close, outcome.flag) = (true, Some("UT")),
    }
    let streamed = if req.body_in_wire {
        0
    } else {
        outcome.bytes_received
    };
    state.on_bytes(
        req.wire.len() as u64 + streamed,
        head_len as u64 + outcome.bytes_sent,
    );
    let _ = down.flush().await;
    Ok(())
}

/// The cluster's TLS origination on this shard (None: plain). A config that does not build
/// fails the request closed, as a connect failure.
pub(crate) fn origination(
    shard: &Shard,
    cluster: &Cluster,
) -> Result<Option<std::rc::Rc<Origination>>, ProxyError> {
    crate::tls::origination::for_cluster(cluster, || shard.snapshot().config.gateway.clone())
        .map_err(|e| ProxyError::ConnectFailed(std::io::Error::other(format!("TLS config: {e}"))))
}

pub(crate) fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn wire_head_len(wire: &[u8]) -> usize {
    wire.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(wire.len(), |i| i + 4)
}

pub(crate) async fn connect_within(
    addr: SocketAddr,
    cluster: &Cluster,
    deadline: Option<Instant>,
    state: &ClusterLocal,
    tls: Option<&Origination>,
) -> Result<Box<UpstreamConn>, ProxyError> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let timeout = cluster.connect_timeout;
    // Boxed: the connect future (TLS handshake included) is 4 KiB, and inline it would make
    // every request's exchange future that much larger to move into its box (callgrind:
    // the memcpy was the largest single cost of a proxied request).
    within(
        left,
        Box::pin(connect(addr, timeout, state.stats.clone(), tls)),
    )
    .await
    .unwrap_or(Err(ProxyError::UpstreamTimeout))
}

async fn stream_body<D: AsyncRead + Unpin>(
    up: &mut UpstreamConn,
    req: &Outgoing<'_>,
    down: &mut D,
    down_buf: &mut ReadBuf,
) -> Result<u64, ProxyError> {
    copy_body(
        req.head.framing,
        down_buf,
        down,
        &mut up.stream,
        req.body_limit,
    )
    .await
    .map_err(|e| match e {
        BodyError::Write(e) => ProxyError::UpstreamReset(e),
        BodyError::Read(e) => ProxyError::DownstreamIo(e),
        BodyError::Truncated => ProxyError::DownstreamClosed,
        BodyError::Framing(why) => ProxyError::BadRequest(why),
        BodyError::TooLarge => ProxyError::BodyTooLarge,
    })
}

/// Reads the next response head: `Continue` for `100 Continue`, other interim responses are
/// skipped, a protocol switch is refused (the gateway strips `Upgrade`).
async fn read_response_head(
    up: &mut UpstreamConn,
    head_request: bool,
    timeout: Option<Duration>,
) -> Result<Answer, ProxyError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut head = ResponseHead {
        headers: Vec::with_capacity(16),
        ..Default::default()
    };
    loop {
        if let Some(len) = parse_response(up.buf.data(), head_request, &mut head)? {
            match head.status {
                100 => {
                    up.buf.consume(len);
                    return Ok(Answer::Continue);
                }
                101 => return Err(ProxyError::BadResponse("protocol switch not requested")),
                102..=199 => up.buf.consume(len),
                _ => return Ok(Answer::Final(head, len)),
            }
            continue;
        }
        if up.buf.is_full() {
            return Err(ProxyError::BadResponse("response head too large"));
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match within(left, up.buf.fill(&mut up.stream)).await {
            None => return Err(ProxyError::UpstreamTimeout),
            Some(Ok(0)) => return Err(ProxyError::UpstreamClosed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ProxyError::UpstreamReset(e)),
        }
    }
}
