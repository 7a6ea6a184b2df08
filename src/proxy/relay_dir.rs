//! One direction of a passthrough relay: bytes from one socket to the other
//! until EOF, then the half-close passed on.
//!
//! Like haproxy's `splice-auto`, a direction starts by moving bytes through
//! the shard's scratch buffer (recv then send, no pipe: what a TLS handshake
//! or a short exchange needs). Once a read fills the buffer or a write has to
//! wait, the transfer is bulk: it goes on in the splice loop (socket -> pipe
//! -> socket, all in the kernel) with a pipe from the shard's pool, or in the
//! copy loop (a buffer of its own) when splice is off or unsupported. It does not decide when
//! the connection ends as a whole (idle timeout, the other direction's
//! failure): `passthrough::relay` does, by dropping this future.
//!
//! Every call is tried first without waiting (splice with the sockets
//! O_NONBLOCK, recv/send with MSG_DONTWAIT); only EAGAIN arms a glommio wait.
//! glommio 0.9 has no readiness API, so waiting uses what it has: a 1-byte
//! MSG_PEEK (`TcpStream::peek`, `&self`) until the source is readable, and a
//! `write_all` of the bytes that did not fit until the destination is
//! writable. `write_all` needs a `&mut TcpStream` of its own, which the
//! direction reading from that socket cannot share, so a direction makes one
//! (a `dup`) the first time a write has to wait: short connections, whose
//! writes never wait, cost no dup, close or extra io_uring poll.

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::passthrough::Side;
use super::pipe_pool::{PipePool, PooledPipe};
use crate::sys::{socket, splice};

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

/// Why a direction stopped early.
#[derive(Debug)]
pub(crate) enum DirError {
    /// Reading from or writing to `side` failed.
    Side { side: Side, error: io::Error },
    /// egressd could not make the write handle it needed (out of fds).
    Local(io::Error),
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
        DirError::Side {
            side: self.from,
            error,
        }
    }
    fn dest_err(self, error: io::Error) -> DirError {
        DirError::Side {
            side: self.to,
            error,
        }
    }
}

/// The destination of a direction: the socket (shared with the direction
/// reading from it) and, once a write had to wait, a `dup` of it to wait with.
struct Dest<'s> {
    sock: &'s TcpStream,
    waiter: Option<TcpStream>,
    way: Way,
}

impl Dest<'_> {
    /// Writes all of `bytes`: first without waiting, then, if the socket's
    /// send buffer is full, through glommio's `write_all`, which waits.
    async fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), DirError> {
        while !bytes.is_empty() {
            match socket::send_nowait(self.sock.as_raw_fd(), bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let waiter = match &mut self.waiter {
                        Some(w) => w,
                        None => self
                            .waiter
                            .insert(socket::dup_stream(self.sock).map_err(DirError::Local)?),
                    };
                    return waiter
                        .write_all(bytes)
                        .await
                        .map_err(|e| self.way.dest_err(e));
                }
                Err(e) => return Err(self.way.dest_err(e)),
            }
        }
        Ok(())
    }
}

/// Writes `replay` to `to`, moves everything from `from` to `to` until EOF,
/// then shuts down `to`'s write side so the peer sees the half-close. Bulk
/// transfers splice through a pipe of `pool` when `splice` is on.
pub(crate) async fn run(
    from: &TcpStream,
    to: &TcpStream,
    way: Way,
    replay: &[u8],
    pool: &PipePool,
    splice: bool,
    meter: Meter<'_>,
) -> Result<(), DirError> {
    let mut dest = Dest {
        sock: to,
        waiter: None,
        way,
    };
    if !replay.is_empty() {
        dest.write_all(replay).await?;
        meter.read(replay.len(), false);
    }
    if !small_loop(from, &mut dest, pool, &meter).await? {
        let pipe = if splice {
            take_pipe(from, to, pool)
        } else {
            None
        };
        let spliced = match pipe {
            Some(mut pipe) => splice_loop(from, &mut dest, &mut pipe, &meter).await?,
            None => false,
        };
        if !spliced {
            copy_loop(from, &mut dest, &meter).await?;
        }
    }
    match to.shutdown(Shutdown::Write).await.map_err(io::Error::from) {
        // The peer may be gone already; the other direction will say so.
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(way.dest_err(e)),
        _ => Ok(()),
    }
}

/// What one pass through the scratch buffer did.
enum Step {
    /// EOF from the source.
    Eof,
    /// Nothing to read yet.
    Empty,
    /// `n` bytes read and all sent; `full` when they filled the buffer.
    Moved { n: usize, full: bool },
    /// `n` bytes read; the destination took only part, the rest is left.
    Blocked { n: usize, left: Vec<u8> },
}

