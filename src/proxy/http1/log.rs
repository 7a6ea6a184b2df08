//! Filling the access-log record of one HTTP request as the exchange runs. The record is
//! handed to the shard (counters, then the log writer's queue) when the request ends.

use std::time::{Instant, SystemTime};

use super::conn::DownstreamInfo;
use super::exchange::UpstreamOutcome;
use super::head::RequestHead;
use crate::error::ProxyError;
use crate::obs::access_log::{AccessRecord, ResponseFlags, PROTOCOL_HTTP10, PROTOCOL_HTTP11};
use crate::obs::shard_stats::BLACKHOLE_CLUSTER;

pub fn new_record(start_time: SystemTime, info: &DownstreamInfo) -> AccessRecord {
    let mut rec = AccessRecord::new(start_time, info.local, info.peer);
    rec.protocol = PROTOCOL_HTTP11;
    rec.requested_server_name = info.sni.clone();
    rec.downstream_peer_uri_san = info.peer_uri_san.clone();
    rec.downstream_peer_subject = info.peer_subject.clone();
    rec
}

/// Moves the request's fields into the record once the exchange is done with the head:
/// no copies (`give_back` returns the strings once the line is rendered). The exchange has
/// already set the `x-forwarded-for` and `x-request-id` it sent upstream; a request
/// refused before that logs the client's.
pub fn take_request(rec: &mut AccessRecord, head: &mut RequestHead) {
    rec.method = Some(std::mem::take(&mut head.method));
    // A CONNECT's authority-form target has no path: Envoy's HTTP/1 codec sets `:authority`
    // from it and no `:path`, so its log line reads `"CONNECT - HTTP/1.1"`. Only CONNECT
    // parses to an empty path (origin and absolute forms give at least "/").
    rec.path = (!head.path.is_empty()).then(|| std::mem::take(&mut head.path));
    rec.protocol = if head.minor == 0 {
        PROTOCOL_HTTP10
    } else {
        PROTOCOL_HTTP11
    };
    rec.authority = Some(std::mem::take(&mut head.authority));
    rec.user_agent = head.user_agent.take();
    if rec.x_forwarded_for.is_none() {
        rec.x_forwarded_for = head.forwarded_for.take();
    }
    if rec.request_id.is_none() {
        rec.request_id = head.request_id.take();
    }
}

/// Gives the strings `take_request` moved into the record back to the head once the line
/// is logged: the connection's next request is parsed into their capacity.
pub fn give_back(rec: AccessRecord, head: &mut RequestHead) {
    let AccessRecord {
        method,
        path,
        authority,
        ..
    } = rec;
    head.method = method.unwrap_or_default();
    head.path = path.unwrap_or_default();
    head.authority = authority.unwrap_or_default();
}

pub fn set_outcome(rec: &mut AccessRecord, outcome: &UpstreamOutcome) {
    rec.response_code = outcome.status;
    rec.upstream_host = outcome.upstream_host;
    rec.upstream_local_address = outcome.upstream_local;
    rec.bytes_received = outcome.bytes_received;
    rec.bytes_sent = outcome.bytes_sent;
    rec.upstream_service_time = outcome.service_time;
    if let Some(flag) = outcome.flag.and_then(ResponseFlags::from_short_name) {
        rec.response_flags.insert(flag);
    }
    if outcome.retried && outcome.status >= 500 {
        rec.response_flags
            .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
    }
}

/// Records the local answer the gateway gave for `e`.
pub fn fail(rec: &mut AccessRecord, e: &ProxyError) {
    rec.response_code = e.status();
    if let Some(flag) = ResponseFlags::from_short_name(e.response_flag()) {
        rec.response_flags.insert(flag);
    }
    if matches!(e, ProxyError::NoRoute) {
        rec.upstream_cluster = Some(BLACKHOLE_CLUSTER.into());
    }
    if e.fault() == crate::error::Fault::Upstream {
        rec.upstream_transport_failure_reason = Some(e.to_string());
    }
}

pub fn finish(rec: &mut AccessRecord, started: Instant) {
    rec.duration = started.elapsed();
}
