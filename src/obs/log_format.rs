//! Access-log formats: Envoy format strings compiled once, and Istio's JSON encoding.
//!
//! Owns: the parser for Envoy format strings (`compile_format`) into literal/operator
//! pieces, the `istio` format (Istio 1.3's default string, compiled by the same parser so
//! there is one formatter), the `json` format (Istio's keys), and rendering a record.
//! Must not: do I/O or run on a shard: rendering happens on the log writer thread.
//! Rendering allocates nothing: values are written straight into the caller's buffer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::config::model::AccessLogFormat;
use crate::obs::access_log::{AccessRecord, ResponseFlags, PROTOCOL_NONE};

/// Istio 1.3's default text format (DESIGN.md, "Names that users grep for").
pub const ISTIO_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \"%DYNAMIC_METADATA(istio.mixer:status)%\" \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

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
enum ReqHeader {
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
enum Op {
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
enum Piece {
    Literal(String),
    Op { op: Op, max_len: Option<usize> },
}

/// A compiled access-log format. Cheap to clone; render with `render`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Text(Vec<Piece>),
    Json,
}

/// Istio's JSON access-log keys, sorted as Envoy prints a JSON format, plus egressd's peer
/// identity keys.
const JSON_KEYS: [(&str, Op); 24] = [
    ("authority", Op::Req(ReqHeader::Authority, None)),
    ("bytes_received", Op::BytesReceived),
    ("bytes_sent", Op::BytesSent),
    ("downstream_local_address", Op::DownstreamLocalAddress),
    ("downstream_peer_subject", Op::DownstreamPeerSubject),
    ("downstream_peer_uri_san", Op::DownstreamPeerUriSan),
    ("downstream_remote_address", Op::DownstreamRemoteAddress),
    ("duration", Op::Duration),
    ("method", Op::Req(ReqHeader::Method, None)),
    (
        "path",
        Op::Req(ReqHeader::OriginalPath, Some(ReqHeader::Path)),
    ),
    ("protocol", Op::Protocol),
    ("request_id", Op::Req(ReqHeader::RequestId, None)),
    ("requested_server_name", Op::RequestedServerName),
    ("response_code", Op::ResponseCode),
    ("response_flags", Op::ResponseFlags),
    ("route_name", Op::RouteName),
    ("start_time", Op::StartTime),
    ("upstream_cluster", Op::UpstreamCluster),
    ("upstream_host", Op::UpstreamHost),
    ("upstream_local_address", Op::UpstreamLocalAddress),
    ("upstream_service_time", Op::RespUpstreamServiceTime),
    (
        "upstream_transport_failure_reason",
        Op::UpstreamTransportFailureReason,
    ),
    ("user_agent", Op::Req(ReqHeader::UserAgent, None)),
    ("x_forwarded_for", Op::Req(ReqHeader::XForwardedFor, None)),
];

/// One operator's value, borrowed from the record; formatted only when written.
enum Val<'a> {
    Str(&'a str),
    Num(u64),
    /// A number that Envoy reads from a header: a string in JSON.
    HeaderNum(u64),
    Addr(SocketAddr),
    Ip(SocketAddr),
    Time(SystemTime),
    Flags(ResponseFlags),
    Null,
}

impl LogFormat {
    /// The `istio` format: `ISTIO_FORMAT` compiled by the same parser as custom strings.
    pub fn istio() -> Self {
        // ISTIO_FORMAT is a constant covered by tests; it cannot fail to compile.
        compile_format(ISTIO_FORMAT).expect("ISTIO_FORMAT compiles")
    }

    /// The `json` format: one object per line with Istio's keys.
    pub fn json() -> Self {
        LogFormat { kind: Kind::Json }
    }

    /// The format the config's `accessLog.format` names.
    pub fn from_config(format: &AccessLogFormat) -> Result<Self, FormatError> {
        match format {
            AccessLogFormat::Istio => Ok(Self::istio()),
            AccessLogFormat::Json => Ok(Self::json()),
            AccessLogFormat::Custom(s) => compile_format(s),
        }
    }

    /// Appends one line (ending in `\n`) for `rec` to `out`. A custom format that does not
    /// end in a newline gets one, so a record is always exactly one line.
    pub fn render(&self, rec: &AccessRecord, out: &mut String) {
        match &self.kind {
            Kind::Text(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Literal(s) => out.push_str(s),
                        Piece::Op { op, max_len } => {
                            let start = out.len();
                            write_text(eval(*op, rec), out);
                            if let Some(max) = max_len {
                                truncate_at_char(out, start + max);
                            }
                        }
                    }
                }
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Kind::Json => {
                out.push('{');
                for (i, (key, op)) in JSON_KEYS.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_str(key, out);
                    out.push(':');
                    write_json(eval(*op, rec), out);
                }
                out.push_str("}\n");
            }
        }
    }
}

