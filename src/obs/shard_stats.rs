//! One shard's stats registry.
//!
//! Owns: the shard's `ClusterStats`, `ListenerStats` and `HttpConnManagerStats` by name
//! (created on first use, handed out as `Rc` so connections keep them without lookups),
//! its `ServerStats`, extra shard-local counter sources (e.g. the access-log sender's
//! drops), and taking a `StatsSnapshot` of all of it.
//! Must not: be shared across threads (`Rc`, `RefCell`); the scrape reads snapshots.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::obs::stats::{ClusterStats, HttpConnManagerStats, ListenerStats, ServerStats};
use crate::obs::stats_snapshot::{Scope, StatKey, StatsSnapshot};

/// Istio's cluster for traffic that matched no route (egressd's policy denial).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's cluster for traffic forwarded to where it was going without a ServiceEntry
/// endpoint (egressd: `resolution: NONE`).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

type CounterSource = Box<dyn Fn() -> u64>;

/// A shard's stats. Create one per shard, wrap in `Rc`, and give the same `Rc` to the
/// shard's `stats_hub::run_publisher`.
#[derive(Default)]
pub struct ShardStats {
    clusters: RefCell<HashMap<String, Rc<ClusterStats>>>,
    listeners: RefCell<HashMap<SocketAddr, Rc<ListenerStats>>>,
    http: RefCell<HashMap<String, Rc<HttpConnManagerStats>>>,
    pub server: ServerStats,
    sources: RefCell<Vec<(&'static str, CounterSource)>>,
}

impl ShardStats {
    /// A registry with `BlackHoleCluster` and `PassthroughCluster` present from the
    /// start, so their zero counts are scrapeable before any traffic.
    pub fn new() -> Self {
        let s = ShardStats::default();
        s.cluster(BLACKHOLE_CLUSTER);
        s.cluster(PASSTHROUGH_CLUSTER);
        s
    }

    /// The stats of cluster `name` (e.g. `outbound|443||edition.cnn.com`), created on
    /// first use. Look it up once per connection or route decision, not per byte.
    pub fn cluster(&self, name: &str) -> Rc<ClusterStats> {
        if let Some(c) = self.clusters.borrow().get(name) {
            return c.clone();
        }
        let c = Rc::new(ClusterStats::new(name));
        self.clusters
            .borrow_mut()
            .insert(name.to_string(), c.clone());
        c
    }

    /// The stats of the listener bound at `addr`, named as Envoy names it (`0.0.0.0_8080`).
    pub fn listener(&self, addr: SocketAddr) -> Rc<ListenerStats> {
        self.listeners
            .borrow_mut()
            .entry(addr)
            .or_insert_with(|| Rc::new(ListenerStats::new(&listener_stat_name(addr))))
            .clone()
    }

    /// The stats of an HTTP listener under Envoy's `http.<stat_prefix>.` (Istio uses e.g.
    /// `outbound_0.0.0.0_8080`; the caller picks it and uses it consistently).
    pub fn http(&self, stat_prefix: &str) -> Rc<HttpConnManagerStats> {
        if let Some(h) = self.http.borrow().get(stat_prefix) {
            return h.clone();
        }
        let h = Rc::new(HttpConnManagerStats::new(stat_prefix));
        self.http
            .borrow_mut()
            .insert(stat_prefix.to_string(), h.clone());
        h
    }

    /// Publishes `f()` as the unscoped counter `name` in every snapshot, e.g.
    /// `("access_log.dropped", move || sender.dropped())`. Shards' values are summed.
    pub fn add_counter_source(&self, name: &'static str, f: impl Fn() -> u64 + 'static) {
        self.sources.borrow_mut().push((name, Box::new(f)));
    }

    /// Drops the stats of clusters no longer in the config, as Envoy does on removal
    /// (the two Istio clusters always stay). Connections still holding an `Rc` keep
    /// counting into it unseen.
    pub fn retain_clusters(&self, mut keep: impl FnMut(&str) -> bool) {
        self.clusters.borrow_mut().retain(|name, _| {
            name == BLACKHOLE_CLUSTER || name == PASSTHROUGH_CLUSTER || keep(name)
        });
    }

    /// Everything this shard counts, as owned values that can cross threads.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut out = StatsSnapshot::default();
        for c in self.clusters.borrow().values() {
            c.snapshot_into(&mut out);
        }
        for l in self.listeners.borrow().values() {
            l.snapshot_into(&mut out);
        }
        for h in self.http.borrow().values() {
            h.snapshot_into(&mut out);
        }
        self.server.snapshot_into(&mut out);
        for (name, f) in self.sources.borrow().iter() {
            out.add_counter(StatKey::new(Scope::Global, *name), f());
        }
        out
    }
}

/// Envoy's listener stat name: the address with `:` replaced by `_` (`0.0.0.0_8080`,
/// `[__]_8080`).
pub fn listener_stat_name(addr: SocketAddr) -> String {
    addr.to_string().replace(':', "_")
}
