//! The access-log record and Envoy's response flags.
//!
//! Owns: `AccessRecord`, the value a shard fills in once per HTTP request or per TCP/TLS
//! connection and renders into its log batch (`log_writer::AccessLogSender::send`), and
//! `ResponseFlags`, Envoy's short flags (`UH`, `NR`, ...) printed in Envoy's order.
//! Must not: format (that is `log_format`) or do I/O (that is `log_writer`).

use std::fmt;
use std::net::SocketAddr;
use std::ops::{BitOr, BitOrAssign};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// `%PROTOCOL%` values. TCP/TLS connections print `-`, as Envoy does.
pub const PROTOCOL_HTTP10: &str = "HTTP/1.0";
pub const PROTOCOL_HTTP11: &str = "HTTP/1.1";
pub const PROTOCOL_HTTP2: &str = "HTTP/2";
pub const PROTOCOL_NONE: &str = "-";

/// One access-log line's worth of facts. Every field maps to one Envoy operator; `None`
/// prints as `-` in text formats and as `null` in `json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    /// `%START_TIME%`: when the request (HTTP) or the connection (TCP) started.
    pub start_time: SystemTime,
    /// `%REQ(:METHOD)%`; `None` on TCP lines.
    pub method: Option<String>,
    /// `%REQ(:PATH)%` (egressd never rewrites, so also `X-ENVOY-ORIGINAL-PATH?:PATH`).
    pub path: Option<String>,
    /// `%PROTOCOL%`: one of the `PROTOCOL_*` constants.
    pub protocol: &'static str,
    /// `%RESPONSE_CODE%`; 0 on TCP lines, as Envoy prints it.
    pub response_code: u16,
    /// `%RESPONSE_FLAGS%`.
    pub response_flags: ResponseFlags,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`, e.g. a TLS origination failure.
    pub upstream_transport_failure_reason: Option<String>,
    /// `%BYTES_RECEIVED%`: request body bytes (HTTP) or downstream→upstream bytes (TCP).
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: response body bytes (HTTP) or upstream→downstream bytes (TCP).
    pub bytes_sent: u64,
    /// `%DURATION%`, printed in whole milliseconds.
    pub duration: Duration,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`, printed in whole milliseconds.
    pub upstream_service_time: Option<Duration>,
    /// `%REQ(X-FORWARDED-FOR)%`.
    pub x_forwarded_for: Option<String>,
    /// `%REQ(USER-AGENT)%`.
    pub user_agent: Option<String>,
    /// `%REQ(X-REQUEST-ID)%`.
    pub request_id: Option<String>,
    /// `%REQ(:AUTHORITY)%` (the Host header on HTTP/1).
    pub authority: Option<String>,
    /// `%UPSTREAM_HOST%`: the endpoint connected to.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_CLUSTER%`, e.g. `outbound|443||edition.cnn.com` or `BlackHoleCluster`.
    pub upstream_cluster: Option<Arc<str>>,
    /// `%UPSTREAM_LOCAL_ADDRESS%`: our side of the upstream connection.
    pub upstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: the bound address (8080 with a portMap).
    pub downstream_local_address: SocketAddr,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client.
    pub downstream_remote_address: SocketAddr,
    /// `%REQUESTED_SERVER_NAME%`: the SNI, when there was one.
    pub requested_server_name: Option<String>,
    /// `%ROUTE_NAME%`: the VirtualService http route's `name`.
    pub route_name: Option<Arc<str>>,
    /// `%DOWNSTREAM_PEER_URI_SAN%`: the client certificate's URI SAN (SPIFFE id) under mTLS.
    pub downstream_peer_uri_san: Option<String>,
    /// `%DOWNSTREAM_PEER_SUBJECT%`: the client certificate's subject under mTLS.
    pub downstream_peer_subject: Option<String>,
}

impl AccessRecord {
    /// A record with only the always-known facts set and everything else absent: what a
    /// TCP line looks like before the connection learns anything. HTTP code sets
    /// `method`, `path`, `protocol`, `response_code` and the headers on top.
    pub fn new(start_time: SystemTime, local: SocketAddr, remote: SocketAddr) -> Self {
        AccessRecord {
            start_time,
            method: None,
            path: None,
            protocol: PROTOCOL_NONE,
            response_code: 0,
            response_flags: ResponseFlags::NONE,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            upstream_service_time: None,
            x_forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: local,
            downstream_remote_address: remote,
            requested_server_name: None,
            route_name: None,
            downstream_peer_uri_san: None,
            downstream_peer_subject: None,
        }
    }
}

/// Envoy's response flags as a bitset. `Display` prints them comma-joined in Envoy's own
/// order (`ResponseFlagUtils::ALL_RESPONSE_STRINGS_FLAGS`), or `-` when none is set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

