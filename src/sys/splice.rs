//! splice(2) between a socket and a pipe, in either direction.
//!
//! Both wrappers pass `SPLICE_F_NONBLOCK | SPLICE_F_MOVE`. SPLICE_F_NONBLOCK
//! only makes the *pipe* side nonblocking; the socket must itself be
//! O_NONBLOCK (see `socket::set_nonblocking`), or a splice from an empty
//! socket blocks the whole shard. EAGAIN comes back as `WouldBlock`.

use std::io;
use std::os::fd::RawFd;
use std::ptr;

use super::cvt_size;

const FLAGS: libc::c_uint = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;

/// Moves up to `len` bytes from socket `sock` into pipe write end `pipe_w`.
/// `Ok(0)` means the peer shut down its write side (EOF), provided `len > 0`.
pub fn socket_to_pipe(sock: RawFd, pipe_w: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets are required for sockets and pipes (they have no
    // file position); splice reads no user memory. Invalid fds are reported
    // as EBADF, not undefined behaviour.
    cvt_size(unsafe { libc::splice(sock, ptr::null_mut(), pipe_w, ptr::null_mut(), len, FLAGS) })
}

/// Moves up to `len` bytes from pipe read end `pipe_r` into socket `sock`.
pub fn pipe_to_socket(pipe_r: RawFd, sock: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: as in `socket_to_pipe`: no offsets, no user memory involved.
    cvt_size(unsafe { libc::splice(pipe_r, ptr::null_mut(), sock, ptr::null_mut(), len, FLAGS) })
}

/// True for the errors that mean "splice is not possible on this pair of
/// files here" (old kernel, unsupported socket type) rather than a failure of
/// the connection: the relay then copies through user space instead.
pub fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::pipe::Pipe;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_cross_socket_pipe_socket() {
        let (mut a, b) = pair();
        let (c, mut d) = pair();
        b.set_nonblocking(true).unwrap();
        c.set_nonblocking(true).unwrap();
        let pipe = Pipe::new().unwrap();
        // Nothing sent yet: a nonblocking socket must answer WouldBlock.
        let err = socket_to_pipe(b.as_raw_fd(), pipe.write_fd(), 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        a.write_all(b"hello splice").unwrap();
        let mut moved = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while moved < 12 && std::time::Instant::now() < deadline {
            match socket_to_pipe(b.as_raw_fd(), pipe.write_fd(), 4096) {
                Ok(n) => moved += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(moved, 12);
        assert_eq!(pipe.queued().unwrap(), 12);
        assert_eq!(
            pipe_to_socket(pipe.read_fd(), c.as_raw_fd(), 12).unwrap(),
            12
        );
        let mut got = [0u8; 12];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello splice");

        // EOF from the peer reads as Ok(0).
        drop(a);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match socket_to_pipe(b.as_raw_fd(), pipe.write_fd(), 4096) {
                Ok(n) => {
                    assert_eq!(n, 0);
                    break;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::yield_now()
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn unsupported_errors_are_told_apart_from_connection_errors() {
        // EINVAL/ENOSYS mean "copy instead"; a reset is the connection's end.
        let e = io::Error::from_raw_os_error(libc::EINVAL);
        assert!(is_unsupported(&e));
        let e = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert!(!is_unsupported(&e));
    }
}
