//! A fixed-capacity read buffer: bytes read from a socket and not yet consumed. Its capacity
//! never grows past the limit it was made with, so a slow or hostile peer cannot make the
//! gateway buffer without bound. A lazy buffer holds no memory until bytes arrive and can
//! give it back while empty, so an idle keep-alive connection costs a few hundred bytes.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

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
            buf: vec![0; capacity].into_boxed_slice(),
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

    /// Frees the memory of an empty buffer (the next `fill` allocates it again).
    pub fn release(&mut self) {
        if self.is_empty() {
            self.buf = Box::default();
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
            let mut first = [0u8; 256];
            let n = src.read(&mut first[..self.cap.min(256)]).await?;
            if n > 0 {
                self.buf = vec![0; self.cap].into_boxed_slice();
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
        let mut b = ReadBuf::lazy(300);
        let mut src: &[u8] = &[7u8; 400];
        futures_lite::future::block_on(async {
            assert_eq!(b.fill(&mut src).await.unwrap(), 256);
            assert_eq!(b.fill(&mut src).await.unwrap(), 44);
            assert!(b.is_full());
            assert_eq!(b.data(), &[7u8; 300][..]);
            b.release();
            assert_eq!(b.len(), 300, "a buffer holding data is kept");
            b.consume(300);
            b.release();
            assert_eq!(b.fill(&mut src).await.unwrap(), 100);
            assert_eq!(b.data(), &[7u8; 100][..]);
        });
    }
}
