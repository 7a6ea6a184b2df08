//! Socket and file-descriptor flags that glommio 0.9 does not expose.
//!
//! glommio leaves accepted and connected sockets blocking (it passes
//! MSG_DONTWAIT per call); splice(2) needs the socket itself O_NONBLOCK.
//! Nothing here owns a descriptor: callers pass fds they keep alive.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use super::cvt;

/// The file status flags of `fd` (F_GETFL).
pub fn fd_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no argument and touches no user memory; a
    // closed fd yields EBADF.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// Sets or clears O_NONBLOCK on `fd`. The flag belongs to the open file
/// description, so it also applies to every `dup` of the fd.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = fd_flags(fd)?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: F_SETFL takes an int argument by value; no memory is shared.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// shutdown(fd, SHUT_WR): sends FIN after the queued bytes, keeps reading.
/// ENOTCONN (the peer already reset) is reported to the caller as is.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes two ints by value; no memory is shared.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) })?;
    Ok(())
}

/// Duplicates `fd` with close-on-exec set (F_DUPFD_CLOEXEC). The copy shares
/// the socket (and its O_NONBLOCK flag); closing one leaves the other open.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes a minimum fd number by value.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: fcntl returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A second glommio stream on the same socket, over a `dup` of its fd.
///
/// glommio 0.9 cannot split a `TcpStream` and its `write_all` needs `&mut`,
/// so a relay gives each direction its own handle. Closing either handle
/// leaves the socket open for the other; shutdown(2) acts on the socket.
pub fn dup_stream(stream: &glommio::net::TcpStream) -> io::Result<glommio::net::TcpStream> {
    let fd = dup_cloexec(stream.as_raw_fd())?;
    // SAFETY: `fd` is a fresh descriptor of a connected TCP socket (a dup of
    // one glommio already drives) that nothing else owns: `into_raw_fd`
    // hands its ownership to the new stream, which closes it on drop.
    Ok(unsafe { glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd()) })
}

/// Bytes queued in the socket's receive buffer (FIONREAD / SIOCINQ).
pub fn readable_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a pointer to a live local.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) })?;
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn nonblocking_is_shared_with_dups() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        let dup = dup_cloexec(fd).unwrap();
        set_nonblocking(fd, true).unwrap();
        assert_ne!(fd_flags(dup.as_raw_fd()).unwrap() & libc::O_NONBLOCK, 0);
        set_nonblocking(dup.as_raw_fd(), false).unwrap();
        assert_eq!(fd_flags(fd).unwrap() & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn shutdown_write_sends_eof() {
        use std::io::Read;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        shutdown_write(a.as_raw_fd()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        assert_eq!(readable_bytes(b.as_raw_fd()).unwrap(), 0);
    }
}
