//! A fixed-capacity read buffer: bytes read from a socket and not yet consumed. Its capacity
//! never grows past the limit it was made with, so a slow or hostile peer cannot make the
//! gateway buffer without bound. A lazy buffer holds no memory until bytes arrive and can
//! give it back while empty, so an idle keep-alive connection costs a few hundred bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::AsyncRead;

/// Released buffers a thread keeps for reuse (a shard is a thread): allocating and zeroing
/// a 60 KiB head buffer per keep-alive request cost about 9 µs a request in the bench.
const POOL_MAX: usize = 256;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of exactly `cap` bytes, reused when this thread has one.
fn take(cap: usize) -> Box<[u8]> {
    let reused = POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let i = pool.iter().rposition(|b| b.len() == cap)?;
        Some(pool.swap_remove(i))
    });
    reused.unwrap_or_else(|| vec![0; cap].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    });
}

impl Drop for ReadBuf {
    /// A connection that ends with its buffer taken (a close after a request, an error)
    /// hands it back too: allocating and zeroing 60 KiB per new connection was the largest
    /// cost of a connection-per-request client (callgrind).
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            give_back(std::mem::take(&mut self.buf));
        }
    }
}

pub struct ReadBuf {
    /// Empty while a lazy buffer is released; else exactly `cap` bytes.
    buf: Box<[u8]>,
    cap: usize,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new(capacity: usize) -> Self {
        ReadBuf {
            buf: take(capacity),
            cap: capacity,
            start: 0,
            end: 0,
        }
    }

    /// A buffer of `capacity` that allocates on the first `fill` that returns bytes.
    pub fn lazy(capacity: usize) -> Self {
        ReadBuf {
            buf: Box::default(),
            cap: capacity,
            start: 0,
            end: 0,
        }
    }

    /// Gives the memory of an empty buffer back to this thread's pool (the next `fill`
    /// takes one again).
    pub fn release(&mut self) {
        if self.is_empty() && !self.buf.is_empty() {
            give_back(std::mem::take(&mut self.buf));
        }
    }

    /// Unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// True when no more bytes fit even after compaction.
    pub fn is_full(&self) -> bool {
        self.len() == self.cap
    }

    /// Reads once from `src` into free space (compacting first when the tail is full).
    /// Returns 0 at end of stream. Must not be called when `is_full()`.
    ///
    /// A released lazy buffer borrows one from the pool for each read attempt only and
    /// keeps it when bytes arrive: an idle peer pins no buffer, and the future holds no
    /// array of its own (every future that awaits a fill would carry it, and the
    /// per-request exchange is allocated and copied whole).
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, src: &mut R) -> io::Result<usize> {
        futures_lite::future::poll_fn(|cx| self.poll_fill(cx, src)).await
    }

    fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
    ) -> Poll<io::Result<usize>> {
        if self.buf.is_empty() && self.cap > 0 {
            // AsyncRead borrows the buffer for the call only, so it can go back on Pending.
            let mut buf = take(self.cap);
            let polled = Pin::new(&mut *src).poll_read(cx, &mut buf);
            if let Poll::Ready(Ok(n)) = polled {
                if n > 0 {
                    self.buf = buf;
                    self.start = 0;
                    self.end = n;
                    return polled;
                }
            }
            give_back(buf);
            return polled;
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let polled = Pin::new(&mut *src).poll_read(cx, &mut self.buf[self.end..]);
        if let Poll::Ready(Ok(n)) = polled {
            self.end += n;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_and_never_grows() {
        let mut b = ReadBuf::new(8);
        let mut src: &[u8] = b"abcdefghij";
        futures_lite::future::block_on(async {
            assert_eq!(b.fill(&mut src).await.unwrap(), 8);
            assert!(b.is_full());
            b.consume(5);
            assert_eq!(b.fill(&mut src).await.unwrap(), 2);
            assert_eq!(b.data(), b"fghij");
            assert_eq!(b.capacity(), 8);
        });
    }

    /// Pending once, then the bytes.
    struct Later(bool, &'static [u8]);
    impl AsyncRead for Later {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if !std::mem::replace(&mut self.0, true) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = self.1.len().min(out.len());
            out[..n].copy_from_slice(&self.1[..n]);
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn a_lazy_buffer_holds_no_memory_while_its_read_waits() {
        let mut b = ReadBuf::lazy(4096);
        let mut src = Later(false, b"GET / HTTP/1.1\r\n\r\n");
        futures_lite::future::block_on(async {
            let waiting = futures_lite::future::poll_once(b.fill(&mut src)).await;
            assert!(waiting.is_none());
            assert!(b.buf.is_empty(), "nothing pinned by a read that waits");
            assert_eq!(b.fill(&mut src).await.unwrap(), 18);
            assert_eq!(b.data(), b"GET / HTTP/1.1\r\n\r\n");
        });
    }

    #[test]
    fn lazy_buffer_allocates_on_data_and_releases_when_empty() {
        let cap = 1324;
        let mut b = ReadBuf::lazy(cap);
        let mut src: &[u8] = &[7u8; 2000][..];
        futures_lite::future::block_on(async {
            assert_eq!(b.fill(&mut src).await.unwrap(), cap);
            assert!(b.is_full());
            b.release();
            assert_eq!(b.len(), cap, "a buffer holding data is kept");
            b.consume(cap);
            b.release();
            assert!(b.buf.is_empty(), "an empty buffer is given back");
            assert_eq!(b.fill(&mut src).await.unwrap(), 2000 - cap);
            assert_eq!(b.data(), &[7u8; 2000 - 1324][..]);
            b.consume(b.len());
            b.release();
            // The next connection on this thread reuses the pooled buffer.
            let mut c = ReadBuf::lazy(cap);
            let mut more: &[u8] = b"x";
            assert_eq!(c.fill(&mut more).await.unwrap(), 1);
            assert_eq!(c.buf.len(), cap);
        });
    }
}
