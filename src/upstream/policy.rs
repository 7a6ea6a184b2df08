//! Traffic policy of one cluster, merged from the DestinationRule for its host the way Istio
//! layers it: the rule's `trafficPolicy`, then its `portLevelSettings` for the port, then the
//! subset's `trafficPolicy` (and the subset's port-level settings), each more specific layer
//! replacing whole blocks (loadBalancer, connectionPool, tls) of the one before.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::model::{
    ClientTls, ClientTlsMode, Config, ConnectionPool, LoadBalancer, OutlierDetection, TrafficPolicy,
};
use crate::upstream::cluster::OutlierPolicy;

#[derive(Clone, Debug)]
pub struct ClusterPolicy {
    pub lb: LoadBalancer,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_requests_per_connection: u32,
    pub tls: Option<ClientTls>,
    /// `connectionPool.tcp.maxConnections`, 0 = unlimited.
    pub max_connections: u32,
    pub outlier: Option<OutlierPolicy>,
    /// `connectionPool.http.h2UpgradePolicy: UPGRADE`: HTTP/2 to the upstream.
    pub http2: bool,
}

#[derive(Default)]
struct Layers<'a> {
    lb: Option<LoadBalancer>,
    pool: Option<&'a ConnectionPool>,
    tls: Option<&'a ClientTls>,
    outlier: Option<&'a OutlierDetection>,
}

impl<'a> Layers<'a> {
    fn apply(&mut self, policy: &'a TrafficPolicy, port: u16) {
        self.lb = policy.load_balancer.or(self.lb);
        self.pool = policy.connection_pool.as_ref().or(self.pool);
        self.tls = policy.tls.as_ref().or(self.tls);
        self.outlier = policy.outlier_detection.as_ref().or(self.outlier);
        if let Some(p) = policy.port_level_settings.iter().find(|p| p.port == port) {
            self.lb = p.load_balancer.or(self.lb);
            self.pool = p.connection_pool.as_ref().or(self.pool);
            self.tls = p.tls.as_ref().or(self.tls);
            self.outlier = p.outlier_detection.as_ref().or(self.outlier);
        }
    }
}

/// The policy for `host:port[subset]`, with the bootstrap's defaults where no rule speaks.
pub fn for_destination(
    config: &Config,
    host: &str,
    port: u16,
    subset: Option<&str>,
) -> ClusterPolicy {
    let mut layers = Layers::default();
    if let Some(rule) = config.destination_rules.iter().find(|r| r.host == host) {
        if let Some(policy) = &rule.traffic_policy {
            layers.apply(policy, port);
        }
        if let Some(sub) = subset.and_then(|name| rule.subsets.iter().find(|s| s.name == name)) {
            if let Some(policy) = &sub.traffic_policy {
                layers.apply(policy, port);
            }
        }
    }
    let defaults = &config.gateway;
    ClusterPolicy {
        lb: layers.lb.unwrap_or(LoadBalancer::RoundRobin),
        connect_timeout: layers
            .pool
            .and_then(|p| p.tcp_connect_timeout)
            .unwrap_or(defaults.timeouts.connect),
        idle_timeout: layers
            .pool
            .and_then(|p| p.http_idle_timeout.or(p.tcp_idle_timeout))
            .unwrap_or(defaults.pool.idle_timeout),
        max_requests_per_connection: layers
            .pool
            .and_then(|p| p.http_max_requests_per_connection)
            .unwrap_or(0),
        tls: layers
            .tls
            .filter(|t| t.mode != ClientTlsMode::Disable)
            .cloned(),
        max_connections: layers.pool.and_then(|p| p.tcp_max_connections).unwrap_or(0),
        outlier: layers.outlier.map(OutlierPolicy::from_config),
        http2: layers.pool.is_some_and(|p| p.h2_upgrade),
    }
}

/// The labels an endpoint needs to belong to `subset` (empty without a subset).
pub fn subset_labels(
    config: &Config,
    host: &str,
    subset: Option<&str>,
) -> BTreeMap<String, String> {
    let Some(name) = subset else {
        return BTreeMap::new();
    };
    config
        .destination_rules
        .iter()
        .filter(|r| r.host == host)
        .flat_map(|r| r.subsets.iter())
        .find(|s| s.name == name)
        .map(|s| s.labels.clone())
        .unwrap_or_default()
}