/// Moves bytes through the shard's scratch buffer while they come in small
/// pieces. `Ok(true)` at EOF; `Ok(false)` once the transfer looks bulk (a
/// read filled the buffer, or a write had to wait, its rest sent by then).
async fn small_loop(
    from: &TcpStream,
    to: &mut Dest<'_>,
    pool: &PipePool,
    meter: &Meter<'_>,
) -> Result<bool, DirError> {
    let (src, dst, way) = (from.as_raw_fd(), to.sock.as_raw_fd(), to.way);
    let mut budget = Budget::default();
    // A relay starts when neither side has anything to say yet (the client
    // waits for the ServerHello, the server has just got the ClientHello):
    // wait first. glommio's peek tries a nonblocking MSG_PEEK before arming
    // io_uring, so this costs one call where recv-then-wait costs two.
    wait_readable(from).await.map_err(|e| way.source_err(e))?;
    loop {
        // The borrow ends with this statement: nothing awaits while it lives.
        let step = forward_once(src, dst, &mut pool.scratch(), way)?;
        match step {
            Step::Eof => return Ok(true),
            Step::Empty => wait_readable(from).await.map_err(|e| way.source_err(e))?,
            Step::Moved { n, full } => {
                meter.read(n, false);
                meter.wrote();
                if full {
                    return Ok(false);
                }
                budget.spend(n).await;
            }
            Step::Blocked { n, left } => {
                meter.read(n, false);
                to.write_all(&left).await?;
                meter.wrote();
                return Ok(false);
            }
        }
    }
}

/// One recv into `buf` and as much of a send as the destination takes now,
/// without waiting. The rest of a partial send is copied out (bulk only).
fn forward_once(src: RawFd, dst: RawFd, buf: &mut [u8], way: Way) -> Result<Step, DirError> {
    let n = loop {
        match socket::recv_nowait(src, buf) {
            Ok(0) => return Ok(Step::Eof),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Empty),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(way.source_err(e)),
        }
    };
    let mut sent = 0;
    while sent < n {
        match socket::send_nowait(dst, &buf[sent..n]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = buf[sent..n].to_vec();
                return Ok(Step::Blocked { n, left });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(way.dest_err(e)),
        }
    }
    Ok(Step::Moved {
        n,
        full: n == buf.len(),
    })
}

/// A pipe for a bulk transfer, with both sockets made O_NONBLOCK (splice has
/// no per-call flag for the socket side; a blocking socket would block the
/// shard). None, to copy instead, when that fails or no pipe can be had.
fn take_pipe<'p>(from: &TcpStream, to: &TcpStream, pool: &'p PipePool) -> Option<PooledPipe<'p>> {
    for s in [from, to] {
        if let Err(e) = socket::set_nonblocking(s.as_raw_fd(), true) {
            tracing::warn!(error = %e, "cannot make socket nonblocking, copying instead of splicing");
            return None;
        }
    }
    match pool.get() {
        Ok(pipe) => Some(pipe),
        Err(e) => {
            tracing::warn!(error = %e, "no pipe for splice, copying instead");
            None
        }
    }
}

/// Splices until EOF (`Ok(true)`), or returns `Ok(false)` right away if the
/// kernel cannot splice these sockets, so the caller copies instead.
async fn splice_loop(
    from: &TcpStream,
    to: &mut Dest<'_>,
    pipe: &mut PooledPipe<'_>,
    meter: &Meter<'_>,
) -> Result<bool, DirError> {
    let way = to.way;
    let src = from.as_raw_fd();
    let pipe_w = pipe.pipe().write_fd();
    // Ask for a whole pipe per call: the kernel moves what is there.
    let chunk = pipe.pipe().size();
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
        drain(pipe, to, meter).await?;
    }
}

/// Empties the pipe into `to`.
async fn drain(
    pipe: &mut PooledPipe<'_>,
    to: &mut Dest<'_>,
    meter: &Meter<'_>,
) -> Result<(), DirError> {
    let (way, dst, pipe_r) = (to.way, to.sock.as_raw_fd(), pipe.pipe().read_fd());
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
                to.write_all(&byte[..n]).await?;
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

async fn copy_loop(from: &TcpStream, to: &mut Dest<'_>, meter: &Meter<'_>) -> Result<(), DirError> {
    let way = to.way;
    let mut buf = vec![0u8; COPY_BUF];
    let mut budget = Budget::default();
    loop {
        let n = match socket::recv_nowait(from.as_raw_fd(), &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(from).await.map_err(|e| way.source_err(e))?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(way.source_err(e)),
        };
        meter.read(n, false);
        to.write_all(&buf[..n]).await?;
        meter.wrote();
        budget.spend(n).await;
    }
}
