//! Immutable stats snapshots: what a shard publishes and what a scrape merges.
//!
//! Owns: stat identity (`StatKey`: a scope such as a cluster or listener plus Envoy's stat
//! name within it), `StatsSnapshot` (plain owned maps, `Send`) and the merge (counters
//! and gauges summed, histograms added).
//! Must not: hold anything shard-local (`Rc`, `Cell`): snapshots cross threads.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::obs::histogram::Histogram;

/// Where a stat lives, i.e. its Envoy name prefix and its Prometheus label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `cluster.<name>.`; Prometheus label `envoy_cluster_name`.
    Cluster(String),
    /// `listener.<addr>.` (`0.0.0.0_8080`); Prometheus label `envoy_listener_address`.
    Listener(String),
    /// `http.<stat_prefix>.`; Prometheus label `envoy_http_conn_manager_prefix`.
    Http(String),
    /// No prefix (e.g. `tls_inspector.sni_found`, `access_log.dropped`).
    Global,
}

impl Scope {
    /// Envoy's first name segment, also the Prometheus `envoy_<segment>_` prefix.
    pub fn segment(&self) -> Option<&'static str> {
        match self {
            Scope::Cluster(_) => Some("cluster"),
            Scope::Listener(_) => Some("listener"),
            Scope::Http(_) => Some("http"),
            Scope::Global => None,
        }
    }

    /// The scope's value: cluster name, listener address or HTTP stat prefix.
    pub fn value(&self) -> Option<&str> {
        match self {
            Scope::Cluster(v) | Scope::Listener(v) | Scope::Http(v) => Some(v),
            Scope::Global => None,
        }
    }

    /// The Prometheus label Envoy's tag extraction gives this scope's value.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Scope::Cluster(_) => Some("envoy_cluster_name"),
            Scope::Listener(_) => Some("envoy_listener_address"),
            Scope::Http(_) => Some("envoy_http_conn_manager_prefix"),
            Scope::Global => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatKey {
    pub scope: Scope,
    /// The name inside the scope, e.g. `upstream_rq_total` or `ssl.handshake`.
    pub name: Cow<'static, str>,
}

impl StatKey {
    pub fn new(scope: Scope, name: impl Into<Cow<'static, str>>) -> Self {
        StatKey {
            scope,
            name: name.into(),
        }
    }

    /// The full Envoy name, e.g. `cluster.outbound|443||edition.cnn.com.upstream_cx_total`.
    pub fn envoy_name(&self) -> String {
        match (self.scope.segment(), self.scope.value()) {
            (Some(seg), Some(v)) => format!("{seg}.{v}.{}", self.name),
            _ => self.name.to_string(),
        }
    }
}

/// Counters, gauges and histograms of one shard, or of all shards once merged.
#[derive(Clone, Debug, Default)]
pub struct StatsSnapshot {
    pub counters: BTreeMap<StatKey, u64>,
    pub gauges: BTreeMap<StatKey, u64>,
    pub histograms: BTreeMap<StatKey, Histogram>,
}

/// The merge of every shard's latest snapshot; the renderers' input.
pub type MergedStats = StatsSnapshot;

impl StatsSnapshot {
    /// Adds `other` into `self`: counters and gauges summed, histograms merged.
    pub fn merge(&mut self, other: &StatsSnapshot) {
        for (k, v) in &other.counters {
            *self.counters.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.gauges {
            *self.gauges.entry(k.clone()).or_default() += v;
        }
        for (k, h) in &other.histograms {
            self.histograms.entry(k.clone()).or_default().add(h);
        }
    }

    pub fn add_counter(&mut self, key: StatKey, value: u64) {
        *self.counters.entry(key).or_default() += value;
    }

    pub fn add_gauge(&mut self, key: StatKey, value: u64) {
        *self.gauges.entry(key).or_default() += value;
    }

    /// A counter by its full Envoy name (for tests and the admin's `/clusters`).
    pub fn counter(&self, envoy_name: &str) -> Option<u64> {
        find(&self.counters, envoy_name).copied()
    }

    /// A gauge by its full Envoy name.
    pub fn gauge(&self, envoy_name: &str) -> Option<u64> {
        find(&self.gauges, envoy_name).copied()
    }

    /// A histogram by its full Envoy name.
    pub fn histogram(&self, envoy_name: &str) -> Option<&Histogram> {
        find(&self.histograms, envoy_name)
    }
}

fn find<'a, V>(map: &'a BTreeMap<StatKey, V>, envoy_name: &str) -> Option<&'a V> {
    map.iter()
        .find(|(k, _)| k.envoy_name() == envoy_name)
        .map(|(_, v)| v)
}
