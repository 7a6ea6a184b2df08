//! Socket calls and file-descriptor flags that glommio 0.9 does not expose.
//!
//! glommio leaves accepted and connected sockets blocking (it passes
//! MSG_DONTWAIT per call); splice(2) needs the socket itself O_NONBLOCK.
//! The nonblocking `recv`/`send` here let the relay try a call first and arm
//! a glommio wait only on EAGAIN, without the extra io_uring poll glommio's
//! own `read` arms after every short read. Except [`accept_nonblocking`],
//! which returns a new descriptor, nothing here owns one: callers pass fds
//! they keep alive for the call.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_size};

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

/// recv(2) with MSG_DONTWAIT into `buf`: EAGAIN comes back as `WouldBlock`,
/// `Ok(0)` is EOF (for a non-empty `buf`). Works on blocking sockets too.
pub fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call; recv writes at most that many.
    cvt_size(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

/// As [`recv_nowait`], appending to `buf` without zeroing first: reads at
/// most `max` bytes into the vector's spare capacity (reserving it), then
/// grows its length by what arrived.
pub fn recv_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare: &mut [MaybeUninit<u8>] = &mut buf.spare_capacity_mut()[..max];
    // SAFETY: `spare` is valid for writes of `max` bytes (reserved above);
    // the kernel writes only initialised bytes into it and reports how many.
    let n =
        cvt_size(unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), max, libc::MSG_DONTWAIT) })?;
    // SAFETY: recv initialised the first `n <= max` bytes of the spare
    // capacity, which directly follow the current length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// send(2) with MSG_DONTWAIT | MSG_NOSIGNAL: EAGAIN comes back as
/// `WouldBlock`; a peer that is gone is EPIPE, never SIGPIPE.
pub fn send_nowait(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call.
    cvt_size(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC on listening socket `fd`:
/// the new connection and its peer address, or `WouldBlock` when the accept
/// queue is empty (`fd` must be O_NONBLOCK for that, else this blocks).
pub fn accept_nonblocking(fd: RawFd) -> io::Result<(OwnedFd, SocketAddr)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is a writable sockaddr_storage and `len` says its
    // size, which is what accept4 requires; it writes at most `len` bytes.
    let new = cvt(unsafe {
        libc::accept4(
            fd,
            storage.as_mut_ptr().cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(new) };
    // SAFETY: zero-initialised, then (partly) filled by the kernel: every
    // byte of a sockaddr_storage is a valid value.
    let storage = unsafe { storage.assume_init() };
    let addr = sockaddr_to_std(&storage)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP socket"))?;
    Ok((owned, addr))
}

/// A new TCP socket (O_NONBLOCK, close-on-exec, TCP_NODELAY) with a connect
/// to `addr` started: on loopback the handshake is usually done on return,
/// elsewhere it goes on in the kernel and the first send waits for it. A
/// refused or unreachable peer may show here or only at that first send.
pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new_raw(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    // Set before connecting: the first segment with data already goes
    // without Nagle's delay, and it saves a call afterwards.
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// An IPv4 or IPv6 socket address out of a kernel-filled sockaddr_storage.
fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in, which is
            // smaller than sockaddr_storage and less strictly aligned.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sets TCP_NODELAY on `fd`. On a listening socket, the connections it
/// accepts inherit it (Linux copies the option into each accepted socket).
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to a
    // live local c_int; no memory is kept after the call.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
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
