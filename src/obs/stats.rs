//! Shard-local counters, gauges and histograms, grouped as Envoy groups them.
//!
//! Owns: `Counter`, `Gauge`, `ClusterStats` (`cluster.<name>.*`), `ListenerStats`
//! (`listener.<addr>.*`), `HttpConnManagerStats` (`http.<prefix>.*`), and writing each
//! into a `StatsSnapshot`. TLS and unscoped stats are in `stats_tls` (re-exported here).
//! Must not: use atomics or locks: a shard bumps plain `Cell`s on the data path, and only
//! its own publisher task reads them (see `stats_hub`). The one shared value is the
//! benchmark switch `stats_enabled`, written once at first use and only read after.

use std::cell::{Cell, RefCell};
use std::sync::LazyLock;
use std::time::Duration;

use crate::obs::histogram::Histogram;
use crate::obs::stats_snapshot::{Scope, StatKey, StatsSnapshot};
pub use crate::obs::stats_tls::{HandshakeFailure, ServerStats, SniPeek, TlsStats};

/// The environment variable that turns per-request stats recording off, for the
/// `obs-cost` benchmark only (`EGRESSD_BENCH_NO_STATS=1`; unset or anything else = on).
pub const BENCH_NO_STATS_ENV: &str = "EGRESSD_BENCH_NO_STATS";

