//! SNI from a TLS ClientHello, reassembled across TLS records.
//!
//! Owns the pure parser: bytes in, a [`Peek`] verdict out. It never reads a
//! socket, never allocates when the hello sits in one record, never panics on
//! any input, and never modifies the bytes: the caller forwards them upstream
//! unchanged (passthrough replay). The socket side is `detect::peek`.
//!
//! Real hellos can be split anywhere: across TCP segments (the caller just
//! calls again with more bytes) and across TLS records (a handshake message
//! may span several records; 1.8 KB post-quantum hellos are routinely split by
//! middleboxes and some clients), so the handshake body is collected from
//! consecutive handshake records before tls-parser sees it.

use std::borrow::Cow;
use std::net::IpAddr;

use tls_parser::{
    parse_tls_extension_sni_content, parse_tls_message_handshake, SNIType, TlsExtension,
    TlsMessage, TlsMessageHandshake,
};

/// Default bound on the bytes buffered while looking for the hello.
pub const DEFAULT_PEEK_CAP: usize = 16 * 1024;

const RECORD_HEADER: usize = 5;
/// TLSPlaintext.length must not exceed 2^14 (RFC 8446 §5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const HANDSHAKE_HEADER: usize = 4;
const EXT_SERVER_NAME: u16 = 0;

/// The verdict on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// A complete ClientHello naming this host: lower-case, no trailing dot.
    Sni(String),
    /// A complete, well-formed ClientHello without a server_name extension.
    NoSni,
    /// The first bytes are not a TLS handshake record (plain HTTP, SSLv2...).
    NotTls,
    /// More bytes are needed.
    Incomplete,
    /// No complete hello fits in the cap.
    TooLarge,
    /// TLS framing, but malformed or with an unusable name; says why.
    Invalid(&'static str),
}

impl Peek {
    /// Short reason for logs and close counters when this verdict cannot be
    /// routed by SNI; `None` for `Sni` and `Incomplete`.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Peek::Sni(_) | Peek::Incomplete => None,
            Peek::NoSni => Some("no sni"),
            Peek::NotTls => Some("not tls"),
            Peek::TooLarge => Some("client hello too large"),
            Peek::Invalid(why) => Some(why),
        }
    }
}

/// Looks for a complete ClientHello in `buf` (only its first `cap` bytes) and
/// returns its SNI. Call again with more bytes while it answers `Incomplete`.
pub fn client_hello_sni(buf: &[u8], cap: usize) -> Peek {
    let view = &buf[..buf.len().min(cap)];
    let short = || {
        if view.len() >= cap {
            Peek::TooLarge
        } else {
            Peek::Incomplete
        }
    };

    // The handshake bytes collected so far: borrowed while they come from the
    // first record only, copied once a second record is needed.
    let mut hs: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut pos = 0;
    loop {
        let rest = &view[pos..];
        let Some(&content_type) = rest.first() else {
            return short();
        };
        if content_type != CONTENT_TYPE_HANDSHAKE {
            return if pos == 0 {
                Peek::NotTls
            } else {
                Peek::Invalid("unexpected record type")
            };
        }
        if let Some(&major) = rest.get(1) {
            if major != 3 {
                return if pos == 0 {
                    Peek::NotTls
                } else {
                    Peek::Invalid("bad record version")
                };
            }
        }
        if rest.len() < RECORD_HEADER {
            return short();
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Peek::Invalid("empty handshake record");
        }
        if len > MAX_RECORD_PAYLOAD {
            return Peek::Invalid("record too long");
        }
        let end = (RECORD_HEADER + len).min(rest.len());
        let fragment = &rest[RECORD_HEADER..end];
        if hs.is_empty() {
            hs = Cow::Borrowed(fragment);
        } else {
            hs.to_mut().extend_from_slice(fragment);
        }

        if let Some(&ht) = hs.first() {
            if ht != HANDSHAKE_CLIENT_HELLO {
                return Peek::Invalid("not a client hello");
            }
        }
        if hs.len() >= HANDSHAKE_HEADER {
            let body = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
            let need = HANDSHAKE_HEADER + body;
            // Fewest bytes on the wire that could carry it: one header per
            // full-size record. Beyond the cap, waiting is pointless.
            let records = need.div_ceil(MAX_RECORD_PAYLOAD);
            if need + records * RECORD_HEADER > cap {
                return Peek::TooLarge;
            }
            if hs.len() >= need {
                return parse_hello(&hs[..need]);
            }
        }
        if end < RECORD_HEADER + len {
            return short();
        }
        pos += RECORD_HEADER + len;
    }
}

