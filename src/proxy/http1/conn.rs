//! A downstream HTTP/1.1 connection: keep-alive loop, head read under the header deadline,
//! routing by Host against the snapshot current at each request, local answers for denied
//! or failed requests, and one access-log record per request. Generic over the stream so a
//! TLS-terminated connection runs the same code.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::connect;
use super::exchange::{forward, Outgoing, UpstreamOutcome};
use super::head::{find_header, parse_request, Framing, RequestHead};
use super::log;
use super::serialize;
use crate::error::ProxyError;
use crate::obs::access_log::AccessRecord;
use crate::obs::fast_fmt;
use crate::obs::stats::HttpConnManagerStats;
use crate::proxy::buf::ReadBuf;
use crate::proxy::deadline::within;
use crate::proxy::wire_pool::Wire;
use crate::route::host::normalize_host;
use crate::route::table::RequestView;
use crate::runtime::shard::Shard;

/// Who is on the other end of a downstream connection, for logs, policy and counters.
#[derive(Clone)]
pub struct DownstreamInfo {
    /// `http.<listener>.*` counters of the listener the connection arrived on.
    pub http_stats: Rc<HttpConnManagerStats>,
    pub peer: SocketAddr,
    /// The address the connection arrived on (the bound port, through `portMap`).
    pub local: SocketAddr,
    /// The Gateway port the listener serves (what routes match).
    pub gateway_port: u16,
    /// SNI of a terminated TLS connection.
    pub sni: Option<String>,
    pub peer_uri_san: Option<String>,
    pub peer_subject: Option<String>,
}

