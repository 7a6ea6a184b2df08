//! Interim shard counters (replaced by the obs stats module at merge).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

#[derive(Default)]
pub struct ClusterStats {
    pub cx_total: Cell<u64>,
    pub cx_connect_fail: Cell<u64>,
    pub cx_rx_bytes: Cell<u64>,
    pub cx_tx_bytes: Cell<u64>,
    pub rq_total: Cell<u64>,
}

impl ClusterStats {
    pub fn response(&self, _status: u16, _time: Duration) {
        self.rq_total.set(self.rq_total.get() + 1);
    }
}

#[derive(Default)]
pub struct ShardStats {
    clusters: RefCell<HashMap<String, Rc<ClusterStats>>>,
    pub http_rq: Cell<u64>,
}

impl ShardStats {
    pub fn cluster(&self, name: &str) -> Rc<ClusterStats> {
        self.clusters
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .clone()
    }
    pub fn listener_opened(&self, _port: u16) {}
    pub fn listener_closed(&self, _port: u16) {}
    pub fn listener_denied(&self, _port: u16, _reason: &str) {}
    pub fn http_request(&self, _status: u16) {
        self.http_rq.set(self.http_rq.get() + 1);
    }
}