/// Whether counters and histograms record. Read once per process.
///
/// Why a runtime switch and not a cargo feature: the benchmark must compare stats on with
/// stats off *in one run*, and two binaries built with different features also differ in
/// code layout and inlining, which moves req/s by a few percent on its own, as much as the
/// 5% being measured. With the switch, both sides run the same binary and the only
/// difference is the recording itself; what the switch costs when stats are on (one load
/// and a well-predicted branch per record call) is charged to the "on" side, so the
/// measured cost errs high, not low. Gauges are not switched: they are levels changed per
/// connection, not per request, and circuit breaking (`maxConnections`) reads one.
pub fn stats_enabled() -> bool {
    static ENABLED: LazyLock<bool> =
        LazyLock::new(|| std::env::var_os(BENCH_NO_STATS_ENV).is_none_or(|v| v != "1"));
    *ENABLED
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(Cell<u64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        if stats_enabled() {
            self.0.set(self.0.get().wrapping_add(n));
        }
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A level that goes up and down (active connections). A connection lives on one shard,
/// so every `dec` follows an `inc` on the same shard and the level never goes negative.
#[derive(Debug, Default)]
pub struct Gauge(Cell<u64>);

impl Gauge {
    pub fn inc(&self) {
        self.0.set(self.0.get() + 1);
    }
    pub fn dec(&self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

pub(crate) fn put(out: &mut StatsSnapshot, scope: &Scope, name: &'static str, c: &Counter) {
    out.add_counter(StatKey::new(scope.clone(), name), c.get());
}

pub(crate) fn put_gauge(out: &mut StatsSnapshot, scope: &Scope, name: &'static str, g: &Gauge) {
    out.add_gauge(StatKey::new(scope.clone(), name), g.get());
}

/// `cluster.<name>.*`. Fetch once per connection or route decision with
/// `ShardStats::cluster`; the hot path then only bumps cells.
#[derive(Debug)]
pub struct ClusterStats {
    scope: Scope,
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    /// No endpoint to connect to (unresolved DNS name): the `UH` case.
    pub upstream_cx_none_healthy: Counter,
    pub upstream_cx_rx_bytes_total: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_rq_total: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_retry: Counter,
    /// `connectionPool.tcp.maxConnections` reached: the request got 503 `UO`.
    pub upstream_cx_overflow: Counter,
    /// `outlier_detection.ejections_active` / `ejections_enforced_total` (this shard's).
    pub outlier_ejections_active: Gauge,
    pub outlier_ejections_enforced_total: Counter,
    /// TLS origination handshakes (`cluster.<name>.ssl.*`).
    pub ssl: TlsStats,
    /// `(status code, count)`; a handful of codes per cluster, so a scan beats a map.
    codes: RefCell<Vec<(u16, u64)>>,
    rq_time: RefCell<Histogram>,
}

impl ClusterStats {
    pub(crate) fn new(name: &str) -> Self {
        ClusterStats {
            scope: Scope::Cluster(name.to_string()),
            upstream_cx_total: Counter::default(),
            upstream_cx_active: Gauge::default(),
            upstream_cx_connect_fail: Counter::default(),
            upstream_cx_connect_timeout: Counter::default(),
            upstream_cx_none_healthy: Counter::default(),
            upstream_cx_rx_bytes_total: Counter::default(),
            upstream_cx_tx_bytes_total: Counter::default(),
            upstream_rq_total: Counter::default(),
            upstream_rq_timeout: Counter::default(),
            upstream_rq_retry: Counter::default(),
            upstream_cx_overflow: Counter::default(),
            outlier_ejections_active: Gauge::default(),
            outlier_ejections_enforced_total: Counter::default(),
            ssl: TlsStats::default(),
            codes: RefCell::new(Vec::new()),
            rq_time: RefCell::new(Histogram::new()),
        }
    }

    /// Counts a response by exact code (`upstream_rq_<code>`) and, at snapshot time, by
    /// class (`upstream_rq_<N>xx`). Like Envoy, a code appears once it has happened.
    pub fn record_response(&self, code: u16) {
        if !stats_enabled() {
            return;
        }
        let mut codes = self.codes.borrow_mut();
        match codes.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => codes.push((code, 1)),
        }
    }

    /// `upstream_rq_time`: request sent to response complete, in ms.
    pub fn record_rq_time(&self, d: Duration) {
        if !stats_enabled() {
            return;
        }
        self.rq_time.borrow_mut().record(d);
    }

    pub fn responses(&self, code: u16) -> u64 {
        let codes = self.codes.borrow();
        codes
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n)
    }

    pub(crate) fn snapshot_into(&self, out: &mut StatsSnapshot) {
        let s = &self.scope;
        put(out, s, "upstream_cx_total", &self.upstream_cx_total);
        put_gauge(out, s, "upstream_cx_active", &self.upstream_cx_active);
        put(
            out,
            s,
            "upstream_cx_connect_fail",
            &self.upstream_cx_connect_fail,
        );
        put(
            out,
            s,
            "upstream_cx_connect_timeout",
            &self.upstream_cx_connect_timeout,
        );
        put(
            out,
            s,
            "upstream_cx_none_healthy",
            &self.upstream_cx_none_healthy,
        );
        put(
            out,
            s,
            "upstream_cx_rx_bytes_total",
            &self.upstream_cx_rx_bytes_total,
        );
        put(
            out,
            s,
            "upstream_cx_tx_bytes_total",
            &self.upstream_cx_tx_bytes_total,
        );
        put(out, s, "upstream_rq_total", &self.upstream_rq_total);
        put(out, s, "upstream_rq_timeout", &self.upstream_rq_timeout);
        put(out, s, "upstream_rq_retry", &self.upstream_rq_retry);
        put(out, s, "upstream_cx_overflow", &self.upstream_cx_overflow);
        put_gauge(
            out,
            s,
            "outlier_detection.ejections_active",
            &self.outlier_ejections_active,
        );
        put(
            out,
            s,
            "outlier_detection.ejections_enforced_total",
            &self.outlier_ejections_enforced_total,
        );
        self.ssl.snapshot_into(s, out);
        for &(code, n) in self.codes.borrow().iter() {
            out.add_counter(StatKey::new(s.clone(), format!("upstream_rq_{code}")), n);
            let class = format!("upstream_rq_{}xx", code / 100);
            out.add_counter(StatKey::new(s.clone(), class), n);
        }
        let key = StatKey::new(s.clone(), "upstream_rq_time");
        out.histograms
            .entry(key)
            .or_default()
            .add(&self.rq_time.borrow());
    }
}

/// Why a listener refused a connection before routing it anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerDeny {
    /// `downstream_cx_overflow` (Envoy's name): `limits.maxConnections*` reached.
    Overflow,
    /// `no_filter_chain_match` (Envoy's name): the SNI matches no server on this port.
    NoFilterChainMatch,
    /// `downstream_cx_no_route` (egressd's name): a TLS/TCP connection matched no route
    /// and was closed (Envoy would send it to `BlackHoleCluster`, counted there too).
    NoRoute,
    /// `downstream_pre_cx_timeout` (Envoy's name): the ClientHello did not arrive within
    /// `timeouts.sniPeek`.
    PreConnectionTimeout,
}

impl ListenerDeny {
    const ALL: [ListenerDeny; 4] = [
        ListenerDeny::Overflow,
        ListenerDeny::NoFilterChainMatch,
        ListenerDeny::NoRoute,
        ListenerDeny::PreConnectionTimeout,
    ];

    pub fn stat_name(self) -> &'static str {
        match self {
            ListenerDeny::Overflow => "downstream_cx_overflow",
            ListenerDeny::NoFilterChainMatch => "no_filter_chain_match",
            ListenerDeny::NoRoute => "downstream_cx_no_route",
            ListenerDeny::PreConnectionTimeout => "downstream_pre_cx_timeout",
        }
    }
}

