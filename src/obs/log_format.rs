//! Access-log formats: Envoy format strings compiled once, and Istio's JSON encoding.
//!
//! Owns: `LogFormat` (a custom Envoy string compiled by `format_parser`; the `istio`
//! format, Istio 1.3's default string compiled by the same parser so there is one
//! formatter; the `json` format with Istio's keys), operator evaluation, and rendering.
//! Must not: do I/O or run on a shard: rendering happens on the log writer thread.
//! Rendering allocates nothing: values are written straight into the caller's buffer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::config::model::AccessLogFormat;
use crate::obs::access_log::{AccessRecord, ResponseFlags, PROTOCOL_NONE};
use crate::obs::fast_fmt;
pub use crate::obs::format_parser::FormatError;
use crate::obs::format_parser::{self, Op, Piece, ReqHeader};

/// Istio 1.3's default text format (DESIGN.md, "Names that users grep for").
pub const ISTIO_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \"%DYNAMIC_METADATA(istio.mixer:status)%\" \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

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
                let line_start = out.len();
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
                if out.len() == line_start || !out.ends_with('\n') {
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
    Ok(LogFormat {
        kind: Kind::Text(format_parser::parse(s)?),
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
        Val::Num(n) | Val::HeaderNum(n) => {
            out.push_str(fast_fmt::decimal(n, 0).as_str());
            Ok(())
        }
        Val::Addr(a) => {
            out.push_str(fast_fmt::socket_addr(a).as_str());
            Ok(())
        }
        Val::Ip(a) => {
            out.push_str(fast_fmt::ip(a.ip()).as_str());
            Ok(())
        }
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
    let parts = [
        (dt.year().max(0) as u64, 4, '-'),
        (u8::from(dt.month()).into(), 2, '-'),
        (dt.day().into(), 2, 'T'),
        (dt.hour().into(), 2, ':'),
        (dt.minute().into(), 2, ':'),
        (dt.second().into(), 2, '.'),
        (dt.millisecond().into(), 3, 'Z'),
    ];
    for (value, width, sep) in parts {
        out.push_str(fast_fmt::decimal(value, width).as_str());
        out.push(sep);
    }
    Ok(())
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
