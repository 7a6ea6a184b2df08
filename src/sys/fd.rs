//! Handing raw file descriptors to glommio.

use std::os::fd::{FromRawFd, RawFd};

use glommio::net::TcpListener;

/// Wraps a listening socket in a glommio listener bound to the current executor.
pub fn listener_from_fd(fd: RawFd) -> TcpListener {
    // SAFETY: the caller passes a listening TCP socket it owns and gives up (from
    // `Socket::into_raw_fd`); the listener becomes its only owner and closes it on drop.
    unsafe { TcpListener::from_raw_fd(fd) }
}
