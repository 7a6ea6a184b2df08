//! The upstream side of an HTTP exchange is plain TCP or TLS (origination); this enum lets
//! the pool and the exchange treat both alike. Also: naming why a handshake failed, for
//! the `ssl.*` counters and the logs.
//!
//! Owns: `UpstreamStream` (I/O delegation, the raw fd for the pool's liveness probe) and
//! `classify`.
//! Must not: perform handshakes (`origination` and `proxy::terminate` do).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;

use crate::obs::stats_tls::HandshakeFailure;
use crate::proxy::wire_pool::Wire;

pub enum UpstreamStream {
    Plain(TcpStream),
    /// Boxed: the rustls connection state is large and most pools hold plain streams.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsRawFd for UpstreamStream {
    /// The socket's fd: the pool probes it with MSG_PEEK. For TLS, a record waiting there
    /// (close_notify, an alert) is correctly seen as "do not reuse".
    fn as_raw_fd(&self) -> RawFd {
        match self {
            UpstreamStream::Plain(s) => s.as_raw_fd(),
            UpstreamStream::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }
}

impl UpstreamStream {
    /// True when the socket has been quiet since the last read (glommio's readiness poll
    /// from that read is still pending): the pool can reuse it without a probe syscall.
    pub fn quiet_since_last_read(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.quiet_since_last_read(),
            UpstreamStream::Tls(s) => s.get_ref().0.quiet_since_last_read(),
        }
    }

    /// Writes all of `bytes` as io_uring SENDs that join the shard's next submission batch
    /// (glommio's `send_batched`, an egressd patch) instead of `send` syscalls made at once:
    /// the requests of every connection served in one executor turn reach the kernel in
    /// one `io_uring_enter`. An origin sharing the core is then woken once per batch
    /// instead of preempting the shard once per request (perf-results/2026-11-27-http.md).
    /// On TLS, rustls encrypts into the same kind of buffer, sent the same way.
    pub async fn write_all_batched(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut wire = Wire::take();
        match self {
            UpstreamStream::Plain(s) => {
                wire.extend_from_slice(bytes);
                send_all_batched(s, &mut wire).await
            }
            UpstreamStream::Tls(s) => {
                let (tcp, tls) = s.get_mut();
                let mut rest = bytes;
                // rustls takes what fits under its buffer limit each time round.
                while !rest.is_empty() || tls.wants_write() {
                    let n = std::io::Write::write(&mut tls.writer(), rest)?;
                    if n == 0 && !rest.is_empty() && !tls.wants_write() {
                        // Nothing taken and nothing to send (the session is closing).
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    rest = &rest[n..];
                    wire.clear();
                    while tls.wants_write() {
                        tls.write_tls(&mut *wire)?;
                    }
                    send_all_batched(tcp, &mut wire).await?;
                }
                Ok(())
            }
        }
    }
}

/// Sends all of `wire` with one batched SEND, which owns the bytes until the kernel is done
/// with them. A short count (only on error or a closed peer) falls back to ordinary writes.
async fn send_all_batched(stream: &mut TcpStream, wire: &mut Wire) -> io::Result<()> {
    use futures_lite::AsyncWriteExt;
    if wire.is_empty() {
        return Ok(());
    }
    let (result, owned) = stream.send_batched(std::mem::take(&mut **wire)).await;
    **wire = owned;
    let sent = result?;
    if sent < wire.len() {
        stream.write_all(&wire[sent..]).await?;
    }
    Ok(())
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_close(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// The rustls error inside an I/O error from a handshake, if there is one.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Which `ssl.*` counter a failed handshake feeds.
pub fn classify(e: &io::Error) -> HandshakeFailure {
    use rustls::{CertificateError as C, Error as E};
    match rustls_error(e) {
        Some(E::NoCertificatesPresented) => HandshakeFailure::NoPeerCertificate,
        Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            HandshakeFailure::SanMismatch
        }
        Some(E::InvalidCertificate(_)) => HandshakeFailure::VerifyError,
        // The peer refused *our* certificate: its alert arrives as AlertReceived.
        Some(E::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown,
        )) => HandshakeFailure::VerifyError,
        Some(E::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
            HandshakeFailure::NoPeerCertificate
        }
        _ => HandshakeFailure::ConnectionError,
    }
}
