//! Handing raw file descriptors to glommio, and advice about a file's cached pages.

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

/// Asks the kernel to drop `file`'s cached pages in `[offset, offset + len)`
/// (`posix_fadvise(POSIX_FADV_DONTNEED)`): dirty pages in the range are queued for
/// writeback and stay cached; clean ones are freed.
pub fn drop_cached(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: `file` is an open descriptor borrowed for the call; posix_fadvise reads
    // only its integer arguments and touches no memory of ours.
    let ret =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    // posix_fadvise returns the error number instead of setting errno.
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(ret))
    }
}
