//! A shard's own state: its view of the routing snapshot, its upstream pool, its per-cluster
//! load-balancing state and counters, its random source, its access-log queue and its pool
//! of splice pipes. One per executor thread, shared by that thread's tasks through `Rc`;
//! never crosses threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::model::{Bootstrap, LoadBalancer};
use crate::obs::access_log::AccessRecord;
use crate::obs::log_writer::AccessLogSender;
use crate::obs::shard_stats::{ShardStats, BLACKHOLE_CLUSTER};
use crate::obs::stats::ClusterStats;
use crate::proxy::pipe_pool::PipePool;
use crate::route::table::Snapshot;
use crate::runtime::snapshot::{SnapshotCell, SnapshotView};
use crate::upstream::cluster::Cluster;
use crate::upstream::pool::Pool;

/// Idle pipes a shard keeps between passthrough connections: two per connection, so a
/// burst of 32 connections closing and reopening costs no pipe2/close.
const IDLE_PIPES: usize = 64;

/// `EGRESSD_SPLICE=0` makes passthrough relays copy through user space instead of
/// splicing (for benchmarks comparing the two); anything else, or unset, splices. Read
/// once per shard at start.
pub fn splice_enabled() -> bool {
    std::env::var_os("EGRESSD_SPLICE").is_none_or(|v| v != "0")
}

pub struct Shard {
    pub id: usize,
    shards: usize,
    open: Cell<u64>,
    view: SnapshotView,
    pub pool: Pool,
    rng: Cell<u64>,
    clusters: RefCell<HashMap<String, Rc<ClusterLocal>>>,
    pub stats: Rc<ShardStats>,
    log: Rc<AccessLogSender>,
    /// Pipes for the passthrough relays of this shard's connections.
    pub pipes: PipePool,
    /// Whether passthrough relays splice (else they copy); see [`splice_enabled`].
    pub splice: bool,
}

impl Shard {
    pub fn new(id: usize, shards: usize, cell: SnapshotCell, log: AccessLogSender) -> Self {
        let view = SnapshotView::new(cell);
        let max_idle = view.current().config.gateway.pool.max_idle_per_cluster;
        Shard {
            id,
            shards,
            open: Cell::new(0),
            view,
            pool: Pool::new(max_idle),
            rng: Cell::new(seed(id)),
            clusters: RefCell::new(HashMap::new()),
            stats: Rc::new(ShardStats::new()),
            log: Rc::new(log),
            pipes: PipePool::new(IDLE_PIPES, None),
            splice: splice_enabled(),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards
    }

    /// Downstream connections open on this shard, all listeners together.
    pub fn open_connections(&self) -> u64 {
        self.open.get()
    }

    pub fn conn_opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    pub fn conn_closed(&self) {
        self.open.set(self.open.get() - 1);
    }

    #[allow(clippy::redundant_allocation)] // see SnapshotView
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        self.view.current()
    }

    /// The bootstrap settings of the current snapshot.
    pub fn bootstrap(&self) -> Bootstrap {
        self.snapshot().config.gateway.clone()
    }

    /// xorshift64*: fast, shard-local, good enough for load balancing and weights.
    pub fn random(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// A UUIDv4 for `x-request-id` when the client sent none.
    pub fn request_id(&self) -> String {
        let hi = ((self.random() as u64) << 32) | self.random() as u64;
        let lo = ((self.random() as u64) << 32) | self.random() as u64;
        let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x4000;
        let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    /// The shard-local state of `cluster`, kept across reloads by cluster name.
    pub fn cluster_state(&self, cluster: &Cluster) -> Rc<ClusterLocal> {
        if let Some(state) = self.clusters.borrow().get(&cluster.name) {
            return state.clone();
        }
        let state = Rc::new(ClusterLocal {
            rr: Cell::new(self.random() as usize),
            stats: self.stats.cluster(&cluster.name),
        });
        self.clusters
            .borrow_mut()
            .insert(cluster.name.clone(), state.clone());
        state
    }

    /// Queues an access-log record; never blocks (a full queue counts a drop).
    pub fn log_http(&self, rec: AccessRecord) {
        self.log.send(rec);
    }

    /// The log sender, for the `access_log.dropped` counter source.
    pub fn log_sender(&self) -> Rc<AccessLogSender> {
        self.log.clone()
    }

    /// A request or connection denied by policy: counted on `BlackHoleCluster`.
    pub fn count_blackhole(&self, status: u16) {
        let stats = self.stats.cluster(BLACKHOLE_CLUSTER);
        stats.upstream_rq_total.inc();
        if status > 0 {
            stats.record_response(status);
        }
    }

    /// Periodic housekeeping (pool sweep); the shard runs it from a timer task.
    pub fn tick(&self) {
        self.pool.sweep();
    }
}

fn seed(id: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (t ^ ((id as u64 + 1) << 48) ^ (std::process::id() as u64)) | 1
}

/// Shard-local state of one cluster.
pub struct ClusterLocal {
    rr: Cell<usize>,
    pub stats: Rc<ClusterStats>,
}

impl ClusterLocal {
    /// Chooses an endpoint by the cluster's policy; None when it has none (503 UH).
    pub fn pick_endpoint(&self, cluster: &Cluster, shard: &Shard) -> Option<SocketAddr> {
        let endpoints = &cluster.endpoints;
        if endpoints.is_empty() {
            return None;
        }
        let weighted = endpoints.iter().any(|e| e.weight > 0);
        let index = if weighted {
            let total: u32 = endpoints.iter().map(|e| e.weight).sum();
            let mut point = shard.random() % total.max(1);
            endpoints.iter().position(|e| {
                let hit = point < e.weight;
                point = point.saturating_sub(e.weight);
                hit
            })?
        } else {
            match cluster.lb {
                LoadBalancer::Random => shard.random() as usize % endpoints.len(),
                LoadBalancer::RoundRobin | LoadBalancer::LeastRequest => {
                    let i = self.rr.get();
                    self.rr.set(i.wrapping_add(1));
                    i % endpoints.len()
                }
            }
        };
        Some(endpoints[index].addr)
    }

    pub fn on_connect_fail(&self, timed_out: bool) {
        self.stats.upstream_cx_connect_fail.inc();
        if timed_out {
            self.stats.upstream_cx_connect_timeout.inc();
        }
    }

    pub fn on_no_endpoint(&self) {
        self.stats.upstream_cx_none_healthy.inc();
    }

    pub fn on_response(&self, status: u16, time: Duration) {
        self.stats.upstream_rq_total.inc();
        self.stats.record_response(status);
        self.stats.record_rq_time(time);
    }

    pub fn on_bytes(&self, tx: u64, rx: u64) {
        self.stats.upstream_cx_tx_bytes_total.add(tx);
        self.stats.upstream_cx_rx_bytes_total.add(rx);
    }
}
