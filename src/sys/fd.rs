//! Handing raw file descriptors to glommio.

use std::os::fd::{FromRawFd, RawFd};

use glommio::net::TcpListener;

/// Wraps a listening socket in a glommio listener bound to the current executor.
pub fn listener_from_fd(fd: RawFd) -> TcpListener {
    // SAFETY: the caller passes a listening TCP socket it owns and gives up (from
    // `Socket::into_raw_fd`); the listener becomes its only owner and closes it on drop.
    unsafe { TcpListener::from_raw_fd(fd) }
}

/// Wraps a connected TCP socket (accepted outside glommio, blocking, as glommio expects)
/// in a glommio stream bound to the current executor.
pub fn stream_from_fd(fd: std::os::fd::OwnedFd) -> glommio::net::TcpStream {
    use std::os::fd::IntoRawFd;
    // SAFETY: `OwnedFd` proves the caller owned this open socket; `into_raw_fd` gives that
    // ownership up, so the stream is its only owner and closes it on drop.
    unsafe { glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd()) }
}
