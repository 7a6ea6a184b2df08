//! One direction of a passthrough relay: bytes from one socket to the other
//! until EOF, then the half-close passed on.
//!
//! Owns the splice loop (socket -> pipe -> socket, all in the kernel) and the
//! copy loop used when splice is off or unsupported. It does not decide when
//! the connection ends as a whole (idle timeout, the other direction's
//! failure): `passthrough::relay` does, by dropping this future.
//!
//! glommio 0.9 has no readiness API, so waiting uses what it has: a 1-byte
//! MSG_PEEK (`TcpStream::peek`) to wait until the source is readable, and
//! `write_all` of one byte taken out of the pipe to wait until the
//! destination is writable. Both sockets must already be O_NONBLOCK.

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::passthrough::Side;
use super::pipe_pool::PooledPipe;
use crate::sys::splice;

/// Copy-mode buffer, allocated once per direction: fixed memory per
/// connection however much flows through it.
const COPY_BUF: usize = 64 * 1024;

/// Bytes a direction may move before it yields to the executor. Without
/// it, a sender faster than the relay keeps the loop busy forever (every
/// splice and read succeeds at once) and starves the other direction of the
/// same connection and every other connection of the shard.
const YIELD_EVERY: u64 = 1 << 20;

/// Counts bytes moved since the last yield and yields when over budget.
#[derive(Default)]
struct Budget(u64);

impl Budget {
    async fn spend(&mut self, n: usize) {
        self.0 += n as u64;
        if self.0 >= YIELD_EVERY {
            self.0 = 0;
            futures_lite::future::yield_now().await;
        }
    }
}

/// A failure on one side of the connection.
#[derive(Debug)]
pub(crate) struct DirError {
    pub side: Side,
    pub error: io::Error,
}

/// Counters a direction updates as bytes move; shared with the relay.
pub(crate) struct Meter<'a> {
    /// Bytes read from the source (the replay included).
    pub bytes: &'a Cell<u64>,
    /// Of those, bytes that went through a pipe.
    pub spliced: &'a Cell<u64>,
    /// Last time bytes moved either way, for the idle timeout.
    pub last_activity: &'a Cell<Instant>,
}

impl Meter<'_> {
    fn read(&self, n: usize, spliced: bool) {
        self.bytes.set(self.bytes.get() + n as u64);
        if spliced {
            self.spliced.set(self.spliced.get() + n as u64);
        }
        self.last_activity.set(Instant::now());
    }

    fn wrote(&self) {
        self.last_activity.set(Instant::now());
    }
}

/// Which way this direction runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Way {
    pub from: Side,
    pub to: Side,
}

impl Way {
    fn source_err(self, error: io::Error) -> DirError {
        DirError {
            side: self.from,
            error,
        }
    }
    fn dest_err(self, error: io::Error) -> DirError {
        DirError {
            side: self.to,
            error,
        }
    }
}

/// Writes `replay` to `to`, moves everything from `from` to `to` until EOF,
/// then shuts down `to`'s write side so the peer sees the half-close.
pub(crate) async fn run(
    mut from: TcpStream,
    mut to: TcpStream,
    way: Way,
    replay: &[u8],
    pipe: Option<PooledPipe<'_>>,
    meter: Meter<'_>,
) -> Result<(), DirError> {
    if !replay.is_empty() {
        to.write_all(replay).await.map_err(|e| way.dest_err(e))?;
        meter.read(replay.len(), false);
    }
    let spliced = match pipe {
        Some(mut pipe) => splice_loop(&from, &mut to, way, &mut pipe, &meter).await?,
        None => false,
    };
    if !spliced {
        copy_loop(&mut from, &mut to, way, &meter).await?;
    }
    match to.shutdown(Shutdown::Write).await.map_err(io::Error::from) {
        // The peer may be gone already; the other direction will say so.
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(way.dest_err(e)),
        _ => Ok(()),
    }
}

/// Splices until EOF (`Ok(true)`), or returns `Ok(false)` right away if the
/// kernel cannot splice these sockets, so the caller copies instead.
async fn splice_loop(
    from: &TcpStream,
    to: &mut TcpStream,
    way: Way,
    pipe: &mut PooledPipe<'_>,
    meter: &Meter<'_>,
) -> Result<bool, DirError> {
    let (src, dst) = (from.as_raw_fd(), to.as_raw_fd());
    let (pipe_r, pipe_w) = (pipe.pipe().read_fd(), pipe.pipe().write_fd());
    // Ask for a whole pipe per call: the kernel moves what is there.
    let chunk = pipe.pipe().size().unwrap_or(64 * 1024);
    let mut first = true;
    let mut budget = Budget::default();
    loop {
        match splice::socket_to_pipe(src, pipe_w, chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                pipe.filled(n);
                meter.read(n, true);
                budget.spend(n).await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(from).await.map_err(|e| way.source_err(e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if first && splice::is_unsupported(&e) => {
                tracing::debug!(error = %e, "splice unsupported here, copying instead");
                return Ok(false);
            }
            Err(e) => return Err(way.source_err(e)),
        }
        first = false;
        drain(pipe, to, dst, pipe_r, way, meter).await?;
    }
}

/// Empties the pipe into `to`.
async fn drain(
    pipe: &mut PooledPipe<'_>,
    to: &mut TcpStream,
    dst: RawFd,
    pipe_r: RawFd,
    way: Way,
    meter: &Meter<'_>,
) -> Result<(), DirError> {
    while pipe.queued() > 0 {
        match splice::pipe_to_socket(pipe_r, dst, pipe.queued()) {
            Ok(0) => return Err(way.dest_err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                pipe.drained(n);
                meter.wrote();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Send buffer full. glommio waits for writability only inside
                // a write, so hand it one byte of the pipe: when it returns,
                // the socket has room and splicing resumes.
                let mut byte = [0u8; 1];
                let n = match pipe.pipe().read(&mut byte) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(way.dest_err(e)),
                };
                pipe.drained(n);
                to.write_all(&byte[..n])
                    .await
                    .map_err(|e| way.dest_err(e))?;
                meter.wrote();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(way.dest_err(e)),
        }
    }
    Ok(())
}

/// Resolves when `from` has bytes or EOF to read (the 1-byte MSG_PEEK waits
/// in io_uring and consumes nothing).
async fn wait_readable(from: &TcpStream) -> io::Result<()> {
    let mut probe = [0u8; 1];
    from.peek(&mut probe)
        .await
        .map(drop)
        .map_err(io::Error::from)
}

async fn copy_loop(
    from: &mut TcpStream,
    to: &mut TcpStream,
    way: Way,
    meter: &Meter<'_>,
) -> Result<(), DirError> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut budget = Budget::default();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(way.source_err(e)),
        };
        meter.read(n, false);
        to.write_all(&buf[..n]).await.map_err(|e| way.dest_err(e))?;
        meter.wrote();
        budget.spend(n).await;
    }
}
