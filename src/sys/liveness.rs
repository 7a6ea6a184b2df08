//! Liveness probe for pooled idle connections: a non-blocking `MSG_PEEK` tells whether the
//! peer closed (0), sent unexpected bytes (> 0) or is quietly idle (EAGAIN).

use std::io;
use std::os::fd::RawFd;

/// True when an idle connection can still carry a request: nothing to read and no EOF.
pub fn idle_connection_usable(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call; the
    // buffer is one valid, writable byte; MSG_PEEK|MSG_DONTWAIT neither consumes data nor
    // blocks, so the socket's state is unchanged.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn tells_idle_from_closed_and_dirty() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert!(super::idle_connection_usable(client.as_raw_fd()));
        server.write_all(b"x").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!super::idle_connection_usable(client.as_raw_fd()));
        let c2 = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(listener.accept().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!super::idle_connection_usable(c2.as_raw_fd()));
    }
}
