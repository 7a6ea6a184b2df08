//! TLS passthrough relay: after the SNI peek and the upstream connect, move
//! bytes both ways untouched until both sides are done.
//!
//! Owns the connection's end game: replay of the peeked bytes, one future per
//! direction (both in the caller's task), half-close passed through each way,
//! the idle timeout, and the byte counts. It does not peek, route, connect or
//! log access lines; it returns a [`RelayOutcome`] for the caller to log.
//!
//! Data path: small transfers go through the shard's scratch buffer (no
//! pipe); bulk ones splice(2) socket -> pipe -> socket per direction with
//! pipes from the shard's [`PipePool`], or copy through one fixed buffer per
//! direction when splice is off, no pipe is available, or the kernel refuses
//! to splice these sockets (see `relay_dir`). Nothing allocates per chunk:
//! bulk transfers run in constant memory.
//!
//! Both directions borrow both sockets (`&TcpStream`: splice, MSG_DONTWAIT
//! recv/send, peek and shutdown need no more); a direction whose write has to
//! wait makes its own `dup` then (see `relay_dir`). Both sockets close when
//! the relay returns.
//!
//! One task per connection, not per direction: the two direction futures
//! are joined in the caller's task. Splitting them into tasks would save no
//! system call (waking the task polls the idle sibling too, but that is a
//! check of a glommio source, not a syscall) and would cost a spawn, shared
//! `Rc` counters and a join per connection. Each direction yields every MiB
//! so a busy one cannot starve its sibling or the shard. Measured cost: see
//! tests/passthrough_bench.rs.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;
use glommio::timer::Timer;

use super::pipe_pool::PipePool;
use super::relay_dir::{self, DirError, Meter, Way};

/// How a passthrough connection is relayed.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// No byte in either direction for this long ends the connection
    /// (`timeouts.downstreamIdle`).
    pub idle_timeout: Duration,
    /// Use splice(2) through pipes; `false` copies through user space.
    pub splice: bool,
}

/// One end of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client that connected to egressd.
    Downstream,
    /// The server egressd connected to.
    Upstream,
}

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions reached EOF; `first` closed its write side first.
    Closed { first: Side },
    /// No byte moved either way for `idle_timeout`.
    IdleTimeout,
    /// Reading from or writing to `side` failed (reset, broken pipe...); the
    /// other direction was stopped there too.
    Error { side: Side, error: io::Error },
    /// egressd itself could not make a handle it needed (out of descriptors).
    Local(io::Error),
}

/// What happened on a relayed connection, for the access log and stats.
#[derive(Debug)]
pub struct RelayOutcome {
    /// Bytes received from downstream, the replayed peek bytes included.
    pub bytes_from_downstream: u64,
    /// Bytes received from upstream.
    pub bytes_from_upstream: u64,
    /// Of all those bytes, how many went through a pipe (0 in copy mode).
    pub bytes_spliced: u64,
    /// Why it ended.
    pub end: RelayEnd,
}

/// Relays between `downstream` and `upstream` until both directions end,
/// one fails, or the connection idles out. `replay` (the bytes consumed while
/// peeking the ClientHello) is written upstream before anything else.
///
/// Runs entirely in the calling task, on the shard that accepted the
/// connection; both sockets are closed on return.
pub async fn relay(
    downstream: TcpStream,
    upstream: TcpStream,
    replay: &[u8],
    opts: &RelayOptions,
    pipes: &PipePool,
) -> RelayOutcome {
    let from_down = Cell::new(0u64);
    let from_up = Cell::new(0u64);
    let spliced = Cell::new(0u64);
    let last_activity = Cell::new(Instant::now());
    let first_closed: Cell<Option<Side>> = Cell::new(None);

    let to_up = Way {
        from: Side::Downstream,
        to: Side::Upstream,
    };
    let to_down = Way {
        from: Side::Upstream,
        to: Side::Downstream,
    };
    let meter = |bytes| Meter {
        bytes,
        spliced: &spliced,
        last_activity: &last_activity,
    };
    let finish = |r: Result<(), DirError>, side| {
        r.map(|()| first_closed.set(first_closed.get().or(Some(side))))
    };
    let up = async {
        let r = relay_dir::run(
            &downstream,
            &upstream,
            to_up,
            replay,
            pipes,
            opts.splice,
            meter(&from_down),
        );
        finish(r.await, Side::Downstream)
    };
    let down = async {
        let r = relay_dir::run(
            &upstream,
            &downstream,
            to_down,
            &[],
            pipes,
            opts.splice,
            meter(&from_up),
        );
        finish(r.await, Side::Upstream)
    };
    let both = async {
        match future::try_zip(up, down).await {
            Ok(_) => RelayEnd::Closed {
                first: first_closed.get().unwrap_or(Side::Downstream),
            },
            Err(DirError::Side { side, error }) => RelayEnd::Error { side, error },
            Err(DirError::Local(error)) => RelayEnd::Local(error),
        }
    };
    let idle = async {
        idle_watch(&last_activity, opts.idle_timeout).await;
        RelayEnd::IdleTimeout
    };
    let end = future::or(both, idle).await;
    RelayOutcome {
        bytes_from_downstream: from_down.get(),
        bytes_from_upstream: from_up.get(),
        bytes_spliced: spliced.get(),
        end,
    }
}

/// Resolves once nothing moved for `idle`; re-arms on activity.
pub(crate) async fn idle_watch(last_activity: &Cell<Instant>, idle: Duration) {
    loop {
        let deadline = last_activity.get() + idle;
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        Timer::new(deadline - now).await;
    }
}
