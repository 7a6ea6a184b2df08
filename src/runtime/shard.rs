//! A shard's own state: its view of the routing snapshot, its upstream pool, its per-cluster
//! load-balancing state and counters, its random source, its access-log queue and its pool
//! of splice pipes. One per executor thread, shared by that thread's tasks through `Rc`;
//! never crosses threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::obs::access_log::AccessRecord;
use crate::obs::fast_fmt;
use crate::obs::log_writer::AccessLogSender;
use crate::obs::shard_stats::{ShardStats, BLACKHOLE_CLUSTER};
use crate::obs::stats::ClusterStats;
use crate::proxy::idle_waits::IdleWaits;
use crate::proxy::pipe_pool::PipePool;
use crate::route::table::Snapshot;
use crate::runtime::reload_signal::ReloadSignal;
use crate::runtime::snapshot::{SnapshotCell, SnapshotView};
use crate::upstream::balancer::Balancer;
use crate::upstream::cluster::Cluster;
use crate::upstream::h2_pool::H2Pool;
use crate::upstream::pool::Pool;

/// Idle pipes a shard keeps between passthrough connections: two per connection, so a
/// burst of 32 connections closing and reopening costs no pipe2/close.
const IDLE_PIPES: usize = 64;
/// Splice pipe capacity. One bulk passthrough connection measured (bench passthrough,
/// same run as haproxy): 64 KiB pipes 0.87–0.89× haproxy's Gbit/s, 256 KiB 1.01–1.07× at
/// 0.74–0.89× its CPU per GB, 1 MiB no faster. Pages are held only while bytes are queued;
/// past fs.pipe-user-pages-soft an unprivileged process keeps the 64 KiB default.
const SPLICE_PIPE_BYTES: usize = 256 * 1024;

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
    /// Multiplexed connections to upstreams that asked for HTTP/2.
    pub h2_pool: H2Pool,
    /// Keep-alive connections waiting for their client's next request, expired by the tick.
    pub idle: IdleWaits,
    rng: Cell<u64>,
    draining: Cell<bool>,
    retired: RefCell<Vec<RetiredListener>>,
    clusters: RefCell<HashMap<String, Rc<ClusterLocal>, foldhash::fast::RandomState>>,
    pub stats: Rc<ShardStats>,
    log: Rc<AccessLogSender>,
    /// Pipes for the passthrough relays of this shard's connections.
    pub pipes: PipePool,
    /// Whether passthrough relays splice (else they copy); see [`splice_enabled`].
    pub splice: bool,
    /// Wakes long-lived connections when a new snapshot generation arrives.
    pub reloads: ReloadSignal,
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
            h2_pool: H2Pool::default(),
            idle: IdleWaits::default(),
            rng: Cell::new(seed(id)),
            draining: Cell::new(false),
            retired: RefCell::new(Vec::new()),
            clusters: RefCell::new(HashMap::default()),
            stats: Rc::new(ShardStats::new()),
            log: Rc::new(log),
            pipes: PipePool::new(IDLE_PIPES, Some(SPLICE_PIPE_BYTES)),
            splice: splice_enabled(),
            reloads: ReloadSignal::default(),
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

    /// The snapshot a request arriving on `gateway_port` is routed with: the current one,
    /// unless a reload removed that listener while this connection was open (or waiting in
    /// its accept queue); then the last snapshot that had it, as Envoy serves a draining
    /// listener's connections with the old config, for at most `timeouts.drain`.
    #[allow(clippy::redundant_allocation)] // see SnapshotView
    pub fn snapshot_for_port(&self, gateway_port: u16) -> Rc<Arc<Snapshot>> {
        let current = self.snapshot();
        let retired = self.retired.borrow();
        if retired.is_empty() || current.listener(gateway_port).is_some() {
            return current;
        }
        retired
            .iter()
            .rev()
            .find(|r| r.gateway_port == gateway_port && r.until > Instant::now())
            .map_or(current, |r| r.snapshot.clone())
    }

    /// Keeps `snapshot` for the connections of a listener a reload removed (see
    /// `snapshot_for_port`); `active` counts them, so it is let go once they are gone.
    #[allow(clippy::redundant_allocation)]
    pub fn retire_listener(
        &self,
        gateway_port: u16,
        snapshot: Rc<Arc<Snapshot>>,
        active: Rc<Cell<u64>>,
    ) {
        let drain = self.snapshot().config.gateway.timeouts.drain;
        self.retired.borrow_mut().push(RetiredListener {
            gateway_port,
            snapshot,
            active,
            grace_until: Instant::now() + RETIRED_GRACE.min(drain),
            until: Instant::now() + drain,
        });
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
        fast_fmt::uuid(hi, lo)
    }

    /// The shard-local state of `cluster`, kept across reloads by cluster name.
    pub fn cluster_state(&self, cluster: &Cluster) -> Rc<ClusterLocal> {
        if let Some(state) = self.clusters.borrow().get(&*cluster.name) {
            return state.clone();
        }
        let state = Rc::new(ClusterLocal {
            balancer: Balancer::new(self.random() as usize),
            stats: self.stats.cluster(&cluster.name),
        });
        self.clusters
            .borrow_mut()
            .insert(cluster.name.to_string(), state.clone());
        state
    }

    /// Renders an access-log line into the shard's batch; never blocks (a batch the full
    /// queue cannot take is dropped and its lines counted).
    pub fn log_http(&self, rec: &AccessRecord) {
        self.log.send(rec);
    }

    /// Hands the lines rendered so far to the writer (the shard's tick, and its stop).
    pub fn flush_log(&self) {
        self.log.flush();
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

    /// Set once when the shard starts draining (SIGTERM or `POST /drain_listeners`).
    pub fn set_draining(&self) {
        self.draining.set(true);
    }

    /// While draining, HTTP responses carry `connection: close` and keep-alive ends after
    /// the current response, so connections finish instead of waiting for the deadline.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Periodic housekeeping (pool sweep, ending outlier ejections that are over); the
    /// shard runs it from a timer task.
    pub fn tick(&self) {
        self.pool.sweep();
        self.h2_pool.sweep();
        let now = Instant::now();
        // Connections taken from an accept queue start a moment after the retirement.
        self.retired
            .borrow_mut()
            .retain(|r| now < r.until && (r.active.get() > 0 || now < r.grace_until));
        let snapshot = self.snapshot();
        for (name, state) in self.clusters.borrow().iter() {
            let outlier = snapshot
                .clusters
                .iter()
                .find(|c| *c.name == **name)
                .and_then(|c| c.outlier);
            state.balancer.sweep(outlier, &state.stats);
        }
    }
}

