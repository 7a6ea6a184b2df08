//! Writing the heads the gateway forwards: the request head upstream (hop-by-hop headers
//! dropped, `x-forwarded-for` and `x-request-id` set as Envoy sets them) and the response
//! head downstream (`x-envoy-upstream-service-time` added). Writes into a reused `Vec`.

use std::io::Write;

use crate::obs::fast_fmt;

use super::head::{is_hop_by_hop, list_items, Framing, HeaderSpan, RequestHead, ResponseHead};

/// Header names listed in the head's `Connection` headers, which are hop-by-hop too (RFC
/// 9110 §7.6.1). Gathered once per head, not once per header, and only when the parser saw
/// such a name: names that are hop-by-hop anyway (`keep-alive`, the usual one) are not kept.
struct Listed<'a> {
    raw: &'a [u8],
    headers: &'a [HeaderSpan],
    names: [&'a [u8]; 4],
    len: usize,
    /// More names than fit: fall back to scanning the headers.
    overflow: bool,
}

impl<'a> Listed<'a> {
    /// `any`: the parser saw a listed name (`connection_names`); without one, nothing to gather.
    fn new(raw: &'a [u8], headers: &'a [HeaderSpan], any: bool) -> Self {
        let mut listed = Listed {
            raw,
            headers,
            names: [&[]; 4],
            len: 0,
            overflow: false,
        };
        if !any {
            return listed;
        }
        for name in connection_tokens(raw, headers).filter(|t| !is_hop_by_hop(t)) {
            match listed.names.get_mut(listed.len) {
                Some(slot) => (*slot, listed.len) = (name, listed.len + 1),
                None => listed.overflow = true,
            }
        }
        listed
    }

    fn contains(&self, name: &[u8]) -> bool {
        if self.overflow {
            return connection_tokens(self.raw, self.headers).any(|t| t.eq_ignore_ascii_case(name));
        }
        self.names[..self.len]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}

fn connection_tokens<'a>(
    raw: &'a [u8],
    headers: &'a [HeaderSpan],
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| raw[n.clone()].eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| list_items(&raw[v.clone()]))
}

/// Whether a header is dropped on the way through.
fn skip(name: &[u8], listed: &Listed) -> bool {
    is_hop_by_hop(name) || listed.contains(name)
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
    let listed = Listed::new(raw, &head.headers, head.connection_names);
    for (n, v) in &head.headers {
        let name = &raw[n.clone()];
        if skip(name, &listed)
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
    let listed = Listed::new(raw, &head.headers, head.connection_names);
    for (n, v) in &head.headers {
        let name = &raw[n.clone()];
        if skip(name, &listed) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http1::head::parse_request;

    fn forwarded(raw: &[u8]) -> String {
        let mut head = RequestHead::default();
        parse_request(raw, 64, &mut head).unwrap().unwrap();
        let mut out = Vec::new();
        request_head(&mut out, &head, raw, "10.0.0.1", "id");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn names_listed_in_connection_are_dropped_however_many() {
        let few = forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-A\r\nx-a: 1\r\nx-b: 2\r\n\r\n",
        );
        assert!(!few.contains("x-a") && few.contains("x-b: 2"), "{few}");
        let many = forwarded(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-1, x-2, x-3\r\nconnection: x-4,, x-5\r\n\
              x-1: a\r\nx-3: a\r\nx-5: a\r\nx-6: kept\r\nupgrade: h2c\r\n\r\n",
        );
        for gone in ["x-1", "x-3", "x-5", "upgrade", "onnection"] {
            assert!(!many.contains(gone), "{gone} in {many}");
        }
        assert!(many.contains("x-6: kept"), "{many}");
    }
}
