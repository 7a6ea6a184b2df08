//! HTTP/2 stats of a listener's connection manager: connections and streams served as
//! HTTP/2 (Envoy's `downstream_cx_http2_total`, `downstream_cx_http2_active`,
//! `downstream_rq_http2_total`) and the codec's `http2.*` counters: GOAWAYs sent, floods by
//! kind, protocol errors by the client.
//!
//! Owns: the counters. Must not: use atomics or locks (shard-local cells, like every stat).

use crate::obs::stats::{put, put_gauge, Counter, Gauge};
use crate::obs::stats_snapshot::{Scope, StatsSnapshot};
use crate::proxy::h2::guard::Flood;

#[derive(Debug, Default)]
pub struct Http2Stats {
    pub downstream_cx_http2_total: Counter,
    pub downstream_cx_http2_active: Gauge,
    pub downstream_rq_http2_total: Counter,
    /// `http2.goaway_sent`: connections the gateway ended with a GOAWAY error code.
    pub goaway_sent: Counter,
    /// `http2.rx_messaging_error`: the client broke the protocol (connection error).
    pub rx_messaging_error: Counter,
    floods: [Counter; Flood::ALL.len()],
}

impl Http2Stats {
    pub fn flood(&self, kind: Flood) {
        self.floods[kind as usize].inc();
    }

    pub(crate) fn snapshot_into(&self, scope: &Scope, out: &mut StatsSnapshot) {
        put(
            out,
            scope,
            "downstream_cx_http2_total",
            &self.downstream_cx_http2_total,
        );
        put_gauge(
            out,
            scope,
            "downstream_cx_http2_active",
            &self.downstream_cx_http2_active,
        );
        put(
            out,
            scope,
            "downstream_rq_http2_total",
            &self.downstream_rq_http2_total,
        );
        put(out, scope, "http2.goaway_sent", &self.goaway_sent);
        put(
            out,
            scope,
            "http2.rx_messaging_error",
            &self.rx_messaging_error,
        );
        for kind in Flood::ALL {
            put(out, scope, kind.stat_name(), &self.floods[kind as usize]);
        }
    }
}