/// (bit, short name) in the order Envoy prints them.
const FLAG_NAMES: [(u32, &str); 28] = [
    (1 << 0, "LH"),
    (1 << 1, "UH"),
    (1 << 2, "UT"),
    (1 << 3, "LR"),
    (1 << 4, "UR"),
    (1 << 5, "UF"),
    (1 << 6, "UC"),
    (1 << 7, "UO"),
    (1 << 8, "NR"),
    (1 << 9, "DI"),
    (1 << 10, "FI"),
    (1 << 11, "RL"),
    (1 << 12, "UAEX"),
    (1 << 13, "RLSE"),
    (1 << 14, "DC"),
    (1 << 15, "URX"),
    (1 << 16, "SI"),
    (1 << 17, "IH"),
    (1 << 18, "DPE"),
    (1 << 19, "UMSDR"),
    (1 << 20, "RFCF"),
    (1 << 21, "NFCF"),
    (1 << 22, "DT"),
    (1 << 23, "UPE"),
    (1 << 24, "NC"),
    (1 << 25, "OM"),
    (1 << 26, "DF"),
    (1 << 27, "DO"),
];

impl ResponseFlags {
    pub const NONE: Self = Self(0);
    /// LH: local health check failed.
    pub const FAILED_LOCAL_HEALTH_CHECK: Self = Self(1 << 0);
    /// UH: no healthy upstream (e.g. a DNS name that does not resolve yet).
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1 << 1);
    /// UT: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 2);
    /// LR: connection reset locally.
    pub const LOCAL_RESET: Self = Self(1 << 3);
    /// UR: upstream remote reset.
    pub const UPSTREAM_REMOTE_RESET: Self = Self(1 << 4);
    /// UF: upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 5);
    /// UC: upstream connection terminated.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 6);
    /// UO: upstream overflow (circuit breaking).
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 7);
    /// NR: no route (egressd's policy denial; cluster `BlackHoleCluster`).
    pub const NO_ROUTE_FOUND: Self = Self(1 << 8);
    /// DC: downstream connection terminated.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 14);
    /// URX: retry limit exceeded.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 15);
    /// SI: stream idle timeout.
    pub const STREAM_IDLE_TIMEOUT: Self = Self(1 << 16);
    /// DPE: downstream protocol error.
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self(1 << 18);
    /// UMSDR: upstream max stream duration reached.
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: Self = Self(1 << 19);
    /// DT: duration timeout.
    pub const DURATION_TIMEOUT: Self = Self(1 << 22);
    /// UPE: upstream protocol error.
    pub const UPSTREAM_PROTOCOL_ERROR: Self = Self(1 << 23);
    /// NC: no cluster found.
    pub const NO_CLUSTER_FOUND: Self = Self(1 << 24);
    /// DF: DNS resolution failed.
    pub const DNS_FAIL: Self = Self(1 << 26);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Appends what `Display` prints (`-`, `UH`, `UH,UF,URX`), without `core::fmt`.
    pub fn push_to(self, out: &mut Vec<u8>) {
        if self.is_empty() {
            out.push(b'-');
            return;
        }
        let mut first = true;
        for (bit, name) in FLAG_NAMES {
            if self.0 & bit != 0 {
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(name.as_bytes());
                first = false;
            }
        }
    }

    /// The flag with this Envoy short name (`"UH"`), if Envoy defines it.
    pub fn from_short_name(name: &str) -> Option<Self> {
        FLAG_NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(bit, _)| Self(*bit))
    }
}

impl BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (bit, name) in FLAG_NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_in_envoys_order_whatever_the_insertion_order() {
        let mut f = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
        f |= ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
        f.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
        assert_eq!(f.to_string(), "UH,UF,URX");
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        for flags in [f, ResponseFlags::NONE, ResponseFlags::NO_ROUTE_FOUND] {
            let mut out = Vec::new();
            flags.push_to(&mut out);
            assert_eq!(out, flags.to_string().as_bytes());
        }
        assert!(f.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE));
        assert!(!f.contains(ResponseFlags::NO_ROUTE_FOUND));
    }

    #[test]
    fn every_named_constant_matches_its_envoy_short_name() {
        let named = [
            (ResponseFlags::NO_ROUTE_FOUND, "NR"),
            (ResponseFlags::UPSTREAM_CONNECTION_FAILURE, "UF"),
            (ResponseFlags::NO_HEALTHY_UPSTREAM, "UH"),
            (ResponseFlags::UPSTREAM_REQUEST_TIMEOUT, "UT"),
            (ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
            (ResponseFlags::UPSTREAM_CONNECTION_TERMINATION, "UC"),
            (ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
            (ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
            (ResponseFlags::UPSTREAM_PROTOCOL_ERROR, "UPE"),
            (ResponseFlags::UPSTREAM_OVERFLOW, "UO"),
            (ResponseFlags::LOCAL_RESET, "LR"),
            (ResponseFlags::UPSTREAM_MAX_STREAM_DURATION_REACHED, "UMSDR"),
            (ResponseFlags::DNS_FAIL, "DF"),
        ];
        for (flag, name) in named {
            assert_eq!(flag.to_string(), name);
            assert_eq!(ResponseFlags::from_short_name(name), Some(flag));
        }
        assert_eq!(ResponseFlags::from_short_name("XX"), None);
    }
}
