//! A fixed-capacity read buffer: bytes read from a socket and not yet consumed. Its capacity
//! never grows past the limit it was made with, so a slow or hostile peer cannot make the
//! gateway buffer without bound.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

pub struct ReadBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn new(capacity: usize) -> Self {
        ReadBuf {
            buf: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
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
        self.buf.len()
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
        self.len() == self.buf.len()
    }

    /// Reads once from `src` into free space (compacting first when the tail is full).
    /// Returns 0 at end of stream. Must not be called when `is_full()`.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, src: &mut R) -> io::Result<usize> {
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
}
