//! Access-log formats: Envoy format strings compiled once, and Istio's JSON encoding.
//!
//! Owns: `LogFormat` (a custom Envoy string compiled by `format_parser`; the `istio`
//! format, Istio 1.3's default string, which the same parser compiles and which renders
//! through the byte-identical fast path of `istio_line`; the `json` format with Istio's
//! keys), operator evaluation, and rendering.
//! Must not: do I/O or run on a shard: rendering happens on the log writer thread.
//! Rendering allocates nothing: values are written straight into the caller's buffer, as
//! bytes (every value is a whole `&str` or ASCII, so the line is UTF-8 without a check).

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::config::model::AccessLogFormat;
use crate::obs::access_log::{AccessRecord, ResponseFlags, PROTOCOL_NONE};
use crate::obs::fast_fmt;
pub use crate::obs::format_parser::FormatError;
use crate::obs::format_parser::{self, Op, Piece, ReqHeader};
use crate::obs::istio_line;
pub use crate::obs::istio_line::StartTimeCache;

/// Istio 1.3's default text format (DESIGN.md, "Names that users grep for").
pub const ISTIO_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \"%DYNAMIC_METADATA(istio.mixer:status)%\" \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// A compiled access-log format. Cheap to clone; render with `render`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// `ISTIO_FORMAT`, however it was written in the config.
    Istio,
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
    /// The `istio` format: `ISTIO_FORMAT`, rendered by its fast path.
    pub fn istio() -> Self {
        LogFormat { kind: Kind::Istio }
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
    /// end in a newline gets one, so a record is always exactly one line. For tests and
    /// one-off lines; the writer uses `render_line`.
    pub fn render(&self, rec: &AccessRecord, out: &mut String) {
        let mut bytes = std::mem::take(out).into_bytes();
        self.render_line(rec, &mut bytes, &mut StartTimeCache::default());
        // Only whole `&str`s and ASCII are written and truncation keeps characters whole,
        // so the lossy branch is never taken; it only avoids a panic path.
        *out = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    }

    /// `render` into a byte batch (a shard's log batch), with its start-time cache.
    pub fn render_line(&self, rec: &AccessRecord, out: &mut Vec<u8>, clock: &mut StartTimeCache) {
        match &self.kind {
            Kind::Istio => istio_line::render(rec, out, clock),
            Kind::Text(pieces) => render_pieces(pieces, rec, out, clock),
            Kind::Json => {
                out.push(b'{');
                for (i, (key, op)) in JSON_KEYS.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(key, out);
                    out.push(b':');
                    write_json(eval(*op, rec), out, clock);
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }
}

/// Compiles an Envoy format string (`%OPERATOR%`, `%REQ(A?B):N%`, literals between).
/// `ISTIO_FORMAT` itself, written out in the config, gets the `istio` fast path.
pub fn compile_format(s: &str) -> Result<LogFormat, FormatError> {
    let pieces = format_parser::parse(s)?;
    if format_parser::parse(ISTIO_FORMAT).is_ok_and(|istio| istio == pieces) {
        return Ok(LogFormat::istio());
    }
    Ok(LogFormat {
        kind: Kind::Text(pieces),
    })
}

/// The generic interpreter: one line of `pieces` for `rec`.
pub(crate) fn render_pieces(
    pieces: &[Piece],
    rec: &AccessRecord,
    out: &mut Vec<u8>,
    clock: &mut StartTimeCache,
) {
    let line_start = out.len();
    for piece in pieces {
        match piece {
            Piece::Literal(s) => out.extend_from_slice(s.as_bytes()),
            Piece::Op { op, max_len } => {
                let start = out.len();
                write_text(eval(*op, rec), out, clock);
                if let Some(max) = max_len {
                    truncate_at_char(out, start + max);
                }
            }
        }
    }
    if out.len() == line_start || out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
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

fn opt_str<S: AsRef<str>>(v: &Option<S>) -> Val<'_> {
    v.as_ref().map_or(Val::Null, |s| Val::Str(s.as_ref()))
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

fn write_text(v: Val<'_>, out: &mut Vec<u8>, clock: &mut StartTimeCache) {
    match v {
        Val::Str(s) => out.extend_from_slice(s.as_bytes()),
        Val::Num(n) | Val::HeaderNum(n) => fast_fmt::push_decimal(out, n),
        Val::Addr(a) => fast_fmt::push_socket_addr(out, a),
        Val::Ip(a) => fast_fmt::push_ip(out, a.ip()),
        Val::Time(t) => clock.push(t, out),
        Val::Flags(f) => f.push_to(out),
        Val::Null => out.push(b'-'),
    }
}

/// Typed JSON as Envoy writes Istio's JSON log: counts and codes as numbers, absent as
/// `null`, `response_flags` as the string `"-"` when empty, and the upstream service time
/// as a string because Envoy logs it from a response header.
fn write_json(v: Val<'_>, out: &mut Vec<u8>, clock: &mut StartTimeCache) {
    match v {
        Val::Str(s) => write_json_str(s, out),
        Val::Num(n) => fast_fmt::push_decimal(out, n),
        Val::Null => out.extend_from_slice(b"null"),
        other => {
            out.push(b'"');
            write_text(other, out, clock);
            out.push(b'"');
        }
    }
}

/// A JSON string. Bytes of multi-byte characters are all >= 0x80, so escaping byte by
/// byte is escaping character by character.
fn write_json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b < 0x20 => {
                out.extend_from_slice(b"\\u");
                out.extend_from_slice(fast_fmt::hex(b.into(), 4).as_bytes());
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// Cuts `out` to at most `len` bytes without splitting a character (Envoy's `:N`).
fn truncate_at_char(out: &mut Vec<u8>, mut len: usize) {
    if len >= out.len() {
        return;
    }
    // A UTF-8 continuation byte (0b10xx_xxxx) is never where a character starts.
    while len > 0 && out[len] & 0xc0 == 0x80 {
        len -= 1;
    }
    out.truncate(len);
}
