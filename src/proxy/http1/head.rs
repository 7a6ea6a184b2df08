//! HTTP/1.1 message heads: parsing with httparse, deciding framing and rejecting what a
//! proxy must not pass on. Headers stay in the read buffer as byte ranges (no per-header
//! allocation); `forward.rs` re-serialises them from there. The gateway decides framing;
//! httparse only tokenises.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::strict;
use crate::error::ProxyError;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    #[default]
    None,
    Length(u64),
    Chunked,
    /// Response only: the body runs until the upstream closes.
    UntilClose,
}

/// A header as two byte ranges into the buffer the head was parsed from.
pub type HeaderSpan = (Range<usize>, Range<usize>);

/// What the proxy keeps of a request head. Header ranges index the parse buffer, which must
/// stay unconsumed until the head has been forwarded.
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: String,
    /// Origin-form path (absolute-form is reduced to it).
    pub path: String,
    /// 0 = HTTP/1.0, 1 = HTTP/1.1.
    pub minor: u8,
    /// Host header, or the authority of an absolute-form target.
    pub authority: String,
    pub user_agent: Option<String>,
    pub forwarded_for: Option<String>,
    pub request_id: Option<String>,
    pub framing: Framing,
    pub expect_continue: bool,
    /// The client asked to close after this exchange (or is HTTP/1.0 without keep-alive).
    pub close: bool,
    /// A `Connection` header names headers to drop beyond the hop-by-hop ones.
    pub connection_names: bool,
    pub headers: Vec<HeaderSpan>,
}

/// What the proxy keeps of a response head (ranges into the upstream read buffer).
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub minor: u8,
    pub reason: Range<usize>,
    pub framing: Framing,
    /// The upstream will close after this response.
    pub close: bool,
    /// A `Connection` header names headers to drop beyond the hop-by-hop ones.
    pub connection_names: bool,
    pub headers: Vec<HeaderSpan>,
}

/// Result of trying to parse a head from buffered bytes.
pub enum Parsed<T> {
    /// The head and its length in bytes.
    Complete(T, usize),
    Partial,
}

/// Headers a proxy never forwards (RFC 9110 §7.6.1, plus the legacy ones Envoy drops).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // By length first: every forwarded header is checked, and most match none of these.
    let candidates: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"upgrade", b"trailer"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        _ => return false,
    };
    candidates.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Finds a header value by case-insensitive name.
pub fn find_header<'b>(buf: &'b [u8], headers: &[HeaderSpan], name: &str) -> Option<&'b str> {
    headers
        .iter()
        .find(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
        .and_then(|(_, v)| std::str::from_utf8(&buf[v.clone()]).ok())
}

fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Parses a request head from `buf`. More than `max_headers` headers is a 431.
pub fn parse_request(
    buf: &[u8],
    max_headers: usize,
    head: &mut RequestHead,
) -> Result<Option<usize>, ProxyError> {
    // Uninitialised slots: initialising 256 headers (8 KiB) per request showed in callgrind.
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut storage[..max_headers.clamp(1, 256)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::HeaderTooLarge),
        // Includes any version but HTTP/1.0 and HTTP/1.1 (`HTTP/2.0` too): 400, not 505.
        Err(_) => return Err(ProxyError::BadRequest("malformed request head")),
    };
    // httparse tolerates bare LF and some control bytes: the gateway does not.
    strict::check_raw_head(&buf[..len])?;
    strict::check_method(req.method.unwrap_or_default())?;
    let minor = req.version.unwrap_or(1);
    // The strings keep their capacity from the connection's previous request (see
    // `log::give_back`): no allocation per keep-alive request.
    let mut method = std::mem::take(&mut head.method);
    let mut path = std::mem::take(&mut head.path);
    let mut authority = std::mem::take(&mut head.authority);
    assign(&mut method, req.method.unwrap_or_default());
    *head = RequestHead {
        method,
        minor,
        close: minor == 0,
        headers: std::mem::take(&mut head.headers),
        ..Default::default()
    };
    head.headers.clear();
    head.headers.reserve(req.headers.len());
    let mut host: Option<&str> = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ProxyError::BadRequest("non-UTF-8 header value"))?;
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.replace(value).is_some() {
                return Err(ProxyError::BadRequest("duplicate host"));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value).ok_or(ProxyError::BadRequest("bad content-length"))?;
            // Even identical duplicates: a strict gateway leaves no room for two readings.
            if content_length.replace(n).is_some() {
                return Err(ProxyError::BadRequest("duplicate content-length"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !strict::is_plain_chunked(value) {
                return Err(ProxyError::BadRequest("unsupported transfer-encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let options = ConnectionOptions::of(h.value);
            // A proxy drops the headers Connection names; dropping these would change how
            // the upstream frames or routes what the gateway forwards (smuggling).
            if options.names_framing {
                return Err(ProxyError::BadRequest("connection names a framing header"));
            }
            head.close = options.closes(minor);
            head.connection_names |= options.names_headers;
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("user-agent") {
            // The first, as Envoy's %REQ(USER-AGENT)% prints.
            if head.user_agent.is_none() {
                head.user_agent = Some(value.to_string());
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            head.forwarded_for = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("x-request-id") {
            head.request_id = Some(value.to_string());
        }
        head.headers
            .push((span(buf, name.as_bytes()), span(buf, h.value)));
    }
    head.framing = match (content_length, chunked) {
        (Some(_), true) => {
            return Err(ProxyError::BadRequest(
                "both content-length and transfer-encoding",
            ))
        }
        (Some(0), false) | (None, false) => Framing::None,
        (Some(n), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
    };
    let target = req.path.unwrap_or_default();
    let (target_path, uri_authority) = if head.method == "CONNECT" {
        // Authority-form (RFC 9112 §3.2.3): host and port, nothing else.
        if target.contains(['/', '@', '?', '#'])
            || crate::route::host::authority_port(target).is_none()
        {
            return Err(ProxyError::BadRequest("invalid CONNECT target"));
        }
        ("", Some(target))
    } else {
        split_target(target)?
    };
    assign(&mut path, target_path);
    head.path = path;
    let host = match (host, uri_authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            return Err(ProxyError::BadRequest(
                "absolute-form host differs from host header",
            ))
        }
        (Some(h), _) => h,
        (None, Some(a)) => a,
        (None, None) => return Err(ProxyError::BadRequest("missing host")),
    };
    assign(&mut authority, host);
    head.authority = authority;
    Ok(Some(len))
}

/// `s = v`, in the capacity `s` already has.
fn assign(s: &mut String, v: &str) {
    s.clear();
    s.push_str(v);
}

/// Parses a response head. `head_request` and the status decide whether a body follows.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<usize>, ProxyError> {
    // Nothing read yet (the first look, before any read): not worth a parser's setup.
    if buf.is_empty() {
        return Ok(None);
    }
    // Envoy's upstream limit is 100 headers too. Uninitialised, as for requests: zeroing
    // 3.2 KiB per response was most of this function's cost.
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ProxyError::BadResponse("malformed response head")),
    };
    let minor = resp.version.unwrap_or(1);
    let status = resp.code.unwrap_or(0);
    *head = ResponseHead {
        status,
        minor,
        reason: span(buf, resp.reason.unwrap_or_default().as_bytes()),
        close: minor == 0,
        headers: std::mem::take(&mut head.headers),
        ..Default::default()
    };
    head.headers.clear();
    head.headers.reserve(resp.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(parse_length);
            let n = v.ok_or(ProxyError::BadResponse("bad content-length"))?;
            if content_length.replace(n).is_some_and(|old| old != n) {
                return Err(ProxyError::BadResponse("conflicting content-length"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only chunked may be last; anything else is delimited by close (RFC 9112 §6.3).
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
            if !chunked {
                head.close = true;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let options = ConnectionOptions::of(h.value);
            head.close = options.closes(minor) || head.close;
            head.connection_names |= options.names_headers;
        }
        head.headers
            .push((span(buf, name.as_bytes()), span(buf, h.value)));
    }
    head.framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        if n == 0 {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else {
        head.close = true;
        Framing::UntilClose
    };
    Ok(Some(len))
}

/// The non-empty items of a comma-separated header value, without their whitespace.
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// What one `Connection` value says, read in one pass over its items. Items are compared
/// after trimming ASCII whitespace only: HTTP's whitespace is spaces and tabs, so `close`
/// followed by a no-break space is some other option, not `close`.
#[derive(Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    /// It lists a header that is not hop-by-hop anyway: only then does serialisation look
    /// for the headers it lists.
    names_headers: bool,
    /// It lists `Content-Length` or `Host`, which a request may not have dropped.
    names_framing: bool,
}

impl ConnectionOptions {
    fn of(value: &[u8]) -> Self {
        // What nearly every response says, answered without splitting (callgrind: a
        // response's `keep-alive` cost 436 instructions through the loop below).
        if value.eq_ignore_ascii_case(b"keep-alive") {
            return ConnectionOptions {
                keep_alive: true,
                ..Default::default()
            };
        }
        let mut options = ConnectionOptions::default();
        for item in list_items(value) {
            options.close |= item.eq_ignore_ascii_case(b"close");
            options.keep_alive |= item.eq_ignore_ascii_case(b"keep-alive");
            options.names_framing |=
                item.eq_ignore_ascii_case(b"content-length") || item.eq_ignore_ascii_case(b"host");
            options.names_headers |= !is_hop_by_hop(item);
        }
        options
    }

    /// Whether the connection ends after this message: on `close`, and in HTTP/1.0
    /// unless `keep-alive` is listed.
    fn closes(&self, minor: u8) -> bool {
        self.close || (minor == 0 && !self.keep_alive)
    }
}

/// Splits a request target into origin-form path and, for absolute-form, its authority.
fn split_target(target: &str) -> Result<(&str, Option<&str>), ProxyError> {
    if target.starts_with('/') || target == "*" {
        return Ok((target, None));
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .ok_or(ProxyError::BadRequest("invalid request target"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(_) => return Err(ProxyError::BadRequest("invalid request target")),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(ProxyError::BadRequest("invalid request target"));
    }
    Ok((path, Some(authority)))
}

/// A decimal length: digits only (no sign, no inner whitespace), no overflow.
pub fn parse_length(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<RequestHead, ProxyError> {
        let mut head = RequestHead::default();
        parse_request(raw.as_bytes(), 100, &mut head).map(|n| {
            assert!(n.is_some());
            head
        })
    }

    #[test]
    fn parses_framing_and_keeps_header_spans() {
        let raw =
            "POST /a HTTP/1.1\r\nHost: X.com\r\nContent-Length: 5\r\nUser-Agent: t\r\n\r\nhello";
        let head = parse(raw).unwrap();
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(head.authority, "X.com");
        assert_eq!(
            find_header(raw.as_bytes(), &head.headers, "user-agent"),
            Some("t")
        );
    }

    #[test]
    fn rejects_ambiguous_framing() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: x, Content-Length\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(ProxyError::BadRequest(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let head = parse("GET http://a.com/x?y HTTP/1.1\r\nHost: a.com\r\n\r\n").unwrap();
        assert_eq!(head.path, "/x?y");
        assert_eq!(head.authority, "a.com");
    }

    #[test]
    fn response_framing() {
        let mut head = ResponseHead::default();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert!(parse_response(raw, false, &mut head).unwrap().is_some());
        assert_eq!(head.framing, Framing::Length(3));
        assert!(parse_response(raw, true, &mut head).unwrap().is_some());
        assert_eq!(head.framing, Framing::None);
        let raw = b"HTTP/1.0 200 OK\r\n\r\n";
        assert!(parse_response(raw, false, &mut head).unwrap().is_some());
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(head.close);
    }

    /// Whether a response with this `Connection` value ends its connection.
    fn response_closes(version: &str, connection: &[u8]) -> bool {
        let mut raw =
            format!("HTTP/1.{version} 200 OK\r\nContent-Length: 0\r\nConnection: ").into_bytes();
        raw.extend_from_slice(connection);
        raw.extend_from_slice(b"\r\n\r\n");
        let mut head = ResponseHead::default();
        assert!(parse_response(&raw, false, &mut head).unwrap().is_some());
        head.close
    }

    #[test]
    fn connection_items_are_trimmed_of_http_whitespace_only() {
        assert!(response_closes("1", b"close"));
        assert!(response_closes("1", b"keep-alive ,\t Close\t"));
        assert!(!response_closes("1", b"keep-alive"));
        // An HTTP/1.0 upstream connection is not reused, whatever it lists; a client's is
        // when it asks for keep-alive.
        assert!(response_closes("0", b"Keep-Alive"));
        let request = |connection: &str| {
            parse(&format!(
                "GET / HTTP/1.0\r\nHost: a\r\nConnection: {connection}\r\n\r\n"
            ))
            .unwrap()
            .close
        };
        assert!(!request("Keep-Alive"));
        assert!(request("x-option"));
        assert!(request("keep-alive, close"));
        // A no-break space is not HTTP whitespace: `close` followed by one is another option.
        assert!(!response_closes("1", "close\u{a0}".as_bytes()));
        // An item that is not UTF-8 does not hide a `close` beside it.
        assert!(response_closes("1", b"close, \xff"));
        // The same splitting decides which requests name a framing header.
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: a,\tHOST \r\n\r\n").is_err());
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: hosts\r\n\r\n").is_ok());
    }
}
