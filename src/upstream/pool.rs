//! Per-shard pool of idle upstream HTTP/1.1 connections, keyed by what makes a connection
//! reusable (the endpoint address; for TLS origination also the SNI and client identity).
//! LIFO reuse keeps the warmest connections busy and lets the rest age out. A connection is
//! checked before reuse, so one the upstream closed while idle is dropped, not used: a
//! readiness poll still pending from its last read proves it quiet for free, else a
//! `MSG_PEEK` probe asks the kernel (that probe was one syscall per proxied request).
//! Shard-local: `RefCell`, no locks, never crosses threads.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use std::rc::Rc;

use crate::obs::stats::ClusterStats;
use crate::proxy::buf::ReadBuf;
use crate::sys::liveness::idle_connection_usable;
use crate::tls::stream::UpstreamStream;

/// An upstream connection with its read buffer.
pub struct UpstreamConn {
    pub stream: UpstreamStream,
    pub buf: ReadBuf,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    /// Requests already carried (for `maxRequestsPerConnection`).
    pub requests: u32,
    /// The cluster's counters: `upstream_cx_active` follows this connection's life.
    pub stats: Rc<ClusterStats>,
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        self.stats.upstream_cx_active.dec();
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    /// TLS origination: SNI and client identity (`tls::origination::Origination::tag`).
    pub tls: Option<Rc<str>>,
}

struct Idle {
    conn: Box<UpstreamConn>,
    since: Instant,
    idle_timeout: Duration,
}

pub struct Pool {
    idle: RefCell<HashMap<PoolKey, Vec<Idle>, foldhash::fast::RandomState>>,
    max_idle: usize,
}

impl Pool {
    pub fn new(max_idle: usize) -> Self {
        Pool {
            idle: RefCell::new(HashMap::default()),
            max_idle,
        }
    }

    /// The most recently returned live connection to `key`, if any.
    pub fn take(&self, key: &PoolKey) -> Option<Box<UpstreamConn>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        while let Some(entry) = list.pop() {
            if now.duration_since(entry.since) < entry.idle_timeout
                && entry.conn.buf.is_empty()
                && (entry.conn.stream.quiet_since_last_read()
                    || idle_connection_usable(entry.conn.stream.as_raw_fd()))
            {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection after a complete exchange. Dropped (closed) when the pool for
    /// this key is full.
    pub fn put(&self, key: PoolKey, conn: Box<UpstreamConn>, idle_timeout: Duration) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() < self.max_idle && !idle_timeout.is_zero() {
            list.push(Idle {
                conn,
                since: Instant::now(),
                idle_timeout,
            });
        }
    }

    /// Closes connections idle past their timeout; the shard calls it periodically.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut closed = 0;
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            let before = list.len();
            list.retain(|e| now.duration_since(e.since) < e.idle_timeout);
            closed += before - list.len();
            !list.is_empty()
        });
        closed
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}
