//! Where shards publish stats snapshots and where the admin scrapes them.
//!
//! Design: each shard's publisher task (`run_publisher`, spawned on the shard) takes a
//! snapshot of its `ShardStats` every `period`, and at once when a scrape asks, and
//! stores it in its slot with an `ArcSwap`. A scrape (`StatsHub::refresh`) bumps a
//! request generation, wakes every publisher through the `Waker` it parked (glommio
//! queues a foreign wake to the shard's executor), waits up to a timeout until every
//! shard has published for that generation, then merges the latest snapshot of each.
//! So `/stats` right after traffic shows exact counts, a stalled shard costs the scrape
//! at most the timeout (its last snapshot is used and reported stale), and the data path
//! never sees an atomic or a lock: only publisher tasks and scrapes touch the hub.
//! Must not: be called from the data path, or block a shard.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::obs::shard_stats::ShardStats;
use crate::obs::stats_snapshot::{MergedStats, Scope, StatKey, StatsSnapshot};

type GlobalSource = Box<dyn Fn() -> u64 + Send + Sync>;

struct Slot {
    snapshot: ArcSwap<StatsSnapshot>,
    /// The request generation the stored snapshot answers.
    published: AtomicU64,
    /// The publisher's waker while it waits; taken and woken by a scrape.
    waker: Mutex<Option<Waker>>,
}

/// Shared between the control thread and all shards' publisher tasks.
pub struct StatsHub {
    slots: Vec<Slot>,
    requested: AtomicU64,
    done: Mutex<()>,
    published_cv: Condvar,
    globals: Mutex<Vec<(String, GlobalSource)>>,
}

/// A scrape's result.
pub struct Scrape {
    pub stats: MergedStats,
    /// Shards that did not publish within the timeout: their previous snapshot is used.
    pub stale_shards: Vec<usize>,
}

impl StatsHub {
    pub fn new(shards: usize) -> Arc<Self> {
        let slots = (0..shards)
            .map(|_| Slot {
                snapshot: ArcSwap::from_pointee(StatsSnapshot::default()),
                published: AtomicU64::new(0),
                waker: Mutex::new(None),
            })
            .collect();
        Arc::new(StatsHub {
            slots,
            requested: AtomicU64::new(0),
            done: Mutex::new(()),
            published_cv: Condvar::new(),
            globals: Mutex::new(Vec::new()),
        })
    }

    pub fn shards(&self) -> usize {
        self.slots.len()
    }

    /// Adds `f()` as the unscoped counter `name` to every scrape: for counters owned off
    /// the shards (the access-log writer's `access_log.written`, ...).
    pub fn add_global_counter(&self, name: &str, f: impl Fn() -> u64 + Send + Sync + 'static) {
        lock(&self.globals).push((name.to_string(), Box::new(f)));
    }

    /// Asks every shard for a fresh snapshot, waits up to `timeout` for them (200 ms is
    /// plenty for a live shard), and merges. Blocks the calling (control) thread.
    pub fn refresh(&self, timeout: Duration) -> Scrape {
        let gen = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        for slot in &self.slots {
            if let Some(w) = lock(&slot.waker).take() {
                w.wake();
            }
        }
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.done);
        loop {
            let fresh = self
                .slots
                .iter()
                .all(|s| s.published.load(Ordering::Acquire) >= gen);
            let now = Instant::now();
            if fresh || now >= deadline {
                break;
            }
            guard = match self.published_cv.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(guard);
        let stale_shards = (0..self.slots.len())
            .filter(|i| self.slots[*i].published.load(Ordering::Acquire) < gen)
            .collect();
        Scrape {
            stats: self.merged(),
            stale_shards,
        }
    }

    /// The merge of the latest published snapshots, without asking for fresh ones.
    pub fn merged(&self) -> MergedStats {
        let mut merged = StatsSnapshot::default();
        for slot in &self.slots {
            merged.merge(&slot.snapshot.load());
        }
        for (name, f) in lock(&self.globals).iter() {
            merged.add_counter(StatKey::new(Scope::Global, name.clone()), f());
        }
        merged
    }

    fn publish(&self, shard: usize, snapshot: StatsSnapshot, gen: u64) {
        let slot = &self.slots[shard];
        slot.snapshot.store(Arc::new(snapshot));
        slot.published.fetch_max(gen, Ordering::AcqRel);
        let _g = lock(&self.done);
        self.published_cv.notify_all();
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; the
/// data is still usable for stats.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The shard's publisher: spawn it on the shard's executor
/// (`glommio::spawn_local(run_publisher(hub, i, stats, period)).detach()`). It publishes
/// at start, every `period`, and whenever a scrape asks; it runs until the executor
/// drops it.
pub async fn run_publisher(
    hub: Arc<StatsHub>,
    shard: usize,
    stats: Rc<ShardStats>,
    period: Duration,
) {
    assert!(shard < hub.slots.len(), "shard {shard} has no stats slot");
    let _clear = ClearWaker { hub: &hub, shard };
    loop {
        // Read the generation before the snapshot: the snapshot is then at least as
        // new as every request up to `gen`.
        let gen = hub.requested.load(Ordering::Acquire);
        hub.publish(shard, stats.snapshot(), gen);
        let request = RequestWait {
            hub: &hub,
            shard,
            seen: gen,
        };
        futures_lite::future::or(glommio::timer::sleep(period), request).await;
    }
}

/// Resolves when a scrape asks for a generation newer than `seen`.
struct RequestWait<'a> {
    hub: &'a StatsHub,
    shard: usize,
    seen: u64,
}

impl Future for RequestWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.hub.requested.load(Ordering::Acquire) > self.seen {
            return Poll::Ready(());
        }
        *lock(&self.hub.slots[self.shard].waker) = Some(cx.waker().clone());
        // Check again: a scrape that bumped the generation before the waker was parked
        // found no waker to wake. The mutex orders the two sides.
        if self.hub.requested.load(Ordering::Acquire) > self.seen {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Removes the parked waker when the publisher goes away, so no scrape wakes a task of
/// an executor that has ended.
struct ClearWaker<'a> {
    hub: &'a StatsHub,
    shard: usize,
}

impl Drop for ClearWaker<'_> {
    fn drop(&mut self) {
        lock(&self.hub.slots[self.shard].waker).take();
    }
}
