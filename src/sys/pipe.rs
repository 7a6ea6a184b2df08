//! A kernel pipe used as the in-kernel buffer of a splice relay.
//!
//! Owns the two file descriptors and closes them on drop. It does not track
//! how many bytes are inside: the relay does, since only it knows what it
//! spliced in and out (see `proxy::passthrough::PipePool`).

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_size};

/// Both ends of a nonblocking, close-on-exec pipe, and its capacity.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Capacity in bytes, asked of the kernel once at creation and updated
    /// by [`Pipe::set_size`], so a pooled pipe costs no fcntl per use.
    size: Cell<usize>,
}

impl Pipe {
    /// Creates a pipe with `O_NONBLOCK | O_CLOEXEC` on both ends, so a full or
    /// empty pipe answers EAGAIN instead of blocking the shard.
    pub fn new() -> io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [-1, -1];
        // SAFETY: `fds` is a valid, writable array of two c_ints, which is
        // exactly what pipe2(2) writes into; the flags are valid constants.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody
        // else; each is wrapped exactly once and closed by OwnedFd's Drop.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let pipe = Pipe {
            read,
            write,
            size: Cell::new(0),
        };
        pipe.size.set(pipe.kernel_size()?);
        Ok(pipe)
    }

    /// Asks the kernel to resize the pipe (F_SETPIPE_SZ) and returns the size
    /// it chose (rounded up to a power-of-two number of pages). Fails with
    /// EPERM past `/proc/sys/fs/pipe-max-size` for unprivileged users.
    pub fn set_size(&self, bytes: usize) -> io::Result<usize> {
        let bytes = libc::c_int::try_from(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size too large"))?;
        // SAFETY: F_SETPIPE_SZ takes an int argument and only reads it; the
        // fd is a pipe we own for the duration of the call.
        let size = cvt(unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) })?;
        self.size.set(size as usize);
        Ok(size as usize)
    }

    /// The pipe's capacity in bytes, as last learnt from the kernel (no
    /// system call).
    pub fn size(&self) -> usize {
        self.size.get()
    }

    /// The pipe's capacity in bytes, asked of the kernel (F_GETPIPE_SZ).
    pub fn kernel_size(&self) -> io::Result<usize> {
        // SAFETY: F_GETPIPE_SZ takes no argument and reads no memory of ours.
        let size = cvt(unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_GETPIPE_SZ) })?;
        Ok(size as usize)
    }

    /// Read end, for splice(pipe -> socket) and [`Pipe::read`].
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Write end, for splice(socket -> pipe).
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Plain read(2) from the pipe into `buf`; EAGAIN when empty.
    ///
    /// The relay uses it to pull a few bytes out and hand them to glommio's
    /// `write_all`, which is its only way to wait for socket writability.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
        // whole call, and the fd is an open pipe read end we own.
        cvt_size(unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
    }

    /// Bytes currently queued in the pipe (FIONREAD).
    pub fn queued(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which points
        // to a live local c_int.
        cvt(unsafe {
            libc::ioctl(
                self.read.as_raw_fd(),
                libc::FIONREAD,
                &mut n as *mut libc::c_int,
            )
        })?;
        Ok(n.max(0) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pipe_reads_would_block() {
        let p = Pipe::new().unwrap();
        let err = p.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(p.queued().unwrap(), 0);
    }

    #[test]
    fn resize_reports_kernel_size() {
        let p = Pipe::new().unwrap();
        let got = p.set_size(128 * 1024).unwrap();
        assert!(got >= 128 * 1024);
        assert_eq!(p.size(), got);
        assert_eq!(p.kernel_size().unwrap(), got);
    }

    #[test]
    fn drop_closes_both_ends() {
        let p = Pipe::new().unwrap();
        let (r, w) = (p.read_fd(), p.write_fd());
        drop(p);
        // Both descriptors must be closed: F_GETFD on a closed fd is EBADF.
        for fd in [r, w] {
            let err = crate::sys::socket::fd_flags(fd).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        }
    }
}
