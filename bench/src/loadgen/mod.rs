//! Load generator: one thread, one epoll loop (mio) over N keep-alive HTTP/1.1 connections.
//!
//! Two modes. Closed loop: each connection sends its next request as soon as the previous
//! response is complete (peak req/s; latency from the actual send). Open loop (the wrk2
//! model): connection k's requests are due on a fixed schedule, all connections together
//! offering `rate` req/s; latency is measured from the *intended* send time, so a request
//! that waits for a busy connection carries that wait (no coordinated omission).
//!
//! Owns: sockets, the schedule, response framing calls and the latency histogram.
//! Must not: spawn processes, pin threads or know about targets; the caller pins the thread
//! and measures process CPU at the window edges through the hook.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::sys::TimerFd;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed,
    Open { rate: f64 },
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// The fixed request, e.g. `GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n`.
    pub request: Vec<u8>,
    pub connections: usize,
    /// Traffic before the measured window (connections, pools and caches warm up).
    pub warmup: Duration,
    pub duration: Duration,
    pub mode: Mode,
}

/// The two edges of the measured window, for the caller's CPU snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Start,
    End,
}

#[derive(Debug, Clone)]
pub struct LoadResult {
    /// 2xx responses completed in the window.
    pub ok: u64,
    /// Non-2xx responses completed in the window.
    pub status_errors: u64,
    /// Connect failures, resets, EOF mid-response, unframeable responses.
    pub io_errors: u64,
    /// Connections the peer closed cleanly (`Connection: close`, idle close).
    pub reconnects: u64,
    pub elapsed: Duration,
    /// Latency of 2xx responses in nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn errors(&self) -> u64 {
        self.status_errors + self.io_errors
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load generator setup failed (local fault): {0}")]
    Setup(#[source] io::Error),
    #[error("invalid load spec (caller's fault): {0}")]
    Spec(&'static str),
}

mod conn;

use conn::{Conn, Gen, State, Stats};

const TIMER: Token = Token(usize::MAX - 1);

/// Runs the workload until warmup + duration has passed or `stop` is set.
pub fn run(
    spec: &LoadSpec,
    stop: &AtomicBool,
    hook: &mut dyn FnMut(Edge),
) -> Result<LoadResult, LoadError> {
    if spec.connections == 0 || spec.request.is_empty() {
        return Err(LoadError::Spec(
            "need at least one connection and a request",
        ));
    }
    let per_conn_interval = match spec.mode {
        Mode::Closed => None,
        Mode::Open { rate } if rate.is_finite() && rate > 0.0 => {
            Some(Duration::from_secs_f64(spec.connections as f64 / rate))
        }
        Mode::Open { .. } => return Err(LoadError::Spec("open-loop rate must be > 0")),
    };
    let hist = Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|_| LoadError::Spec("histogram bounds"))?;
    let poll = Poll::new().map_err(LoadError::Setup)?;
    let timer = TimerFd::new().map_err(LoadError::Setup)?;
    // Best effort: without it the schedule is merely up to ~50 µs late.
    let _ = crate::sys::minimize_timer_slack();
    poll.registry()
        .register(&mut SourceFd(&timer.raw_fd()), TIMER, Interest::READABLE)
        .map_err(LoadError::Setup)?;

    let start = Instant::now();
    let spacing = per_conn_interval.map_or(Duration::ZERO, |i| i / spec.connections as u32);
    let conns = (0..spec.connections)
        .map(|k| {
            let first = start + spacing * k as u32;
            Conn {
                stream: None,
                state: State::Waiting,
                due: first,
                intended: first,
                next_at: first + per_conn_interval.unwrap_or(Duration::ZERO),
                written: 0,
                buf: vec![0; 16 * 1024],
                filled: 0,
            }
        })
        .collect();
    let stats = Stats {
        ok: 0,
        status_errors: 0,
        io_errors: 0,
        reconnects: 0,
        hist,
    };
    let mut g = Gen {
        spec,
        poll,
        conns,
        stats,
        in_window: false,
        per_conn_interval,
    };

    let window_start_at = start + spec.warmup;
    let end_at = window_start_at + spec.duration;
    let mut window_started = start;
    let mut events = Events::with_capacity(1024);
    let mut armed: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if !g.in_window && now >= window_start_at {
            g.stats.reset();
            hook(Edge::Start);
            g.in_window = true;
            window_started = Instant::now();
        }
        if now >= end_at || stop.load(Ordering::Relaxed) {
            break;
        }
        let mut earliest: Option<Instant> = None;
        for i in 0..g.conns.len() {
            if g.conns[i].state != State::Waiting {
                continue;
            }
            if g.conns[i].due <= now {
                g.begin_request(i, now);
            } else {
                earliest = Some(earliest.map_or(g.conns[i].due, |e| e.min(g.conns[i].due)));
            }
        }
        if let Some(at) = earliest {
            if armed != Some(at) {
                timer
                    .arm_after(at.saturating_duration_since(Instant::now()))
                    .map_err(LoadError::Setup)?;
                armed = Some(at);
            }
        }
        let edge = if g.in_window { end_at } else { window_start_at };
        let timeout = edge
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        if let Err(e) = g.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(LoadError::Setup(e));
            }
        }
        for ev in events.iter() {
            if ev.token() == TIMER {
                timer.drain();
                armed = None;
                continue;
            }
            let i = ev.token().0;
            let now = Instant::now();
            match g.conns[i].state {
                State::Writing if ev.is_writable() || ev.is_error() => g.write(i, now),
                State::Reading => g.read(i, now),
                State::Waiting => g.check_idle(i),
                State::Writing => {}
            }
        }
    }
    hook(Edge::End);
    let elapsed = if g.in_window {
        window_started.elapsed()
    } else {
        Duration::ZERO
    };
    let Stats {
        ok,
        status_errors,
        io_errors,
        reconnects,
        hist,
    } = g.stats;
    Ok(LoadResult {
        ok,
        status_errors,
        io_errors,
        reconnects,
        elapsed,
        latency_ns: hist,
    })
}
