//! Starting the shards: one pinned glommio executor per CPU of the plan, each binding its
//! own SO_REUSEPORT listener per Gateway port, reporting when it listens, reconciling its
//! listeners with each new snapshot, and draining on request.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use super::control::Control;
use super::shard::Shard;
use super::watchdog::{beat_period_from_env, heartbeat_task, Heartbeat};
use crate::config::model::Protocol;
use crate::listener::accept::{accept_loop, ListenerCtx};
use crate::listener::bind::bind_reuseport_kept;
use crate::listener::drain::drain_accept_queue;
use crate::obs::log_writer::{AccessLogSender, STAT_DROPPED};
use crate::obs::shard_stats::listener_stat_name;
use crate::obs::stats_hub::run_publisher;
use crate::route::table::Snapshot;

/// glommio registers this much memory per executor for its io_uring buffers; egressd does
/// socket I/O only, so a small amount keeps the locked-memory need low (see README).
pub const IO_MEMORY: usize = 512 * 1024;
const TICK: Duration = Duration::from_millis(100);
/// How often a shard publishes its counters without being asked (scrapes ask anyway).
const STATS_PERIOD: Duration = Duration::from_secs(5);

/// What a shard reports to the control thread once.
pub enum ShardReport {
    Listening(usize),
    BindFailed(usize, SocketAddr, std::io::Error),
}

pub fn spawn_shard(
    id: usize,
    cpu: usize,
    control: Arc<Control>,
    log: AccessLogSender,
    heartbeat: Heartbeat,
    reports: Sender<ShardReport>,
) -> std::io::Result<glommio::ExecutorJoinHandle<()>> {
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("egressd-shard-{id}"))
        .io_memory(IO_MEMORY)
        .spawn(move || async move { run_shard(id, control, log, heartbeat, reports).await })
        .map_err(|e| std::io::Error::other(e.to_string()))
}

type ListenerKey = (u16, SocketAddr, Protocol);

struct Bound {
    task: glommio::task::JoinHandle<()>,
    stop: Rc<Cell<bool>>,
    /// A `dup` of the listening socket: keeps it open until its queue is drained.
    kept: socket2::Socket,
    active: Rc<Cell<u64>>,
}

impl Bound {
    /// Stops accepting, serves what the kernel already queued, then closes the socket.
    /// `last` is the last snapshot with this listener: when the current one lacks it (a
    /// reload removed it), its open and queued connections keep being routed with `last`.
    #[allow(clippy::redundant_allocation)]
    fn close(self, shard: &Rc<Shard>, key: ListenerKey, last: &Rc<Arc<Snapshot>>) {
        self.stop.set(true);
        self.task.cancel();
        if shard.snapshot().listener(key.0).is_none() {
            shard.retire_listener(key.0, last.clone(), self.active.clone());
        }
        let ctx = listener_ctx(shard, key, self.active);
        let (shard, kept) = (shard.clone(), self.kept);
        glommio::spawn_local(async move {
            // Let the cancelled accept loop drop its pending accept first.
            futures_lite::future::yield_now().await;
            let taken = drain_accept_queue(&shard, kept, ctx);
            tracing::debug!(shard = shard.id, bind = %key.1, taken, "listener closed after draining its accept queue");
        })
        .detach();
    }
}

fn listener_ctx(shard: &Shard, key: ListenerKey, active: Rc<Cell<u64>>) -> ListenerCtx {
    let stat_name = listener_stat_name(key.1);
    ListenerCtx {
        gateway_port: key.0,
        protocol: key.2,
        active,
        stats: shard.stats.listener(key.1),
        http_stats: shard.stats.http(&stat_name),
    }
}

