//! Per-shard, per-cluster endpoint choice: ROUND_ROBIN, RANDOM, LEAST_REQUEST (power of two
//! choices over this shard's in-flight requests), weights, and outlier ejection
//! (`consecutive5xxErrors`, `consecutiveGatewayErrors`, `baseEjectionTime` × ejections,
//! `maxEjectionPercent`). Each shard sees only its own traffic, so each shard ejects on its
//! own evidence, as each Envoy worker does not (Envoy shares ejections across workers);
//! the cost is that a bad endpoint is found once per shard.
//!
//! Owns: the endpoint state keyed by address (kept across reloads while the address stays).
//! Must not: touch sockets or counters other than the cluster's outlier gauges, or allocate
//! per pick (the candidate list is a reused scratch vector).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::model::LoadBalancer;
use crate::obs::stats::ClusterStats;
use crate::upstream::cluster::{Cluster, Endpoint, OutlierPolicy};

#[derive(Default)]
struct EndpointState {
    in_flight: u32,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    /// Times ejected, decaying by one per healthy `interval` (Envoy's backoff).
    ejections: u32,
    last_change: Option<Instant>,
}

#[derive(Default)]
pub struct Balancer {
    rr: Cell<usize>,
    endpoints: RefCell<HashMap<SocketAddr, EndpointState, foldhash::fast::RandomState>>,
    scratch: RefCell<Vec<usize>>,
}

impl Balancer {
    pub fn new(rr_start: usize) -> Self {
        Balancer {
            rr: Cell::new(rr_start),
            ..Default::default()
        }
    }

    /// Chooses among the endpoints that are not ejected (all of them when every one is:
    /// Envoy's panic mode, better than refusing everything). `random` is the shard's RNG.
    pub fn pick(
        &self,
        cluster: &Cluster,
        stats: &ClusterStats,
        random: &dyn Fn() -> u32,
    ) -> Option<SocketAddr> {
        let all = &cluster.endpoints;
        if all.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut states = self.endpoints.borrow_mut();
        if states.len() > all.len() * 2 + 8 {
            // Addresses a reload or DNS dropped; keep those with requests still running.
            states.retain(|a, s| s.in_flight > 0 || all.iter().any(|e| e.addr == *a));
        }
        let mut cands = self.scratch.borrow_mut();
        cands.clear();
        for (i, e) in all.iter().enumerate() {
            let ejected = states
                .get_mut(&e.addr)
                .is_some_and(|s| still_ejected(s, now, stats));
            if !ejected {
                cands.push(i);
            }
        }
        if cands.is_empty() {
            cands.extend(0..all.len());
        }
        let chosen = if all.iter().any(|e| e.weight > 0) {
            weighted(all, &cands, random())
        } else {
            match cluster.lb {
                LoadBalancer::Random => cands[random() as usize % cands.len()],
                LoadBalancer::RoundRobin => {
                    let i = self.rr.get();
                    self.rr.set(i.wrapping_add(1));
                    cands[i % cands.len()]
                }
                LoadBalancer::LeastRequest => {
                    let load = |i: usize| states.get(&all[i].addr).map_or(0, |s| s.in_flight);
                    let n = cands.len();
                    let a = random() as usize % n;
                    if n == 1 {
                        cands[a]
                    } else {
                        // Two distinct random choices; the less loaded wins, ties go to the
                        // first (itself random), so equal loads still spread.
                        let b = (a + 1 + random() as usize % (n - 1)) % n;
                        if load(cands[b]) < load(cands[a]) {
                            cands[b]
                        } else {
                            cands[a]
                        }
                    }
                }
            }
        };
        Some(all[chosen].addr)
    }

    pub fn request_started(&self, addr: SocketAddr) {
        self.endpoints
            .borrow_mut()
            .entry(addr)
            .or_default()
            .in_flight += 1;
    }

