//! Reading a ClientHello off a downstream socket until its SNI is known.
//!
//! Owns the read loop and its deadline; the verdict comes from
//! [`client_hello_sni`]. Every byte read stays in the caller's buffer so the
//! caller can replay it upstream unchanged: nothing here consumes or rewrites
//! data, and nothing here decides what to do with a verdict (routing does).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::sni::{client_hello_sni, Peek};
use crate::sys::socket;

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
/// most `cap` (plus the allocator's rounding) and is never shrunk here.
pub async fn peek_sni(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Duration,
) -> Result<Peek, PeekError> {
    // Reads go straight into the vector's spare capacity (no zero-filling
    // 16 KiB per connection), so `buf` always holds exactly the bytes
    // received, also when the deadline drops the read future.
    future::or(read_until_verdict(stream, buf, cap), async {
        Timer::new(deadline).await;
        Err(PeekError::TimedOut(deadline))
    })
    .await
}

/// Reads without waiting first (the hello has usually arrived with the
/// connection), and waits in io_uring with a 1-byte MSG_PEEK only on EAGAIN:
/// glommio's own `read` would arm an extra poll after every short read.
async fn read_until_verdict(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
) -> Result<Peek, PeekError> {
    let fd = stream.as_raw_fd();
    loop {
        let have = buf.len();
        let verdict = client_hello_sni(buf, cap);
        if verdict != Peek::Incomplete {
            return Ok(verdict);
        }
        // Incomplete implies fewer than `cap` bytes so far: room is left.
        match socket::recv_append(fd, buf, cap - have) {
            Ok(0) => return Err(PeekError::Closed(have)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut probe = [0u8; 1];
                stream.peek(&mut probe).await.map_err(io::Error::from)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PeekError::Io(e)),
        }
    }
}