async fn run_shard(
    id: usize,
    control: Arc<Control>,
    log: AccessLogSender,
    heartbeat: Heartbeat,
    reports: Sender<ShardReport>,
) {
    let shard = Rc::new(Shard::new(id, control.shards, control.cell.clone(), log));
    let sender = shard.log_sender();
    shard
        .stats
        .add_counter_source(STAT_DROPPED, move || sender.dropped());
    let publisher = glommio::spawn_local(run_publisher(
        control.stats.clone(),
        id,
        shard.stats.clone(),
        STATS_PERIOD,
    ))
    .detach();
    let mut bound: HashMap<ListenerKey, Bound> = HashMap::new();
    let mut applied = shard.snapshot();
    if let Err((addr, e)) = reconcile(&shard, &mut bound, &applied) {
        let _ = reports.send(ShardReport::BindFailed(id, addr, e));
        return;
    }
    // The watchdog pings only while every shard's executor keeps running its timers.
    let beats = beat_period_from_env()
        .map(|period| glommio::spawn_local(heartbeat_task(heartbeat, id, period)).detach());
    let _ = reports.send(ShardReport::Listening(id));
    let mut generation = shard.snapshot().generation;
    let mut last_sweep = Instant::now();
    while !control.draining.load(Ordering::Relaxed) {
        glommio::timer::sleep(TICK).await;
        let current = shard.snapshot().generation;
        if current != generation {
            generation = current;
            shard.reloads.publish(current);
            let result = reconcile(&shard, &mut bound, &applied);
            applied = shard.snapshot();
            if let Err((addr, e)) = result {
                tracing::error!(shard = id, %addr, error = %e, "cannot bind a listener added by reload");
            }
        }
        // Lines of a quiet shard reach the writer within a tick; busy shards hand over
        // full batches as they go.
        shard.flush_log();
        shard.idle.expire(Instant::now());
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            shard.tick();
            last_sweep = Instant::now();
        }
    }
    // Stop accepting: `/ready` already answers 503; keep-alive responses now carry
    // `connection: close` (see `Shard::draining`).
    shard.set_draining();
    for (key, b) in bound.drain() {
        b.close(&shard, key, &applied);
    }
    let drain = shard.snapshot().config.gateway.timeouts.drain;
    let deadline = Instant::now() + drain;
    // Let the accept-queue drains above spawn their connections before counting.
    glommio::timer::sleep(Duration::from_millis(20)).await;
    while shard.open_connections() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
        shard.idle.expire(Instant::now());
    }
    publisher.cancel();
    // The writer stops after the shards: hand it the last lines now.
    shard.flush_log();
    if let Some(b) = beats {
        b.cancel();
    }
    tracing::debug!(shard = id, left = shard.open_connections(), "shard drained");
}

/// Binds listeners the snapshot has and this shard lacks; stops those it no longer has.
#[allow(clippy::redundant_allocation)]
fn reconcile(
    shard: &Rc<Shard>,
    bound: &mut HashMap<ListenerKey, Bound>,
    previous: &Rc<Arc<Snapshot>>,
) -> Result<(), (SocketAddr, std::io::Error)> {
    let snapshot = shard.snapshot();
    let wanted: Vec<ListenerKey> = snapshot
        .listeners
        .iter()
        .map(|l| (l.gateway_port, l.bind, l.protocol))
        .collect();
    // A listener that stays is left alone: same socket, same accept loop, nothing rebound.
    let removed: Vec<ListenerKey> = bound
        .keys()
        .filter(|key| !wanted.contains(key))
        .copied()
        .collect();
    for key in removed {
        if let Some(b) = bound.remove(&key) {
            b.close(shard, key, previous);
        }
    }
    for key in wanted {
        if bound.contains_key(&key) {
            continue;
        }
        let (listener, kept) = bind_reuseport_kept(key.1).map_err(|e| (key.1, e))?;
        let stop = Rc::new(Cell::new(false));
        let active = Rc::new(Cell::new(0));
        let ctx = listener_ctx(shard, key, active.clone());
        let task =
            glommio::spawn_local(accept_loop(shard.clone(), listener, ctx, stop.clone())).detach();
        bound.insert(
            key,
            Bound {
                task,
                stop,
                kept,
                active,
            },
        );
    }
    Ok(())
}
