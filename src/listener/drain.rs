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
    // O_NONBLOCK belongs to the open file description: the stopped glommio listener shares
    // it, which no longer matters, since its accept loop is cancelled.
    if let Err(e) = set_nonblocking(socket.as_raw_fd(), true) {
        tracing::warn!(error = %e, "cannot drain a listener's accept queue; closing it");
        return 0;
    }
    let ctx = Rc::new(ctx);
    let mut taken = 0;
    while taken < MAX_DRAINED {
        let conn = match socket.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.raw_os_error() == Some(libc::ECONNABORTED) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept while draining a listener");
                break;
            }
        };
        // accept4 does not pass O_NONBLOCK on to the new socket: it is blocking, as glommio
        // expects of the sockets it drives.
        let stream = stream_from_fd(OwnedFd::from(conn));
        taken += 1;
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
    drop(socket);
    taken
}