/// Compiles an Envoy format string (`%OPERATOR%`, `%REQ(A?B):N%`, literals between).
pub fn compile_format(s: &str) -> Result<LogFormat, FormatError> {
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
    Ok(LogFormat {
        kind: Kind::Text(pieces),
    })
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

fn header(rec: &AccessRecord, h: ReqHeader) -> Option<&str> {
    match h {
        ReqHeader::Method => rec.method.as_deref(),
        ReqHeader::Path => rec.path.as_deref(),
        ReqHeader::OriginalPath => None,
        ReqHeader::Authority => rec.authority.as_deref(),
        ReqHeader::XForwardedFor => rec.x_forwarded_for.as_deref(),
        ReqHeader::UserAgent => rec.user_agent.as_deref(),
        ReqHeader::RequestId => rec.request_id.as_deref(),
    }
}

fn opt_str(v: &Option<String>) -> Val<'_> {
    v.as_deref().map_or(Val::Null, Val::Str)
}

fn eval(op: Op, rec: &AccessRecord) -> Val<'_> {
    match op {
        Op::StartTime => Val::Time(rec.start_time),
        Op::Req(first, second) => header(rec, first)
            .or_else(|| second.and_then(|h| header(rec, h)))
            .map_or(Val::Null, Val::Str),
        // Envoy logs the response header, whose value is whole milliseconds: a string.
        Op::RespUpstreamServiceTime => match rec.upstream_service_time {
            Some(d) => Val::HeaderNum(d.as_millis() as u64),
            None => Val::Null,
        },
        Op::Protocol if rec.protocol == PROTOCOL_NONE => Val::Null,
        Op::Protocol => Val::Str(rec.protocol),
        Op::ResponseCode => Val::Num(rec.response_code.into()),
        Op::ResponseFlags => Val::Flags(rec.response_flags),
        Op::DynamicMetadata => Val::Null,
        Op::UpstreamTransportFailureReason => opt_str(&rec.upstream_transport_failure_reason),
        Op::BytesReceived => Val::Num(rec.bytes_received),
        Op::BytesSent => Val::Num(rec.bytes_sent),
        Op::Duration => Val::Num(rec.duration.as_millis() as u64),
        Op::UpstreamHost => rec.upstream_host.map_or(Val::Null, Val::Addr),
        Op::UpstreamCluster => opt_str(&rec.upstream_cluster),
        Op::UpstreamLocalAddress => rec.upstream_local_address.map_or(Val::Null, Val::Addr),
        Op::DownstreamLocalAddress => Val::Addr(rec.downstream_local_address),
        Op::DownstreamLocalAddressWithoutPort => Val::Ip(rec.downstream_local_address),
        Op::DownstreamRemoteAddress => Val::Addr(rec.downstream_remote_address),
        Op::DownstreamRemoteAddressWithoutPort => Val::Ip(rec.downstream_remote_address),
        Op::RequestedServerName => opt_str(&rec.requested_server_name),
        Op::RouteName => opt_str(&rec.route_name),
        Op::DownstreamPeerUriSan => opt_str(&rec.downstream_peer_uri_san),
        Op::DownstreamPeerSubject => opt_str(&rec.downstream_peer_subject),
    }
}

fn write_text(v: Val<'_>, out: &mut String) {
    // `write!` into a String cannot fail.
    let _ = match v {
        Val::Str(s) => {
            out.push_str(s);
            Ok(())
        }
        Val::Num(n) | Val::HeaderNum(n) => write!(out, "{n}"),
        Val::Addr(a) => write!(out, "{a}"),
        Val::Ip(a) => write!(out, "{}", a.ip()),
        Val::Time(t) => write_start_time(t, out),
        Val::Flags(f) => write!(out, "{f}"),
        Val::Null => {
            out.push('-');
            Ok(())
        }
    };
}

/// Typed JSON as Envoy writes Istio's JSON log: counts and codes as numbers, absent as
/// `null`, `response_flags` as the string `"-"` when empty, and the upstream service time
/// as a string because Envoy logs it from a response header.
fn write_json(v: Val<'_>, out: &mut String) {
    match v {
        Val::Str(s) => write_json_str(s, out),
        Val::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Val::Null => out.push_str("null"),
        other => {
            out.push('"');
            write_text(other, out);
            out.push('"');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2019-09-03T20:57:49.103Z`: UTC, millisecond precision, as Envoy's default START_TIME.
fn write_start_time(t: SystemTime, out: &mut String) -> std::fmt::Result {
    let dt = time::OffsetDateTime::from(t);
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// Cuts `out` to at most `len` bytes without splitting a character (Envoy's `:N`).
fn truncate_at_char(out: &mut String, mut len: usize) {
    if len >= out.len() {
        return;
    }
    while !out.is_char_boundary(len) {
        len -= 1;
    }
    out.truncate(len);
}
