//! The Envoy format-string parser: `%OPERATOR%`, `%REQ(A?B):N%`, literals between.
//!
//! Owns: the compiled form of a format (`Piece`s of literals and `Op`s), the operators
//! and headers egressd supports, and `FormatError`, which the config loader reports.
//! Must not: render records (that is `log_format`); it runs once, at config load.

/// A format string the config loader must refuse; the fault is in the config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("access log format: unknown operator %{op}% at byte {pos}")]
    UnknownOperator { op: String, pos: usize },
    #[error("access log format: header {header:?} at byte {pos} is not one egressd carries (supported: :METHOD, :PATH, X-ENVOY-ORIGINAL-PATH, :AUTHORITY, HOST, X-FORWARDED-FOR, USER-AGENT, X-REQUEST-ID; RESP: X-ENVOY-UPSTREAM-SERVICE-TIME)")]
    UnsupportedHeader { header: String, pos: usize },
    #[error("access log format: %{op}% at byte {pos} takes no argument")]
    UnexpectedArgument { op: String, pos: usize },
    #[error("access log format: %{op}% at byte {pos} needs an argument, e.g. %{op}(...)%")]
    MissingArgument { op: String, pos: usize },
    #[error("access log format: malformed operator at byte {pos}: {reason}")]
    Malformed { pos: usize, reason: &'static str },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReqHeader {
    Method,
    Path,
    /// Set only when a proxy rewrote the path; egressd never does, so always absent.
    OriginalPath,
    Authority,
    XForwardedFor,
    UserAgent,
    RequestId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    StartTime,
    Req(ReqHeader, Option<ReqHeader>),
    RespUpstreamServiceTime,
    Protocol,
    ResponseCode,
    ResponseFlags,
    /// egressd has no dynamic metadata: always absent (Istio 1.3's mixer field is `"-"`).
    DynamicMetadata,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RequestedServerName,
    RouteName,
    DownstreamPeerUriSan,
    DownstreamPeerSubject,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Literal(String),
    Op { op: Op, max_len: Option<usize> },
}
/// Parses a whole format string into pieces.
pub(crate) fn parse(s: &str) -> Result<Vec<Piece>, FormatError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    let mut base = 0;
    while let Some(off) = rest.find('%') {
        if off > 0 {
            pieces.push(Piece::Literal(rest[..off].to_string()));
        }
        let pos = base + off;
        let (piece, used) = parse_operator(&rest[off + 1..], pos)?;
        pieces.push(piece);
        let consumed = off + 1 + used;
        rest = &rest[consumed..];
        base += consumed;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_string()));
    }
    Ok(pieces)
}

/// Parses `NAME[(ARG)][:N]%` (the text after the opening `%`); returns the piece and the
/// number of bytes used, closing `%` included.
fn parse_operator(s: &str, pos: usize) -> Result<(Piece, usize), FormatError> {
    let name_len = s
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    if name_len == 0 {
        return Err(FormatError::Malformed {
            pos,
            reason: "'%' must start an operator such as %START_TIME%",
        });
    }
    let name = &s[..name_len];
    let mut i = name_len;
    let mut arg = None;
    if s[i..].starts_with('(') {
        let close = s[i..].find(')').ok_or(FormatError::Malformed {
            pos,
            reason: "'(' without ')'",
        })?;
        arg = Some(&s[i + 1..i + close]);
        i += close + 1;
    }
    let mut max_len = None;
    if s[i..].starts_with(':') {
        let digits = s[i + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.len() - i - 1);
        let n = s[i + 1..i + 1 + digits]
            .parse()
            .map_err(|_| FormatError::Malformed {
                pos,
                reason: "':' must be followed by a maximum length",
            })?;
        max_len = Some(n);
        i += 1 + digits;
    }
    if !s[i..].starts_with('%') {
        return Err(FormatError::Malformed {
            pos,
            reason: "operator not closed by '%'",
        });
    }
    let op = operator(name, arg, pos)?;
    Ok((Piece::Op { op, max_len }, i + 1))
}

fn operator(name: &str, arg: Option<&str>, pos: usize) -> Result<Op, FormatError> {
    let needs_arg = matches!(name, "REQ" | "RESP" | "DYNAMIC_METADATA");
    match (needs_arg, arg) {
        (true, None) => {
            return Err(FormatError::MissingArgument {
                op: name.to_string(),
                pos,
            })
        }
        (false, Some(_)) => {
            return Err(FormatError::UnexpectedArgument {
                op: name.to_string(),
                pos,
            })
        }
        _ => {}
    }
    let arg = arg.unwrap_or("");
    Ok(match name {
        "START_TIME" => Op::StartTime,
        "REQ" => {
            let (first, second) = match arg.split_once('?') {
                Some((a, b)) => (a, Some(b)),
                None => (arg, None),
            };
            let second = second.map(|h| req_header(h, pos)).transpose()?;
            Op::Req(req_header(first, pos)?, second)
        }
        "RESP" if arg.eq_ignore_ascii_case("x-envoy-upstream-service-time") => {
            Op::RespUpstreamServiceTime
        }
        "RESP" => {
            return Err(FormatError::UnsupportedHeader {
                header: arg.to_string(),
                pos,
            })
        }
        "PROTOCOL" => Op::Protocol,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "DYNAMIC_METADATA" => Op::DynamicMetadata,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocalAddressWithoutPort,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        "ROUTE_NAME" => Op::RouteName,
        "DOWNSTREAM_PEER_URI_SAN" => Op::DownstreamPeerUriSan,
        "DOWNSTREAM_PEER_SUBJECT" => Op::DownstreamPeerSubject,
        _ => {
            return Err(FormatError::UnknownOperator {
                op: name.to_string(),
                pos,
            })
        }
    })
}

fn req_header(h: &str, pos: usize) -> Result<ReqHeader, FormatError> {
    Ok(match h.to_ascii_lowercase().as_str() {
        ":method" => ReqHeader::Method,
        ":path" => ReqHeader::Path,
        "x-envoy-original-path" => ReqHeader::OriginalPath,
        ":authority" | "host" => ReqHeader::Authority,
        "x-forwarded-for" => ReqHeader::XForwardedFor,
        "user-agent" => ReqHeader::UserAgent,
        "x-request-id" => ReqHeader::RequestId,
        _ => {
            return Err(FormatError::UnsupportedHeader {
                header: h.to_string(),
                pos,
            })
        }
    })
}
