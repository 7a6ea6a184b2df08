//! The `istio` access-log line by straight-line code, and the start-time text cache that
//! every text format shares.
//!
//! Owns: `render`, which writes exactly what the generic interpreter in `log_format`
//! writes for `ISTIO_FORMAT` (a property test below holds them byte-identical), and
//! `StartTimeCache`, `%START_TIME%` with the date and clock rendered once per second.
//! Must not: do I/O, or print anything the generic interpreter would not: the format
//! string stays the one definition of the line; this is only its fast path.
//!
//! Why it exists: callgrind put the generic interpreter at ~7,500 instructions a line
//! (operator dispatch, one copy per literal and per field, a UTF-8 re-check per number, the
//! calendar computed per line), about a sixth of egressd's instructions per request; lines
//! are rendered on the shards, in the request's time.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::obs::access_log::AccessRecord;
use crate::obs::fast_fmt::{push_decimal, push_padded, push_socket_addr};

/// Renders `%START_TIME%` as Envoy's default does, `2019-09-03T20:57:49.103Z` (UTC,
/// milliseconds truncated). Records arrive in time order, give or take the interleaving
/// of shards, so the text up to the seconds is kept for the second it was made for.
#[derive(Clone, Debug, Default)]
pub struct StartTimeCache {
    /// The Unix second `prefix` renders; None before the first use.
    second: Option<u64>,
    /// `2019-09-03T20:57:49.`
    prefix: Vec<u8>,
}

impl StartTimeCache {
    /// Appends `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn push(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        let Ok(since) = t.duration_since(UNIX_EPOCH) else {
            return push_start_time_slow(t, out);
        };
        let second = since.as_secs();
        if self.second != Some(second) && !self.fill(second) {
            return push_start_time_slow(t, out);
        }
        out.extend_from_slice(&self.prefix);
        push_padded(out, since.subsec_millis().into(), 3);
        out.push(b'Z');
    }

    /// Renders the prefix of `second`; false when the slow path must print it (a year
    /// past 9999 would not fit the fixed-width text).
    fn fill(&mut self, second: u64) -> bool {
        let Some(dt) = i64::try_from(second)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .filter(|dt| dt.year() <= 9999)
        else {
            return false;
        };
        self.prefix.clear();
        push_date_and_clock(&dt, &mut self.prefix);
        self.second = Some(second);
        true
    }
}

/// `2019-09-03T20:57:49.`
fn push_date_and_clock(dt: &time::OffsetDateTime, out: &mut Vec<u8>) {
    let parts = [
        (dt.year().max(0) as u64, 4, b'-'),
        (u8::from(dt.month()).into(), 2, b'-'),
        (dt.day().into(), 2, b'T'),
        (dt.hour().into(), 2, b':'),
        (dt.minute().into(), 2, b':'),
        (dt.second().into(), 2, b'.'),
    ];
    for (value, width, sep) in parts {
        push_padded(out, value, width);
        out.push(sep);
    }
}

