//! Closing a shard's listening socket without losing the connections the kernel already
//! completed for it. Closing one socket of a SO_REUSEPORT group resets every connection in
//! its accept queue (unless `net.ipv4.tcp_migrate_req=1`, set in `tuning/sysctl.conf`,
//! moves them to another socket of the group, and only when one is left: not when a reload
//! removes the port on every shard). So when a reload removes a listener, or the process
//! drains, the shard stops its accept loop, then accepts what is queued through a kept
//! `dup` of the socket, non-blocking, until EAGAIN, serves those connections like any
//! other, and only then closes the socket.
//!
//! Owns: that last accept pass. Must not: admit new work after it (the socket is closed
//! when the pass ends), or block the shard (every accept is non-blocking).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use socket2::Socket;

use super::accept::{handle, ListenerCtx};
use crate::runtime::shard::Shard;
use crate::sys::fd::stream_from_fd;
use crate::sys::socket::set_nonblocking;

/// A bound upper limit on one pass: a queue is at most the backlog (4096, see `bind`).
const MAX_DRAINED: usize = 65_536;

/// Accepts every connection waiting on `socket`, spawns each on this shard with the
/// snapshot current now, and closes the socket. Returns how many it took over.
pub fn drain_accept_queue(shard: &Rc<Shard>, socket: Socket, ctx: ListenerCtx) -> usize {
    let queued = match take_queued(&socket, MAX_DRAINED) {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "cannot drain a listener's accept queue; closing it");
            return 0;
        }
    };
    // Closed before serving: nothing new can arrive on this socket from here on.
    drop(socket);
    let taken = queued.len();
    let ctx = Rc::new(ctx);
    for conn in queued {
        let stream = stream_from_fd(OwnedFd::from(conn));
        let (shard, ctx) = (shard.clone(), ctx.clone());
        glommio::spawn_local(async move {
            ctx.active.set(ctx.active.get() + 1);
            shard.conn_opened();
            ctx.stats.downstream_cx_total.inc();
            ctx.stats.downstream_cx_active.inc();
            handle(shard.clone(), stream, &ctx).await;
            ctx.active.set(ctx.active.get() - 1);
            shard.conn_closed();
            ctx.stats.downstream_cx_active.dec();
        })
        .detach();
    }
    taken
}

/// Makes `socket` non-blocking and accepts until EAGAIN (or `max`). O_NONBLOCK belongs to
/// the open file description, so the stopped glommio listener sharing it sees it too,
/// which no longer matters: its accept loop is cancelled. The accepted sockets do not
/// inherit O_NONBLOCK (accept4 without SOCK_NONBLOCK): they are blocking, as glommio
/// expects of the sockets it drives.
pub fn take_queued(socket: &Socket, max: usize) -> io::Result<Vec<Socket>> {
    set_nonblocking(socket.as_raw_fd(), true)?;
    let mut out = Vec::new();
    while out.len() < max {
        match socket.accept() {
            Ok((conn, _)) => out.push(conn),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accept while draining a listener");
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use socket2::{Domain, Socket, Type};

    use super::take_queued;

    #[test]
    fn queued_connections_are_taken_over_alive_and_the_port_then_refuses() {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.set_reuse_port(true).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(16).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Completed by the kernel, never accepted: what a plain close would reset.
        let mut clients: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let queued = take_queued(&listener, 100).unwrap();
        drop(listener);
        assert_eq!(queued.len(), 3);
        assert!(!queued[0].nonblocking().unwrap(), "handed over blocking");
        for (server, client) in queued.iter().zip(clients.iter_mut()) {
            (&*server).write_all(b"hi").unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 2];
            client.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
        }
        assert!(TcpStream::connect(addr).is_err(), "closed after the pass");
    }
}
