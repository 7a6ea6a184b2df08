//! HTTP/1.1 response framing for the load generator: where one response ends in a buffer.
//!
//! Owns: head parsing (httparse), Content-Length and chunked framing, `Connection: close`.
//! Must not: allocate (it runs once per response on the hot path) or do I/O.

/// What a buffer holds so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// More bytes are needed.
    Incomplete,
    /// One full response of `len` bytes starts the buffer.
    Complete {
        status: u16,
        len: usize,
        close: bool,
    },
    /// The peer sent something the load generator cannot frame; the connection is dropped.
    Invalid(&'static str),
}

pub fn parse_response(buf: &[u8]) -> Framing {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Framing::Incomplete,
        Err(_) => return Framing::Invalid("malformed response head"),
    };
    let status = resp.code.unwrap_or(0);
    let mut close = resp.version == Some(0);
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => content_length = Some(n),
                None => return Framing::Invalid("bad content-length"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = ends_with_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            if contains_token(h.value, b"close") {
                close = true;
            } else if contains_token(h.value, b"keep-alive") {
                close = false;
            }
        }
    }
    let body_end = if (100..200).contains(&status) || status == 204 || status == 304 {
        Some(head_len)
    } else if chunked {
        match chunked_end(buf, head_len) {
            Ok(end) => end,
            Err(why) => return Framing::Invalid(why),
        }
    } else if let Some(n) = content_length {
        head_len.checked_add(n).filter(|end| *end <= buf.len())
    } else {
        return Framing::Invalid("response without content-length or chunked framing");
    };
    match body_end {
        Some(len) => Framing::Complete { status, len, close },
        None => Framing::Incomplete,
    }
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn ends_with_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// End of a chunked body starting at `pos`: Ok(Some(end)), Ok(None) when incomplete.
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<Option<usize>, &'static str> {
    loop {
        let Some(line_end) = find_crlf(buf, pos) else {
            return Ok(None);
        };
        let size_field = buf[pos..line_end]
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(size_field)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or("bad chunk size")?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, then the empty line that ends the message.
            loop {
                let Some(end) = find_crlf(buf, pos) else {
                    return Ok(None);
                };
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok(Some(pos));
                }
            }
        }
        let data_end = pos.checked_add(size).ok_or("chunk size overflow")?;
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF");
        }
        pos = data_end + 2;
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response_is_framed_exactly() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse_response(r),
            Framing::Complete {
                status: 200,
                len: r.len(),
                close: false
            }
        );
        assert_eq!(parse_response(&r[..r.len() - 1]), Framing::Incomplete);
        assert_eq!(parse_response(&r[..10]), Framing::Incomplete);
    }

    #[test]
    fn chunked_response_with_trailer_is_framed() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(
            parse_response(r),
            Framing::Complete {
                status: 200,
                len: r.len(),
                close: false
            }
        );
        for cut in 40..r.len() {
            assert_eq!(
                parse_response(&r[..cut]),
                Framing::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn connection_close_and_http10_are_reported() {
        let r = b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(r),
            Framing::Complete {
                status: 502,
                len: r.len(),
                close: true
            }
        );
        let r = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_response(r),
            Framing::Complete { close: true, .. }
        ));
    }

    #[test]
    fn unframeable_responses_are_invalid() {
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody"),
            Framing::Invalid(_)
        ));
        assert!(matches!(
            parse_response(b"garbage\r\n\r\n"),
            Framing::Invalid(_)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Framing::Invalid(_)
        ));
    }
}