/// The uncached rendering, for times the cache does not cover (before 1970, after 9999).
fn push_start_time_slow(t: SystemTime, out: &mut Vec<u8>) {
    let dt = time::OffsetDateTime::from(t);
    push_date_and_clock(&dt, out);
    push_padded(out, dt.millisecond().into(), 3);
    out.push(b'Z');
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn opt<S: AsRef<str>>(out: &mut Vec<u8>, v: &Option<S>) {
    match v {
        Some(s) => out.extend_from_slice(s.as_ref().as_bytes()),
        None => out.push(b'-'),
    }
}

fn opt_addr(out: &mut Vec<u8>, v: Option<SocketAddr>) {
    match v {
        Some(a) => push_socket_addr(out, a),
        None => out.push(b'-'),
    }
}

/// Appends `rec`'s line in the `istio` format (`ISTIO_FORMAT`), newline included.
pub(crate) fn render(rec: &AccessRecord, out: &mut Vec<u8>, clock: &mut StartTimeCache) {
    out.push(b'[');
    clock.push(rec.start_time, out);
    out.extend_from_slice(b"] \"");
    opt(out, &rec.method);
    out.push(b' ');
    // `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`: egressd never rewrites, so always `:PATH`.
    opt(out, &rec.path);
    out.push(b' ');
    // `PROTOCOL_NONE` is `-`, what the interpreter prints for an absent protocol.
    out.extend_from_slice(rec.protocol.as_bytes());
    out.extend_from_slice(b"\" ");
    push_decimal(out, rec.response_code.into());
    out.push(b' ');
    rec.response_flags.push_to(out);
    // `%DYNAMIC_METADATA(istio.mixer:status)%` is always absent.
    out.extend_from_slice(b" \"-\" \"");
    opt(out, &rec.upstream_transport_failure_reason);
    out.extend_from_slice(b"\" ");
    push_decimal(out, rec.bytes_received);
    out.push(b' ');
    push_decimal(out, rec.bytes_sent);
    out.push(b' ');
    push_decimal(out, millis(rec.duration));
    out.push(b' ');
    match rec.upstream_service_time {
        Some(d) => push_decimal(out, millis(d)),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" \"");
    opt(out, &rec.x_forwarded_for);
    out.extend_from_slice(b"\" \"");
    opt(out, &rec.user_agent);
    out.extend_from_slice(b"\" \"");
    opt(out, &rec.request_id);
    out.extend_from_slice(b"\" \"");
    opt(out, &rec.authority);
    out.extend_from_slice(b"\" \"");
    opt_addr(out, rec.upstream_host);
    out.extend_from_slice(b"\" ");
    opt(out, &rec.upstream_cluster);
    out.push(b' ');
    opt_addr(out, rec.upstream_local_address);
    out.push(b' ');
    push_socket_addr(out, rec.downstream_local_address);
    out.push(b' ');
    push_socket_addr(out, rec.downstream_remote_address);
    out.push(b' ');
    opt(out, &rec.requested_server_name);
    out.push(b' ');
    opt(out, &rec.route_name);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::access_log::{ResponseFlags, PROTOCOL_HTTP11, PROTOCOL_HTTP2, PROTOCOL_NONE};
    use crate::obs::format_parser;
    use crate::obs::log_format::{render_pieces, ISTIO_FORMAT};
    use proptest::prelude::*;

    /// Every flag Envoy names, in its order.
    const FLAG_NAMES: [&str; 28] = [
        "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
        "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF",
        "DO",
    ];

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[ -~]{0,12}|\\PC{0,6}")
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    fn record() -> impl Strategy<Value = AccessRecord> {
        (
            (
                -100_000i64..5_000_000_000i64,
                0u32..1_000_000_000,
                text(),
                text(),
                0usize..4,
                any::<u16>(),
                any::<u32>(),
                text(),
            ),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                prop::option::of(any::<u64>()),
                (text(), text(), text(), text()),
            ),
            (
                prop::option::of(addr()),
                text(),
                prop::option::of(addr()),
                addr(),
                addr(),
                text(),
                text(),
            ),
        )
            .prop_map(|(a, b, c)| {
                let (secs, nanos, method, path, proto, code, flags, reason) = a;
                let start = if secs >= 0 {
                    UNIX_EPOCH + Duration::new(secs as u64, nanos)
                } else {
                    UNIX_EPOCH - Duration::new(secs.unsigned_abs(), nanos)
                };
                let mut r = AccessRecord::new(start, c.3, c.4);
                r.method = method;
                r.path = path;
                r.protocol = [PROTOCOL_NONE, PROTOCOL_HTTP11, PROTOCOL_HTTP2, ""][proto];
                r.response_code = code;
                for (bit, name) in FLAG_NAMES.iter().enumerate() {
                    if flags & (1 << bit) != 0 {
                        r.response_flags
                            .insert(ResponseFlags::from_short_name(name).unwrap());
                    }
                }
                r.upstream_transport_failure_reason = reason;
                r.bytes_received = b.0;
                r.bytes_sent = b.1;
                r.duration = Duration::from_nanos(b.2);
                r.upstream_service_time = b.3.map(Duration::from_nanos);
                (r.x_forwarded_for, r.user_agent, r.request_id, r.authority) = b.4;
                r.upstream_host = c.0;
                r.upstream_cluster = c.1.map(Into::into);
                r.upstream_local_address = c.2;
                r.requested_server_name = c.5;
                r.route_name = c.6.map(Into::into);
                r
            })
    }

    proptest! {
        #[test]
        fn fast_path_writes_what_the_format_string_interpreter_writes(
            recs in prop::collection::vec(record(), 1..4)
        ) {
            let pieces = format_parser::parse(ISTIO_FORMAT).unwrap();
            // One cache across records, as in a shard's log batch.
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            let (mut clock, mut other_clock) = (StartTimeCache::default(), StartTimeCache::default());
            for r in &recs {
                render(r, &mut fast, &mut clock);
                render_pieces(&pieces, r, &mut slow, &mut other_clock);
                let mut uncached = Vec::new();
                render_pieces(&pieces, r, &mut uncached, &mut StartTimeCache::default());
                prop_assert_eq!(slow.ends_with(&uncached), true);
            }
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }
    }

    #[test]
    fn start_time_is_utc_with_truncated_milliseconds_across_second_changes() {
        let mut clock = StartTimeCache::default();
        let mut out = Vec::new();
        for (secs, nanos) in [
            (1_567_544_269u64, 103_999_999u32),
            (1_567_544_269, 0),
            (1_567_544_270, 5_000_000),
            (0, 0),
            (253_402_300_799, 999_000_000),
        ] {
            clock.push(UNIX_EPOCH + Duration::new(secs, nanos), &mut out);
            out.push(b'\n');
        }
        clock.push(UNIX_EPOCH - Duration::from_millis(1), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2019-09-03T20:57:49.103Z\n2019-09-03T20:57:49.000Z\n2019-09-03T20:57:50.005Z\n\
             1970-01-01T00:00:00.000Z\n9999-12-31T23:59:59.999Z\n1969-12-31T23:59:59.999Z"
        );
    }
}