/// Parses one complete handshake message known to be a ClientHello.
fn parse_hello(msg: &[u8]) -> Peek {
    let ext = match parse_tls_message_handshake(msg) {
        Ok(([], TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) => hello.ext,
        _ => return Peek::Invalid("malformed client hello"),
    };
    match ext {
        None => Peek::NoSni,
        Some(ext) => find_sni(ext),
    }
}

/// Walks the extension list as plain type/length/value records, so that an
/// extension tls-parser does not know (GREASE, ECH, future ones) cannot make
/// the hello unroutable; only server_name's body goes to tls-parser.
fn find_sni(mut ext: &[u8]) -> Peek {
    let mut found: Option<&[u8]> = None;
    while !ext.is_empty() {
        if ext.len() < 4 {
            return Peek::Invalid("malformed extensions");
        }
        let ty = u16::from_be_bytes([ext[0], ext[1]]);
        let len = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        let Some(body) = ext.get(4..4 + len) else {
            return Peek::Invalid("malformed extensions");
        };
        if ty == EXT_SERVER_NAME {
            if found.is_some() {
                return Peek::Invalid("duplicate server_name");
            }
            found = Some(body);
        }
        ext = &ext[4 + len..];
    }
    match found {
        None => Peek::NoSni,
        Some(body) => server_name(body),
    }
}

fn server_name(body: &[u8]) -> Peek {
    let names = match parse_tls_extension_sni_content(body) {
        Ok(([], TlsExtension::SNI(names))) => names,
        _ => return Peek::Invalid("malformed server_name"),
    };
    // tls-parser stops quietly at a malformed entry: make sure every byte of
    // the list was accounted for (2-byte list length, 3 bytes per entry).
    let listed: usize = names.iter().map(|(_, n)| 3 + n.len()).sum();
    if names.is_empty() || 2 + listed != body.len() {
        return Peek::Invalid("malformed server_name");
    }
    let mut hosts = names.iter().filter(|(ty, _)| *ty == SNIType::HostName);
    match (hosts.next(), hosts.next()) {
        (Some((_, name)), None) => match normalize_host(name) {
            Ok(host) => Peek::Sni(host),
            Err(why) => Peek::Invalid(why),
        },
        (None, _) => Peek::NoSni,
        (Some(_), Some(_)) => Peek::Invalid("multiple server names"),
    }
}

/// Validates an SNI host name (RFC 6066 §3: a DNS name, never an IP literal)
/// and returns it lower-cased without a trailing dot.
pub fn normalize_host(raw: &[u8]) -> Result<String, &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "invalid name")?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.parse::<IpAddr>().is_ok() {
        return Err("ip literal");
    }
    if name.is_empty() || name.len() > 253 {
        return Err("invalid name");
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let ok_chars = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if bytes.is_empty() || bytes.len() > 63 || !ok_chars {
            return Err("invalid name");
        }
        if bytes.first() == Some(&b'-') || bytes.last() == Some(&b'-') {
            return Err("invalid name");
        }
    }
    // An all-digit last label ("10.1", "127.0.0.1.") is what inet_aton would
    // read as an address: no TLD is numeric, so call it what it is.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("ip literal");
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
