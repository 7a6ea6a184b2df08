//! The only `unsafe` in egressd: thin wrappers over Linux system calls that
//! neither std, socket2 nor glommio 0.9 expose (pipes, splice, fd flags).
//!
//! Each wrapper turns a raw return value into `io::Result` and says in a
//! `// SAFETY:` comment why the call is sound. Policy (when to splice, when
//! to fall back to copying, pooling) lives in `proxy::passthrough`, not here.

pub mod cpu;
pub mod fd;
pub mod limits;
pub mod liveness;
pub mod pipe;
pub mod socket;
pub mod splice;

use std::io;

/// Converts a libc return value (`-1` + errno on failure) into `io::Result`.
/// EAGAIN/EWOULDBLOCK come back as `io::ErrorKind::WouldBlock` (std's mapping).
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// As [`cvt`], for calls that return a byte count.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // Non-negative ssize_t always fits in usize.
        Ok(ret as usize)
    }
}
