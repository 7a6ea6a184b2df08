//! A cluster as the data path sees it: the compiled, immutable description of one
//! `outbound|port|subset|host` destination with its endpoints and policies. Built by
//! `route::compile` on the control thread; shards only read it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::model::{ClientTls, LoadBalancer, OutlierDetection, Resolution};

/// Index of a cluster in `Snapshot::clusters`.
pub type ClusterId = usize;

#[derive(Debug)]
pub struct Cluster {
    /// Envoy's name, e.g. `outbound|80||edition.cnn.com`: stats and logs use it verbatim
    /// (shared: every access-log record of the cluster holds it).
    pub name: Arc<str>,
    /// The destination host the routes name.
    pub host: String,
    /// The ServiceEntry port number (the one in the cluster name).
    pub port: u16,
    pub resolution: Resolution,
    pub endpoints: Vec<Endpoint>,
    /// For DNS clusters: the names behind `endpoints`, re-resolved by the control thread.
    pub dns_targets: Vec<DnsTarget>,
    pub lb: LoadBalancer,
    pub connect_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle_timeout: Duration,
    /// 0 = unlimited.
    pub max_requests_per_connection: u32,
    /// TLS origination towards the endpoints (DestinationRule `tls`), None = plain.
    pub tls: Option<ClientTls>,
    /// `connectionPool.tcp.maxConnections` for the whole gateway, 0 = unlimited; each shard
    /// enforces its share (see `ClusterLocal::may_connect`).
    pub max_connections: u32,
    /// `outlierDetection`, None = off.
    pub outlier: Option<OutlierPolicy>,
    /// `h2UpgradePolicy: UPGRADE`: requests go upstream as HTTP/2 streams, multiplexed on
    /// one connection per endpoint and shard (prior knowledge in clear, ALPN `h2` in TLS).
    pub http2: bool,
}

/// `outlierDetection` with Istio's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive 5xx answers (or local failures) that eject an endpoint; 0 = off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 answers (or local failures) that eject; 0 = off.
    pub consecutive_gateway: u32,
    /// How often ejections are reviewed and an endpoint's ejection count decays.
    pub interval: Duration,
    /// Ejection time = this × how many times the endpoint was ejected (capped at 300 s).
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl OutlierPolicy {
    /// Envoy's cap on one ejection (`max_ejection_time`).
    pub const MAX_EJECTION: Duration = Duration::from_secs(300);

    /// Istio's defaults: 5 consecutive 5xx, gateway errors off, 10 s, 30 s, 10 %.
    pub fn from_config(o: &OutlierDetection) -> Self {
        OutlierPolicy {
            consecutive_5xx: o.consecutive_errors.unwrap_or(5),
            consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
            interval: o.interval.unwrap_or(Duration::from_secs(10)),
            base_ejection: o.base_ejection_time.unwrap_or(Duration::from_secs(30)),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10),
        }
    }
}

/// One address the cluster may connect to. For DNS clusters this is an address the control
/// thread resolved and checked; the shard connects to exactly this address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
}

/// Envoy's cluster name: `outbound|<port>|<subset>|<host>`.
pub fn cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// The names a DNS cluster needs resolved, with the upstream port and the endpoint's
/// weight and labels, kept so the control thread can rebuild endpoints from answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTarget {
    pub name: String,
    pub port: u16,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_envoy() {
        assert_eq!(
            super::cluster_name(443, None, "edition.cnn.com"),
            "outbound|443||edition.cnn.com"
        );
        assert_eq!(
            super::cluster_name(80, Some("v1"), "a.b"),
            "outbound|80|v1|a.b"
        );
    }
}