/// `listener.<addr>.*`, with `<addr>` as Envoy writes it (`0.0.0.0_8080`).
#[derive(Debug)]
pub struct ListenerStats {
    scope: Scope,
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    /// Terminated TLS (`listener.<addr>.ssl.*`).
    pub ssl: TlsStats,
    denied: [Counter; ListenerDeny::ALL.len()],
}

impl ListenerStats {
    pub(crate) fn new(addr_name: &str) -> Self {
        ListenerStats {
            scope: Scope::Listener(addr_name.to_string()),
            downstream_cx_total: Counter::default(),
            downstream_cx_active: Gauge::default(),
            ssl: TlsStats::default(),
            denied: Default::default(),
        }
    }

    pub fn deny(&self, why: ListenerDeny) {
        self.denied[why as usize].inc();
    }

    pub fn denied(&self, why: ListenerDeny) -> u64 {
        self.denied[why as usize].get()
    }

    pub(crate) fn snapshot_into(&self, out: &mut StatsSnapshot) {
        let s = &self.scope;
        put(out, s, "downstream_cx_total", &self.downstream_cx_total);
        put_gauge(out, s, "downstream_cx_active", &self.downstream_cx_active);
        for why in ListenerDeny::ALL {
            put(out, s, why.stat_name(), &self.denied[why as usize]);
        }
        self.ssl.snapshot_into(s, out);
    }
}

/// `http.<stat_prefix>.*`: requests seen by one HTTP listener.
#[derive(Debug)]
pub struct HttpConnManagerStats {
    scope: Scope,
    pub downstream_rq_total: Counter,
    pub downstream_rq_active: Gauge,
    /// Requests whose head did not parse or broke a limit (`DPE`).
    pub downstream_rq_rx_reset: Counter,
    classes: [Counter; 5],
    pub http2: crate::obs::stats_http2::Http2Stats,
}

impl HttpConnManagerStats {
    pub(crate) fn new(prefix: &str) -> Self {
        HttpConnManagerStats {
            scope: Scope::Http(prefix.to_string()),
            downstream_rq_total: Counter::default(),
            downstream_rq_active: Gauge::default(),
            downstream_rq_rx_reset: Counter::default(),
            classes: Default::default(),
            http2: Default::default(),
        }
    }

    /// `downstream_rq_<N>xx` for the response sent downstream (codes outside 100..=599
    /// are not counted by class).
    pub fn record_response(&self, code: u16) {
        if let Some(c) = (code / 100)
            .checked_sub(1)
            .and_then(|i| self.classes.get(i as usize))
        {
            c.inc();
        }
    }

    pub(crate) fn snapshot_into(&self, out: &mut StatsSnapshot) {
        let s = &self.scope;
        put(out, s, "downstream_rq_total", &self.downstream_rq_total);
        put_gauge(out, s, "downstream_rq_active", &self.downstream_rq_active);
        put(
            out,
            s,
            "downstream_rq_rx_reset",
            &self.downstream_rq_rx_reset,
        );
        // Envoy always exports the five classes of its connection manager.
        const NAMES: [&str; 5] = [
            "downstream_rq_1xx",
            "downstream_rq_2xx",
            "downstream_rq_3xx",
            "downstream_rq_4xx",
            "downstream_rq_5xx",
        ];
        for (name, c) in NAMES.iter().zip(self.classes.iter()) {
            put(out, s, name, c);
        }
        self.http2.snapshot_into(s, out);
    }
}
