//! Byte-level checks on a request head that httparse is lenient about: bare LF or bare CR
//! line endings, obs-fold continuation lines, control bytes, and methods that are not
//! tokens. A gateway that re-serialises heads must refuse whatever two parsers could read
//! differently (request smuggling), so these run on the raw bytes before anything is
//! routed. Pure functions over the head bytes; no allocation, no I/O.

use crate::error::ProxyError;

/// Checks the raw head `raw` (request line through the empty line, exactly as received).
/// Every line must end in CRLF, no line may start with SP/HTAB (obs-fold, RFC 9112 §5.2),
/// and no byte may be a control character other than HTAB inside a line.
pub fn check_raw_head(raw: &[u8]) -> Result<(), ProxyError> {
    let mut line_start = true;
    let mut first_line = true;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'\r' => {
                if raw.get(i + 1) != Some(&b'\n') {
                    return Err(ProxyError::BadRequest("bare CR in request head"));
                }
                i += 2;
                line_start = true;
                first_line = false;
                continue;
            }
            b'\n' => return Err(ProxyError::BadRequest("bare LF in request head")),
            b' ' | b'\t' if line_start && !first_line => {
                return Err(ProxyError::BadRequest("obs-fold in request head"))
            }
            b'\t' => {}
            0..=0x1f | 0x7f => return Err(ProxyError::BadRequest("control byte in request head")),
            _ => {}
        }
        line_start = false;
        i += 1;
    }
    Ok(())
}

/// A method is a token (RFC 9110 §9.1); httparse already insists on that, this is the
/// gateway's own statement of the rule so that a parser upgrade cannot loosen it.
pub fn check_method(method: &str) -> Result<(), ProxyError> {
    if !method.is_empty() && method.bytes().all(is_tchar) {
        Ok(())
    } else {
        Err(ProxyError::BadRequest("invalid method"))
    }
}

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A `Transfer-Encoding` value the gateway accepts: exactly the coding `chunked`
/// (case-insensitive per RFC 9110 §10.1.4, optional whitespace around it already trimmed).
/// Lists (`gzip, chunked`, `chunked, chunked`), other codings and look-alikes are refused:
/// the gateway only forwards bodies it can frame itself, and re-serialises the header as
/// `transfer-encoding: chunked`.
pub fn is_plain_chunked(value: &str) -> bool {
    value
        .trim_matches([' ', '\t'])
        .eq_ignore_ascii_case("chunked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_clean_head() {
        assert!(check_raw_head(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n").is_ok());
    }

    #[test]
    fn refuses_line_ending_and_byte_tricks() {
        for raw in [
            &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n X: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\tX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\x01: a\r\nHost: a\r\n\r\n",
        ] {
            assert!(
                check_raw_head(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn methods_and_codings() {
        assert!(check_method("GET").is_ok());
        assert!(check_method("M-SEARCH").is_ok());
        for bad in ["", "GET\0", "G(T", "GÉT", "G T"] {
            assert!(check_method(bad).is_err(), "{bad:?}");
        }
        for ok in ["chunked", "Chunked", "CHUNKED", "chunked ", "\tchunked"] {
            assert!(is_plain_chunked(ok), "{ok:?}");
        }
        for bad in [
            "xchunked",
            "chunked, chunked",
            "gzip, chunked",
            "chunked;q=1",
            "",
        ] {
            assert!(!is_plain_chunked(bad), "{bad:?}");
        }
    }
}
