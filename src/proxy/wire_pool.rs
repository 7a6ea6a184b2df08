//! Per-thread reuse of the byte vectors a request is serialized into (the head sent
//! upstream, the head sent back, the copy an io_uring send owns). A connection gives
//! its vectors back while it idles, so idle keep-alive connections hold none, and the
//! next request on any connection of the shard takes one instead of allocating it.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Vectors a thread keeps; beyond that they are freed.
const POOL_MAX: usize = 256;
/// A vector that grew past this (a large body sent in one write) is freed, not kept.
const KEEP_CAPACITY_MAX: usize = 16 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A byte vector that goes back to this thread's pool when released or dropped.
#[derive(Default)]
pub struct Wire(Vec<u8>);

impl Wire {
    /// An empty vector, with the capacity an earlier request left in it when one is free.
    pub fn take() -> Self {
        Wire(POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default())
    }

    /// Takes a pooled vector if this one holds no memory (it was released).
    pub fn take_if_released(&mut self) {
        if self.0.capacity() == 0 {
            *self = Wire::take();
        }
    }

    /// Gives the memory back to the pool now; the wire is empty and holds none.
    pub fn release(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

fn give_back(mut wire: Vec<u8>) {
    if wire.capacity() == 0 || wire.capacity() > KEEP_CAPACITY_MAX {
        return;
    }
    wire.clear();
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(wire);
        }
    });
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.release();
    }
}

impl Deref for Wire {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Wire {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_wire_is_taken_again_empty_with_its_memory() {
        let mut w = Wire::take();
        w.extend_from_slice(&[1u8; 300]);
        let ptr = w.as_ptr();
        drop(w);
        let mut again = Wire::default();
        assert_eq!(again.capacity(), 0);
        again.take_if_released();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
        again.release();
        assert_eq!(again.capacity(), 0);
        assert_eq!(Wire::take().as_ptr(), ptr);
    }

    #[test]
    fn oversized_wires_are_freed_not_kept() {
        let mut w = Wire::take();
        w.reserve(KEEP_CAPACITY_MAX + 1);
        drop(w);
        assert_eq!(Wire::take().capacity(), 0);
    }
}