    pub fn request_finished(&self, addr: SocketAddr) {
        if let Some(s) = self.endpoints.borrow_mut().get_mut(&addr) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// Feeds outlier detection: `Some(status)` for an upstream answer, None for a failure
    /// of our own attempt (connect failure, reset, timeout), which Envoy counts as both a
    /// 5xx and a gateway error unless local-origin errors are split (egressd does not).
    pub fn result(
        &self,
        cluster: &Cluster,
        stats: &ClusterStats,
        addr: SocketAddr,
        status: Option<u16>,
    ) {
        let Some(policy) = cluster.outlier else {
            return;
        };
        let now = Instant::now();
        let mut states = self.endpoints.borrow_mut();
        let ejected_now = states
            .iter()
            .filter(|(a, s)| {
                s.ejected_until.is_some_and(|t| t > now)
                    && cluster.endpoints.iter().any(|e| e.addr == **a)
            })
            .count() as u64;
        let s = states.entry(addr).or_default();
        let five = status.is_none_or(|c| c >= 500);
        let gateway = status.is_none_or(|c| matches!(c, 502..=504));
        if !five {
            s.consecutive_5xx = 0;
            s.consecutive_gateway = 0;
            return;
        }
        s.consecutive_5xx += 1;
        if gateway {
            s.consecutive_gateway += 1;
        } else {
            s.consecutive_gateway = 0;
        }
        let tripped = (policy.consecutive_5xx > 0 && s.consecutive_5xx >= policy.consecutive_5xx)
            || (policy.consecutive_gateway > 0
                && s.consecutive_gateway >= policy.consecutive_gateway);
        if !tripped || s.ejected_until.is_some_and(|t| t > now) {
            return;
        }
        s.consecutive_5xx = 0;
        s.consecutive_gateway = 0;
        let total = cluster.endpoints.len().max(1) as u64;
        // Envoy's rule: eject while the ejected share is below the cap (so at least one).
        if ejected_now * 100 >= policy.max_ejection_percent as u64 * total {
            tracing::debug!(cluster = %cluster.name, %addr, "outlier not ejected: maxEjectionPercent reached");
            return;
        }
        s.ejections += 1;
        let time = ejection_time(&policy, s.ejections);
        s.ejected_until = Some(now + time);
        s.last_change = Some(now);
        stats.outlier_ejections_active.inc();
        stats.outlier_ejections_enforced_total.inc();
        tracing::info!(cluster = %cluster.name, %addr, ejection_ms = time.as_millis() as u64, "outlier ejected");
    }

    /// Periodic review (from the shard's 1 s tick): ends ejections that are over, so the
    /// `ejections_active` gauge is right without traffic, and decays ejection counts.
    pub fn sweep(&self, outlier: Option<OutlierPolicy>, stats: &ClusterStats) {
        let now = Instant::now();
        let interval = outlier.map_or(Duration::from_secs(10), |o| o.interval);
        for s in self.endpoints.borrow_mut().values_mut() {
            if still_ejected(s, now, stats) {
                continue;
            }
            if s.ejections > 0 && s.last_change.is_some_and(|t| now >= t + interval) {
                s.ejections -= 1;
                s.last_change = Some(now);
            }
        }
    }
}

/// True while `s` is ejected; ends an ejection that is over (and counts that).
fn still_ejected(s: &mut EndpointState, now: Instant, stats: &ClusterStats) -> bool {
    match s.ejected_until {
        Some(t) if t > now => true,
        Some(_) => {
            s.ejected_until = None;
            s.last_change = Some(now);
            stats.outlier_ejections_active.dec();
            false
        }
        None => false,
    }
}

fn ejection_time(policy: &OutlierPolicy, ejections: u32) -> Duration {
    policy
        .base_ejection
        .saturating_mul(ejections.max(1))
        .min(OutlierPolicy::MAX_EJECTION.max(policy.base_ejection))
}

fn weighted(all: &[Endpoint], cands: &[usize], random: u32) -> usize {
    let total: u32 = cands.iter().map(|&i| all[i].weight).sum();
    if total == 0 {
        return cands[random as usize % cands.len()];
    }
    let mut point = random % total;
    for &i in cands {
        if point < all[i].weight {
            return i;
        }
        point -= all[i].weight;
    }
    cands[cands.len() - 1]
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::{ejection_time, Balancer};
    use crate::config::model::{LoadBalancer, Resolution};
    use crate::obs::stats::ClusterStats;
    use crate::upstream::cluster::{Cluster, Endpoint, OutlierPolicy};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn cluster(lb: LoadBalancer, ports: &[u16], outlier: Option<OutlierPolicy>) -> Cluster {
        Cluster {
            name: "outbound|80||t".into(),
            host: "t".into(),
            port: 80,
            resolution: Resolution::Static,
            endpoints: ports
                .iter()
                .map(|&p| Endpoint {
                    addr: addr(p),
                    weight: 0,
                    labels: Default::default(),
                })
                .collect(),
            dns_targets: Vec::new(),
            lb,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_requests_per_connection: 0,
            tls: None,
            max_connections: 0,
            outlier,
            http2: false,
        }
    }

    fn policy(consecutive_5xx: u32, consecutive_gateway: u32, max_pct: u32) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx,
            consecutive_gateway,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: max_pct,
        }
    }

    /// A deterministic stand-in for the shard's RNG.
    fn counter() -> impl Fn() -> u32 {
        let n = Cell::new(0u32);
        move || {
            n.set(n.get().wrapping_mul(1_103_515_245).wrapping_add(12_345));
            n.get() >> 8
        }
    }

    #[test]
    fn least_request_avoids_the_endpoint_with_a_request_in_flight() {
        let c = cluster(LoadBalancer::LeastRequest, &[1, 2, 3], None);
        let (b, stats, rng) = (Balancer::new(0), ClusterStats::new("t"), counter());
        b.request_started(addr(1));
        b.request_started(addr(1));
        b.request_started(addr(2));
        let picks: Vec<_> = (0..60).map(|_| b.pick(&c, &stats, &rng).unwrap()).collect();
        assert!(
            !picks.contains(&addr(1)),
            "the busiest is never preferred over an idler one"
        );
        assert!(picks.iter().filter(|&&a| a == addr(3)).count() > 30);
        b.request_finished(addr(1));
        b.request_finished(addr(1));
        b.request_finished(addr(2));
        let picks: Vec<_> = (0..60).map(|_| b.pick(&c, &stats, &rng).unwrap()).collect();
        assert!(
            [1, 2, 3].iter().all(|&p| picks.contains(&addr(p))),
            "equal loads spread"
        );
    }

    #[test]
    fn round_robin_cycles_and_skips_an_ejected_endpoint() {
        let c = cluster(
            LoadBalancer::RoundRobin,
            &[1, 2, 3],
            Some(policy(2, 0, 100)),
        );
        let (b, stats, rng) = (Balancer::new(0), ClusterStats::new("t"), counter());
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(&c, &stats, &rng).unwrap().port())
            .collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
        b.result(&c, &stats, addr(2), Some(500));
        b.result(&c, &stats, addr(2), Some(200)); // a success resets the streak
        b.result(&c, &stats, addr(2), Some(500));
        assert_eq!(stats.outlier_ejections_enforced_total.get(), 0);
        b.result(&c, &stats, addr(2), Some(503));
        assert_eq!(stats.outlier_ejections_enforced_total.get(), 1);
        assert_eq!(stats.outlier_ejections_active.get(), 1);
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(&c, &stats, &rng).unwrap().port())
            .collect();
        assert!(!picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn max_ejection_percent_caps_ejections_but_always_allows_one() {
        let c = cluster(LoadBalancer::RoundRobin, &[1, 2, 3], Some(policy(1, 0, 10)));
        let (b, stats) = (Balancer::new(0), ClusterStats::new("t"));
        b.result(&c, &stats, addr(1), Some(500));
        b.result(&c, &stats, addr(2), Some(500));
        assert_eq!(stats.outlier_ejections_enforced_total.get(), 1);
    }

    #[test]
    fn gateway_errors_and_local_failures_count_separately_from_other_5xx() {
        let c = cluster(LoadBalancer::Random, &[1, 2], Some(policy(0, 2, 100)));
        let (b, stats) = (Balancer::new(0), ClusterStats::new("t"));
        b.result(&c, &stats, addr(1), Some(500));
        b.result(&c, &stats, addr(1), Some(500));
        assert_eq!(
            stats.outlier_ejections_enforced_total.get(),
            0,
            "500 is no gateway error"
        );
        b.result(&c, &stats, addr(1), Some(502));
        b.result(&c, &stats, addr(1), None);
        assert_eq!(stats.outlier_ejections_enforced_total.get(), 1);
    }

    #[test]
    fn when_every_endpoint_is_ejected_traffic_still_flows() {
        let c = cluster(LoadBalancer::RoundRobin, &[1], Some(policy(1, 0, 100)));
        let (b, stats, rng) = (Balancer::new(0), ClusterStats::new("t"), counter());
        b.result(&c, &stats, addr(1), None);
        assert_eq!(stats.outlier_ejections_active.get(), 1);
        assert_eq!(b.pick(&c, &stats, &rng), Some(addr(1)));
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let p = policy(1, 0, 100);
        assert_eq!(ejection_time(&p, 1), Duration::from_secs(30));
        assert_eq!(ejection_time(&p, 3), Duration::from_secs(90));
        assert_eq!(ejection_time(&p, 100), OutlierPolicy::MAX_EJECTION);
    }
}
