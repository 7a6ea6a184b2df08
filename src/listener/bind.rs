//! Binding a shard's listening socket: one SO_REUSEPORT socket per shard and Gateway port,
//! so the kernel spreads new connections across shards and no accept is shared.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Backlog asked of the kernel; it is capped by `net.core.somaxconn` (see tuning/).
const BACKLOG: i32 = 4096;

/// A shard's listening socket as glommio drives it, with its descriptor number, which
/// glommio 0.9's `TcpListener` does not expose and the accept loop needs for `accept4`.
pub struct ShardListener {
    pub listener: TcpListener,
    /// Owned (and closed) by `listener`: valid exactly as long as it is.
    pub fd: RawFd,
}

/// Binds `addr` with SO_REUSEPORT and hands the socket to the current glommio executor.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    Ok(bind_reuseport_kept(addr)?.0.listener)
}

/// As [`bind_reuseport`], plus a second descriptor (a `dup`) of the same listening socket.
/// The shard keeps it so that stopping the accept loop does not close the socket: closing
/// one socket of a SO_REUSEPORT group resets what waits in its accept queue, so the shard
/// first drains that queue through this handle (see `listener::drain`), then closes it.
pub fn bind_reuseport_kept(addr: SocketAddr) -> io::Result<(ShardListener, Socket)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_cloexec(true)?;
    let kept = socket.try_clone()?;
    let fd = socket.into_raw_fd();
    let listener = crate::sys::fd::listener_from_fd(fd);
    Ok((ShardListener { listener, fd }, kept))
}

/// A lock that makes a second egressd on the same listeners refuse to start: SO_REUSEPORT
/// would otherwise let it bind the same ports silently and steal half the connections. An
/// abstract Unix socket per bound address is released by the kernel when the process dies.
pub struct InstanceLock {
    _sockets: Vec<std::os::unix::net::UnixListener>,
}

impl InstanceLock {
    pub fn acquire(addrs: &[SocketAddr]) -> io::Result<Self> {
        use std::os::linux::net::SocketAddrExt;
        let mut sockets = Vec::new();
        for addr in addrs {
            let name = format!("egressd-listener-{addr}");
            let abstract_addr =
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let socket =
                std::os::unix::net::UnixListener::bind_addr(&abstract_addr).map_err(|e| {
                    if e.kind() == io::ErrorKind::AddrInUse {
                        io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("another egressd already serves {addr}"),
                        )
                    } else {
                        e
                    }
                })?;
            sockets.push(socket);
        }
        Ok(InstanceLock { _sockets: sockets })
    }
}