/// How long a retired listener's snapshot is kept even with no connection counted yet.
const RETIRED_GRACE: Duration = Duration::from_secs(1);

/// A listener a reload removed, with the last snapshot that had it.
#[allow(clippy::redundant_allocation)]
struct RetiredListener {
    gateway_port: u16,
    snapshot: Rc<Arc<Snapshot>>,
    active: Rc<Cell<u64>>,
    grace_until: Instant,
    until: Instant,
}

fn seed(id: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (t ^ ((id as u64 + 1) << 48) ^ (std::process::id() as u64)) | 1
}

/// Shard-local state of one cluster: its endpoint balancer (load, outlier ejections) and
/// its counters. Kept across reloads by cluster name.
pub struct ClusterLocal {
    balancer: Balancer,
    pub stats: Rc<ClusterStats>,
}

/// One request in flight to an endpoint, for LEAST_REQUEST; dropping it ends the request.
pub struct InFlight<'a> {
    state: &'a ClusterLocal,
    addr: SocketAddr,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.balancer.request_finished(self.addr);
    }
}

impl ClusterLocal {
    /// Chooses an endpoint by the cluster's policy, skipping ejected ones; None when the
    /// cluster has none (503 UH).
    pub fn pick_endpoint(&self, cluster: &Cluster, shard: &Shard) -> Option<SocketAddr> {
        self.balancer.pick(cluster, &self.stats, &|| shard.random())
    }

    /// Counts a request to `addr` as running until the returned guard drops.
    pub fn request_started(&self, addr: SocketAddr) -> InFlight<'_> {
        self.balancer.request_started(addr);
        InFlight { state: self, addr }
    }

    /// Tells outlier detection how an attempt on `addr` ended: the upstream's status, or
    /// None when our attempt failed (connect failure, reset, timeout).
    pub fn on_endpoint_result(&self, cluster: &Cluster, addr: SocketAddr, status: Option<u16>) {
        self.balancer.result(cluster, &self.stats, addr, status);
    }

    /// Whether this shard may open one more connection to `cluster`: its share of
    /// `connectionPool.tcp.maxConnections` (split evenly across shards, at least one, so no
    /// counter is shared on the data path). Counts `upstream_cx_overflow` when not.
    pub fn may_connect(&self, cluster: &Cluster, shard: &Shard) -> bool {
        if cluster.max_connections == 0 {
            return true;
        }
        let share = (cluster.max_connections as u64)
            .div_ceil(shard.shard_count() as u64)
            .max(1);
        let ok = self.stats.upstream_cx_active.get() < share;
        if !ok {
            self.stats.upstream_cx_overflow.inc();
        }
        ok
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
