//! One load-generator connection's state machine: connect, write the request, frame the
//! response, record it, schedule the next request, replace the socket after a failure.
//!
//! Owns: per-connection buffers and the counters. Must not: poll or arm timers (the loop
//! in `super::run` does), nor block except for a loopback connect (bounded at 1 s).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use super::LoadSpec;
use crate::framing::{parse_response, Framing};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Next request due at `due` (open loop schedule, or reconnect back-off).
    Waiting,
    Writing,
    Reading,
}

pub(super) struct Conn {
    pub(super) stream: Option<TcpStream>,
    pub(super) state: State,
    pub(super) due: Instant,
    /// Latency base of the current request: intended send time (open) or send time (closed).
    pub(super) intended: Instant,
    /// Open loop: the following request's intended time.
    pub(super) next_at: Instant,
    pub(super) written: usize,
    // Reused for every response on this connection: nothing is allocated per request.
    pub(super) buf: Vec<u8>,
    pub(super) filled: usize,
}

const RECONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// Large enough for the `http-1mib` workload (1 MiB body plus headers).
const MAX_RESPONSE: usize = 4 << 20;

pub(super) struct Stats {
    pub(super) ok: u64,
    pub(super) status_errors: u64,
    pub(super) io_errors: u64,
    pub(super) reconnects: u64,
    pub(super) hist: Histogram<u64>,
}

pub(super) struct Gen<'a> {
    pub(super) spec: &'a LoadSpec,
    pub(super) poll: Poll,
    pub(super) conns: Vec<Conn>,
    pub(super) stats: Stats,
    pub(super) in_window: bool,
    /// Open loop: each connection's interval between intended sends.
    pub(super) per_conn_interval: Option<Duration>,
}

impl Stats {
    /// Forgets the warm-up; the histogram keeps its allocation.
    pub(super) fn reset(&mut self) {
        self.ok = 0;
        self.status_errors = 0;
        self.io_errors = 0;
        self.reconnects = 0;
        self.hist.reset();
    }
}

impl Gen<'_> {
    fn connect(&mut self, i: usize) -> io::Result<()> {
        let std = std::net::TcpStream::connect_timeout(&self.spec.addr, Duration::from_secs(1))?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std);
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns[i].stream = Some(stream);
        Ok(())
    }

    pub(super) fn begin_request(&mut self, i: usize, now: Instant) {
        if self.conns[i].stream.is_none() && self.connect(i).is_err() {
            self.count_io_error();
            // The request stays due; in open loop its latency keeps counting from `intended`.
            self.conns[i].due = now + RECONNECT_BACKOFF;
            return;
        }
        let c = &mut self.conns[i];
        if self.per_conn_interval.is_none() {
            c.intended = now;
        }
        c.state = State::Writing;
        c.written = 0;
        self.write(i, now);
    }

    pub(super) fn write(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let req = &self.spec.request;
        while c.written < req.len() {
            match stream.write(&req[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(i, now),
            }
        }
        c.state = State::Reading;
        c.filled = 0;
        // No read here: the response's arrival is an edge epoll reports on the next poll, and
        // not reading inline keeps read -> next request -> read from recursing.
    }

    pub(super) fn read(&mut self, i: usize, now: Instant) {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            if c.filled == c.buf.len() {
                if c.buf.len() >= MAX_RESPONSE {
                    return self.fail(i, now);
                }
                let grown = c.buf.len() * 2;
                c.buf.resize(grown, 0);
            }
            match stream.read(&mut c.buf[c.filled..]) {
                Ok(0) => return self.fail(i, now),
                Ok(n) => c.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.fail(i, now),
            }
            match parse_response(&c.buf[..c.filled]) {
                Framing::Incomplete => continue,
                Framing::Invalid(_) => return self.fail(i, now),
                Framing::Complete { len, .. } if len != c.filled => {
                    // Bytes past the response we asked for: nothing was pipelined.
                    return self.fail(i, now);
                }
                Framing::Complete { status, close, .. } => {
                    let done = Instant::now();
                    if self.in_window {
                        if (200..300).contains(&status) {
                            self.stats.ok += 1;
                            let ns = done.saturating_duration_since(c.intended).as_nanos();
                            self.stats.hist.saturating_record(ns.max(1) as u64);
                        } else {
                            self.stats.status_errors += 1;
                        }
                    }
                    if close {
                        self.drop_stream(i);
                        if self.in_window {
                            self.stats.reconnects += 1;
                        }
                    }
                    return self.schedule_next(i, done, true);
                }
            }
        }
    }

    /// A readable event on a connection with no request in flight: a clean close by the peer
    /// (keep-alive timeout) or stray bytes.
    pub(super) fn check_idle(&mut self, i: usize) {
        let Some(stream) = self.conns[i].stream.as_mut() else {
            return;
        };
        let mut probe = [0u8; 64];
        match stream.read(&mut probe) {
            Ok(0) => {
                self.drop_stream(i);
                if self.in_window {
                    self.stats.reconnects += 1;
                }
            }
            Ok(_) => {
                self.drop_stream(i);
                self.count_io_error();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.drop_stream(i);
                self.count_io_error();
            }
        }
    }

    /// `start_now`: send at once if due; false leaves it to the main loop (after a failure,
    /// so that connect -> fail -> connect cannot recurse).
    fn schedule_next(&mut self, i: usize, now: Instant, start_now: bool) {
        let c = &mut self.conns[i];
        c.state = State::Waiting;
        match self.per_conn_interval {
            None => {
                c.due = now;
                if start_now {
                    self.begin_request(i, now);
                }
            }
            Some(interval) => {
                c.intended = c.next_at;
                c.next_at += interval;
                c.due = c.intended;
                if start_now && c.due <= now {
                    self.begin_request(i, now);
                }
            }
        }
    }

    /// The request in flight is lost (counted); the connection is replaced.
    fn fail(&mut self, i: usize, now: Instant) {
        self.drop_stream(i);
        self.count_io_error();
        self.schedule_next(i, now, false);
    }

    fn drop_stream(&mut self, i: usize) {
        if let Some(mut s) = self.conns[i].stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }

    fn count_io_error(&mut self) {
        if self.in_window {
            self.stats.io_errors += 1;
        }
    }
}
