//! A fixed-capacity read buffer: bytes read from a socket and not yet consumed. Its capacity
//! never grows past the limit it was made with, so a slow or hostile peer cannot make the
//! gateway buffer without bound. A lazy buffer holds no memory until bytes arrive and can
//! give it back while empty, so an idle keep-alive connection costs a few hundred bytes.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

/// What a lazy buffer reads before it takes a buffer: a typical request head fits.
const FIRST_READ: usize = 1024;
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
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, src: &mut R) -> io::Result<usize> {
        if self.buf.is_empty() && self.cap > 0 {
            // Wait for the first bytes in a small array: an idle peer pins no buffer.
            let mut first = [0u8; FIRST_READ];
            let n = src.read(&mut first[..self.cap.min(FIRST_READ)]).await?;
            if n > 0 {
                self.buf = take(self.cap);
                self.buf[..n].copy_from_slice(&first[..n]);
                self.end = n;
            }
            return Ok(n);
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = src.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
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

    #[test]
    fn lazy_buffer_allocates_on_data_and_releases_when_empty() {
        let cap = FIRST_READ + 300;
        let mut b = ReadBuf::lazy(cap);
        let mut src: &[u8] = &[7u8; 2000][..];
        futures_lite::future::block_on(async {
            assert_eq!(b.fill(&mut src).await.unwrap(), FIRST_READ);
            assert_eq!(b.fill(&mut src).await.unwrap(), 300);
            assert!(b.is_full());
            b.release();
            assert_eq!(b.len(), cap, "a buffer holding data is kept");
            b.consume(cap);
            b.release();
            assert!(b.buf.is_empty(), "an empty buffer is given back");
            assert_eq!(b.fill(&mut src).await.unwrap(), 2000 - cap);
            assert_eq!(b.data(), &[7u8; 2000 - FIRST_READ - 300][..]);
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
