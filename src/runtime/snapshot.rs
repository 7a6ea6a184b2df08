//! Publishing routing snapshots from the control thread to the shards without locks.
//! The control thread stores a new `Arc<Snapshot>` in one `ArcSwap`; each shard keeps an
//! `arc_swap::Cache` (one atomic load per check, no shared write) and wraps the current
//! snapshot in a shard-local `Rc`, so taking it per request costs no atomic
//! read-modify-write on a cache line other cores touch.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use crate::route::table::Snapshot;

/// The one place the current snapshot lives; shared by the control thread and every shard.
pub type SnapshotCell = Arc<ArcSwap<Snapshot>>;

pub fn new_cell(initial: Snapshot) -> SnapshotCell {
    Arc::new(ArcSwap::from_pointee(initial))
}

/// A shard's view of the current snapshot. The `Rc<Arc<_>>` is deliberate: cloning the
/// outer `Rc` per request is a plain increment on this core, where cloning the `Arc` would
/// bounce its shared counter between shards.
#[allow(clippy::redundant_allocation)]
pub struct SnapshotView {
    cache: RefCell<Cache<SnapshotCell, Arc<Snapshot>>>,
    current: RefCell<Rc<Arc<Snapshot>>>,
}

impl SnapshotView {
    pub fn new(cell: SnapshotCell) -> Self {
        let mut cache = Cache::new(cell);
        let current = Rc::new(cache.load().clone());
        SnapshotView {
            cache: RefCell::new(cache),
            current: RefCell::new(current),
        }
    }

    /// The snapshot current now. HTTP calls this per request; TCP/TLS once per connection.
    #[allow(clippy::redundant_allocation)]
    pub fn current(&self) -> Rc<Arc<Snapshot>> {
        let mut cache = self.cache.borrow_mut();
        let latest = cache.load();
        let mut current = self.current.borrow_mut();
        if !Arc::ptr_eq(latest, &current) {
            *current = Rc::new(latest.clone());
        }
        current.clone()
    }
}
