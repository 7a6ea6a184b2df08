//! Writing the heads the gateway forwards: the request head upstream (hop-by-hop headers
//! dropped, `x-forwarded-for` and `x-request-id` set as Envoy sets them) and the response
//! head downstream (`x-envoy-upstream-service-time` added). Writes into a reused `Vec`.

use std::io::Write;

use crate::obs::fast_fmt;

use super::head::{is_hop_by_hop, Framing, HeaderSpan, RequestHead, ResponseHead};

/// Header names listed in a `Connection` header are hop-by-hop too (RFC 9110 §7.6.1).
fn named_in_connection(raw: &[u8], headers: &[HeaderSpan], name: &[u8]) -> bool {
    headers.iter().any(|(n, v)| {
        raw[n.clone()].eq_ignore_ascii_case(b"connection")
            && raw[v.clone()]
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
    })
}

/// Whether a header is dropped on the way through. `listed` says whether the head has a
/// `Connection` header at all, so the common head pays no quadratic scan.
fn skip(raw: &[u8], headers: &[HeaderSpan], name: &[u8], listed: bool) -> bool {
    is_hop_by_hop(name) || (listed && named_in_connection(raw, headers, name))
}

fn has_connection_header(raw: &[u8], headers: &[HeaderSpan]) -> bool {
    headers
        .iter()
        .any(|(n, _)| raw[n.clone()].eq_ignore_ascii_case(b"connection"))
}

/// About the size of the parsed head: where its last header value ends in the buffer.
fn head_bytes(headers: &[HeaderSpan]) -> usize {
    headers.last().map_or(0, |(_, v)| v.end)
}

/// The request head sent upstream. `raw` is the buffer `head` was parsed from.
pub fn request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    raw: &[u8],
    forwarded_for: &str,
    request_id: &str,
) {
    out.clear();
    // One allocation for the head instead of a doubling series (the wire is given back
    // while the connection idles, so it usually starts empty).
    out.reserve(head_bytes(&head.headers) + forwarded_for.len() + request_id.len() + 64);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let listed = has_connection_header(raw, &head.headers);
    for (n, v) in &head.headers {
        let name = &raw[n.clone()];
        if skip(raw, &head.headers, name, listed)
            || name.eq_ignore_ascii_case(b"x-forwarded-for")
            || name.eq_ignore_ascii_case(b"x-request-id")
        {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case(b"host");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&raw[v.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        // Absolute-form without a Host header: HTTP/1.1 upstreams require one.
        let _ = write!(out, "host: {}\r\n", head.authority);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(forwarded_for.as_bytes());
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if head.framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The response head sent downstream. `close` adds `connection: close`.
pub fn response_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    raw: &[u8],
    service_time_ms: Option<u64>,
    close: bool,
) {
    out.clear();
    out.reserve(head_bytes(&head.headers) + 96);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(fast_fmt::decimal(head.status.into(), 3).as_bytes());
    out.push(b' ');
    out.extend_from_slice(&raw[head.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    let listed = has_connection_header(raw, &head.headers);
    for (n, v) in &head.headers {
        let name = &raw[n.clone()];
        if skip(raw, &head.headers, name, listed) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&raw[v.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ms) = service_time_ms {
        out.extend_from_slice(b"x-envoy-upstream-service-time: ");
        out.extend_from_slice(fast_fmt::decimal(ms, 0).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if head.framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response the gateway makes itself (errors, denials).
pub fn local_response(out: &mut Vec<u8>, status: u16, body: &str, close: bool) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n{}\r\n{body}",
        reason(status),
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    );
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
