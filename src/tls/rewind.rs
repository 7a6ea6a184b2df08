//! A stream that first yields bytes already read from it, then reads the socket: the
//! ClientHello peeked for SNI dispatch is replayed to rustls instead of being lost
//! (linkerd2-proxy's `PrefixedIo`/`Rewind` pattern).
//!
//! Owns: the replay buffer of one connection.
//! Must not: copy once the replay is drained (reads go straight to the socket).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

pub struct Rewind<S> {
    replay: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(replay: Vec<u8>, inner: S) -> Self {
        Rewind {
            replay,
            pos: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pos < this.replay.len() {
            let n = buf.len().min(this.replay.len() - this.pos);
            buf[..n].copy_from_slice(&this.replay[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.replay.len() {
                // Free the prefix: the connection may live for hours.
                this.replay = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;

    #[test]
    fn replay_comes_first_then_the_stream() {
        futures_lite::future::block_on(async {
            let inner = futures_lite::io::Cursor::new(b" world".to_vec());
            let mut r = Rewind::new(b"hello".to_vec(), inner);
            let mut small = [0u8; 3];
            assert_eq!(r.read(&mut small).await.expect("read"), 3);
            assert_eq!(&small, b"hel");
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.expect("read");
            assert_eq!(rest, b"lo world");
        });
    }

    #[test]
    fn empty_replay_reads_the_stream() {
        futures_lite::future::block_on(async {
            let inner = futures_lite::io::Cursor::new(b"abc".to_vec());
            let mut r = Rewind::new(Vec::new(), inner);
            let mut all = Vec::new();
            r.read_to_end(&mut all).await.expect("read");
            assert_eq!(all, b"abc");
        });
    }
}