/// Serves requests on `down` until the client closes, goes idle or a request forces a close.
pub async fn serve<D: AsyncRead + AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    mut down: D,
    info: DownstreamInfo,
) {
    let head_limit = (shard
        .snapshot()
        .config
        .gateway
        .limits
        .max_request_headers_kb as usize
        * 1024)
        .max(1024);
    // Buffers are taken when a request arrives and given back while idle, so idle
    // keep-alive connections hold almost no memory (measured in tests/hostile_limits.rs).
    let mut buf = ReadBuf::lazy(head_limit);
    let mut head = RequestHead::default();
    // Serialization buffers, from the shard's pool while a request is served.
    let mut req_wire = Wire::default();
    let mut resp_wire = Wire::default();
    let mut first = true;
    loop {
        // The bootstrap of the snapshot current now: reloads apply from the next request.
        let snapshot = shard.snapshot();
        let gw = &snapshot.config.gateway;
        if buf.is_empty() {
            buf.release();
            req_wire.release();
            resp_wire.release();
            head.headers = Vec::new();
            match shard
                .idle
                .within(gw.timeouts.downstream_idle, buf.fill(&mut down))
                .await
            {
                Some(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        req_wire.take_if_released();
        resp_wire.take_if_released();
        if std::mem::take(&mut first)
            && prior_knowledge_h2(&mut buf, &mut down, gw.timeouts.header_read).await
        {
            let replay = buf.data().to_vec();
            let mut down = crate::tls::rewind::Rewind::new(replay, down);
            // Boxed: the HTTP/2 state is 13 KiB and would otherwise size (and be copied with)
            // every HTTP/1.1 connection's task.
            let h2 = Box::pin(crate::proxy::h2::conn::serve(shard, &mut down, info));
            return h2.await;
        }
        let start_time = SystemTime::now();
        let started = Instant::now();
        let head_deadline = started + gw.timeouts.header_read;
        let parsed = loop {
            match parse_request(buf.data(), gw.limits.max_headers as usize, &mut head) {
                Ok(Some(len)) => break Ok(len),
                Ok(None) if buf.is_full() => break Err(ProxyError::HeaderTooLarge),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            let left = head_deadline.saturating_duration_since(Instant::now());
            match within(Some(left), buf.fill(&mut down)).await {
                None => break Err(ProxyError::HeaderTimeout),
                Some(Ok(0)) | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        };
        let mut rec = log::new_record(start_time, &info);
        let close = match parsed {
            // The stream position is unknown after a bad head: answer and close.
            Err(e) => {
                reject(&shard, &mut down, &mut resp_wire, e, &mut rec, true).await;
                true
            }
            Ok(head_len) => {
                // Boxed per request: the exchange's state (TLS origination included) is
                // large and would otherwise stay allocated with every idle connection.
                let (result, outcome) = Box::pin(route_and_forward(
                    &shard,
                    &info,
                    &mut down,
                    &mut buf,
                    &head,
                    head_len,
                    &mut req_wire,
                    &mut resp_wire,
                    &mut rec,
                ))
                .await;
                log::take_request(&mut rec, &mut head);
                // While draining, the answer to this request is the connection's last.
                let close = outcome.close || head.close || shard.draining();
                log::set_outcome(&mut rec, &outcome);
                if let Err(e) = result {
                    reject(&shard, &mut down, &mut resp_wire, e, &mut rec, close).await;
                }
                close
            }
        };
        log::finish(&mut rec, started);
        info.http_stats.downstream_rq_total.inc();
        info.http_stats.record_response(rec.response_code);
        shard.log_http(&rec);
        log::give_back(rec, &mut head);
        if close {
            return;
        }
        // Pipelined requests are served from the buffer without waiting on I/O: let the
        // shard's other tasks run between them.
        glommio::yield_if_needed().await;
    }
}

/// Whether the connection opens with the HTTP/2 preface (h2c with prior knowledge, or h2
/// over TLS without ALPN). Reads until the preface is complete or a byte differs; anything
/// else is HTTP/1.x (where `PRI * HTTP/2.0` is a 400 like any other bad version).
async fn prior_knowledge_h2<D: AsyncRead + Unpin>(
    buf: &mut ReadBuf,
    down: &mut D,
    limit: std::time::Duration,
) -> bool {
    let preface = crate::proxy::h2::PREFACE;
    let deadline = Instant::now() + limit;
    loop {
        let seen = buf.len().min(preface.len());
        if buf.data()[..seen] != preface[..seen] {
            return false;
        }
        if seen == preface.len() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match within(Some(left), buf.fill(down)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn route_and_forward<D: AsyncRead + AsyncWrite + Unpin>(
    shard: &Rc<Shard>,
    info: &DownstreamInfo,
    down: &mut D,
    buf: &mut ReadBuf,
    head: &RequestHead,
    head_len: usize,
    req_wire: &mut Vec<u8>,
    resp_wire: &mut Vec<u8>,
    rec: &mut AccessRecord,
) -> (Result<(), ProxyError>, UpstreamOutcome) {
    // Until the body has been taken off the stream, an early answer must close the connection.
    let mut outcome = UpstreamOutcome {
        close: head.framing != Framing::None,
        ..Default::default()
    };
    // Every early answer takes the head off the stream first, so the keep-alive loop moves on.
    macro_rules! deny {
        ($e:expr) => {{
            buf.consume(head_len);
            return (Err($e), outcome);
        }};
    }
    let snapshot = shard.snapshot_for_port(info.gateway_port);
    // A declared length over the limit is refused before any upstream is contacted.
    let body_limit = snapshot.config.gateway.limits.max_request_body_bytes;
    if matches!(head.framing, Framing::Length(n) if body_limit > 0 && n > body_limit) {
        deny!(ProxyError::BodyTooLarge)
    }
    let Some(host) = normalize_host(&head.authority) else {
        deny!(ProxyError::BadRequest("invalid host"))
    };
    let listener = snapshot.listener(info.gateway_port);
    let sni = info.sni.as_deref();
    if !listener.is_none_or(|l| crate::tls::listener::host_allowed(&l.servers, sni, &host)) {
        deny!(ProxyError::Misdirected)
    }
    let raw = buf.data();
    let header = |name: &str| find_header(raw, &head.headers, name);
    let view = RequestView {
        host: &host,
        authority: &head.authority,
        path: &head.path,
        method: &head.method,
        header: &header,
    };
    let Some(route) = listener.and_then(|l| l.http.route(&view)) else {
        if head.method == "CONNECT" {
            tracing::info!(target = %head.authority, peer = %info.peer, "CONNECT refused: no route");
            outcome.close = true;
            deny!(ProxyError::Forbidden("CONNECT"))
        }
        deny!(ProxyError::NoRoute)
    };
    rec.route_name = route.name.clone();
    let cluster = &snapshot.clusters[route.pick(shard.random())];
    rec.upstream_cluster = Some(cluster.name.clone());
    if head.method == "CONNECT" {
        // A tunnel or a 403; either way the connection is the tunnel's or ends here.
        outcome.close = true;
        if !connect::allowed(route, cluster, &head.authority) {
            tracing::info!(target = %head.authority, peer = %info.peer, "CONNECT refused: no route allows it");
            deny!(ProxyError::Forbidden("CONNECT"))
        }
        buf.consume(head_len);
        let result = Box::pin(connect::tunnel(shard, cluster, down, buf))
            .await
            .map(|t| {
                outcome.status = 200;
                outcome.upstream_host = Some(t.upstream);
                outcome.bytes_received = t.to_upstream;
                outcome.bytes_sent = t.to_downstream;
                outcome.flag = t.idle_timed_out.then_some("SI");
            });
        return (result, outcome);
    }
    let state = shard.cluster_state(cluster);
    // Envoy appends the client address to x-forwarded-for.
    let peer = fast_fmt::ip(info.peer.ip());
    let forwarded_for = match &head.forwarded_for {
        Some(xff) => [xff.as_str(), ",", peer.as_str()].concat(),
        None => peer.as_str().to_string(),
    };
    let request_id = head
        .request_id
        .clone()
        .unwrap_or_else(|| shard.request_id());
    serialize::request_head(req_wire, head, raw, &forwarded_for, &request_id);
    rec.x_forwarded_for = Some(forwarded_for);
    rec.request_id = Some(request_id);
    buf.consume(head_len);
    let body_in_wire = match head.framing {
        Framing::None => true,
        Framing::Length(n) if n <= buf.len() as u64 && n <= 16 * 1024 => {
            req_wire.extend_from_slice(&buf.data()[..n as usize]);
            buf.consume(n as usize);
            true
        }
        _ => false,
    };
    let req = Outgoing {
        head,
        wire: req_wire,
        body_in_wire,
        body_limit,
        head_request: head.method == "HEAD",
    };
    outcome.close = !body_in_wire;
    let result = forward(
        shard,
        cluster,
        &state,
        route,
        req,
        down,
        buf,
        resp_wire,
        &mut outcome,
    )
    .await;
    (result, outcome)
}

/// Answers with a local response for `e` (nothing when the client is gone).
pub(crate) async fn reject<D: AsyncWrite + Unpin>(
    shard: &Shard,
    down: &mut D,
    wire: &mut Vec<u8>,
    e: ProxyError,
    rec: &mut AccessRecord,
    close: bool,
) {
    let status = e.status();
    log::fail(rec, &e);
    if matches!(e, ProxyError::NoRoute) {
        shard.count_blackhole(status);
    }
    tracing::debug!(error = %e, status, "request refused");
    if status == 0 {
        return;
    }
    serialize::local_response(wire, status, local_body(&e), close);
    let _ = down.write_all(wire).await;
    let _ = down.flush().await;
}

fn local_body(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::NoRoute => "no route to this destination from the egress gateway\n",
        ProxyError::Forbidden(_) => "forbidden\n",
        ProxyError::NoHealthyUpstream => "no healthy upstream\n",
        ProxyError::UpstreamOverflow => "upstream connection limit reached\n",
        ProxyError::ConnectFailed(_) | ProxyError::ConnectTimeout => "upstream connect error\n",
        ProxyError::UpstreamTimeout => "upstream request timeout\n",
        ProxyError::HeaderTimeout => "request header timeout\n",
        ProxyError::HeaderTooLarge => "request header too large\n",
        ProxyError::BodyTooLarge => "request body too large\n",
        ProxyError::BadRequest(_) => "bad request\n",
        ProxyError::Misdirected => "misdirected request\n",
        _ => "upstream error\n",
    }
}
