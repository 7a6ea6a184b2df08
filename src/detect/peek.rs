//! Reading a ClientHello off a downstream socket until its SNI is known.
//!
//! Owns the read loop and its deadline; the verdict comes from
//! [`client_hello_sni`]. Every byte read stays in the caller's buffer so the
//! caller can replay it upstream unchanged: nothing here consumes or rewrites
//! data, and nothing here decides what to do with a verdict (routing does).

use std::cell::Cell;
use std::io;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::sni::{client_hello_sni, Peek};

/// Why no verdict could be reached; every case is the downstream's doing.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// The client sent no complete ClientHello in time (slowloris, or a
    /// server-speaks-first protocol on a TLS port).
    #[error("downstream sent no complete ClientHello within {0:?}")]
    TimedOut(Duration),
    /// The client closed after this many bytes, before a complete hello.
    #[error("downstream closed after {0} bytes, before a complete ClientHello")]
    Closed(usize),
    /// Reading from the client failed (reset, ...).
    #[error("reading the ClientHello from downstream failed: {0}")]
    Io(#[from] io::Error),
}

impl PeekError {
    /// Short reason for logs and close counters.
    pub fn reason(&self) -> &'static str {
        match self {
            PeekError::TimedOut(_) => "sni peek timeout",
            PeekError::Closed(_) => "closed during sni peek",
            PeekError::Io(_) => "read error during sni peek",
        }
    }
}

/// Reads from `stream` into `buf` until the ClientHello parser answers
/// something other than [`Peek::Incomplete`] (so never returns `Incomplete`).
///
/// Bytes already in `buf` count as received first. At most `cap` bytes are
/// read in total (a hello that does not fit answers [`Peek::TooLarge`]), and
/// the whole search is bounded by `deadline`. On return, `buf` holds exactly
/// the bytes received (also after a timeout or error), to be written upstream
/// before relaying. `buf` can be reused across connections: it grows to at
/// most `cap` and is never shrunk here.
pub async fn peek_sni(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Duration,
) -> Result<Peek, PeekError> {
    // Zero the buffer up to the cap once, read into its tail, and cut it
    // back to the bytes received at the end (also when the deadline drops
    // the read future). Resizing per read would zero-fill 16 KiB for every
    // byte a slow client trickles in.
    let filled = Cell::new(buf.len());
    if buf.len() < cap {
        buf.resize(cap, 0);
    }
    let verdict = future::or(read_until_verdict(stream, buf, cap, &filled), async {
        Timer::new(deadline).await;
        Err(PeekError::TimedOut(deadline))
    })
    .await;
    buf.truncate(filled.get());
    verdict
}

async fn read_until_verdict(
    stream: &mut TcpStream,
    buf: &mut [u8],
    cap: usize,
    filled: &Cell<usize>,
) -> Result<Peek, PeekError> {
    loop {
        let have = filled.get();
        let verdict = client_hello_sni(&buf[..have], cap);
        if verdict != Peek::Incomplete {
            return Ok(verdict);
        }
        // Incomplete implies fewer than `cap` bytes so far: room is left.
        match stream.read(&mut buf[have..cap]).await {
            Ok(0) => return Err(PeekError::Closed(have)),
            Ok(n) => filled.set(have + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PeekError::Io(e)),
        }
    }
}
