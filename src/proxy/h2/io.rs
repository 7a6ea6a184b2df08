//! A byte stream as the `h2` crate wants it (tokio's I/O traits) over the futures-io
//! streams glommio and futures-rustls give us. Downstream, the flood guard looks at every
//! byte the client sends before `h2` does; upstream there is no guard.
//!
//! Owns: the trait adaptation and feeding the guard.
//! Must not: buffer (reads land in `h2`'s buffer, writes go straight through).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

use super::guard::FrameGuard;

/// Bytes per read. Used only within one `poll_read` call (no await in between), so one
/// per shard serves every connection on it.
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

pub struct GuardedIo<S> {
    inner: S,
    guard: Option<Rc<RefCell<FrameGuard>>>,
}

impl<S> GuardedIo<S> {
    /// `guard` is shared with the connection driver, which ends the connection when it trips.
    pub fn new(inner: S, guard: Rc<RefCell<FrameGuard>>) -> Self {
        GuardedIo {
            inner,
            guard: Some(guard),
        }
    }

    /// No guard: a connection the gateway opened to an upstream.
    pub fn plain(inner: S) -> Self {
        GuardedIo { inner, guard: None }
    }
}

impl<S: AsyncRead + Unpin> tokio::io::AsyncRead for GuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this
            .guard
            .as_ref()
            .is_some_and(|g| g.borrow().tripped().is_some())
        {
            // The driver is sending GOAWAY: nothing more from this client is decoded.
            return Poll::Pending;
        }
        // Read into the shard's scratch buffer and copy what arrived: `h2` hands over a
        // fresh uninitialised window each time, and zeroing it (`initialize_unfilled`) cost
        // more than copying the few hundred bytes a read usually brings.
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let want = buf.remaining().min(scratch.len());
            let space = &mut scratch[..want];
            let n = match Pin::new(&mut this.inner).poll_read(cx, space) {
                Poll::Ready(Ok(n)) => n,
                other => return other.map(|r| r.map(|_| ())),
            };
            let flood = this
                .guard
                .as_ref()
                .map(|g| g.borrow_mut().scan(&space[..n], Instant::now()));
            if let Some(Err(_)) = flood {
                // Hold these bytes back from `h2` and wake the driver, which polls this
                // connection and checks the guard first.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            buf.put_slice(&space[..n]);
            Poll::Ready(Ok(()))
        })
    }
}

impl<S: AsyncWrite + Unpin> tokio::io::AsyncWrite for GuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
