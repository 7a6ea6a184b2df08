//! Per-shard pool of kernel pipes for splice relays, and the shard's scratch
//! buffer through which relays move small transfers without a pipe.
//!
//! Owns idle pipes between connections so a passthrough connection costs no
//! pipe2/close pair, and bounds how many it keeps. A pipe only goes back when
//! the relay's count says it is empty: a pipe with bytes still inside
//! (connection ended mid-transfer) is closed, since those bytes belong to
//! nobody now. The count is exact by construction (every splice and read
//! reports what it moved), so it is trusted without asking the kernel
//! (FIONREAD was two system calls per connection); debug builds still check.
//! Not `Sync` (a `RefCell` inside): one pool per shard, used from that
//! shard's tasks only.

use std::cell::{RefCell, RefMut};
use std::io;

use crate::sys::pipe::Pipe;

/// Size of the shard's scratch buffer: a read that fills it marks a transfer
/// as bulk (see `relay_dir`).
pub const SCRATCH: usize = 16 * 1024;

/// Idle pipes of one shard.
#[derive(Debug)]
pub struct PipePool {
    idle: RefCell<Vec<Pipe>>,
    max_idle: usize,
    pipe_size: Option<usize>,
    /// Shared by every relay of the shard: filled and emptied within one
    /// synchronous step, never held across an await.
    scratch: RefCell<Vec<u8>>,
}

impl PipePool {
    /// Keeps at most `max_idle` idle pipes (a good value: twice the
    /// connections expected to end and start within a short burst). New pipes
    /// are resized to `pipe_size` bytes when given (kernel default 64 KiB);
    /// a refused resize (EPERM above pipe-max-size) keeps the default.
    pub fn new(max_idle: usize, pipe_size: Option<usize>) -> PipePool {
        PipePool {
            idle: RefCell::new(Vec::with_capacity(max_idle)),
            max_idle,
            pipe_size,
            scratch: RefCell::new(vec![0; SCRATCH]),
        }
    }

    /// The shard's scratch buffer, [`SCRATCH`] bytes. Must be dropped before
    /// the caller awaits anything (it panics if borrowed twice).
    pub(crate) fn scratch(&self) -> RefMut<'_, Vec<u8>> {
        self.scratch.borrow_mut()
    }

    /// An empty pipe: a pooled one, else a new one. Fails only when the
    /// process is out of descriptors or pipe memory; the relay then copies.
    pub fn get(&self) -> io::Result<PooledPipe<'_>> {
        let pipe = match self.idle.borrow_mut().pop() {
            Some(pipe) => pipe,
            None => self.create()?,
        };
        Ok(PooledPipe {
            pipe: Some(pipe),
            pool: self,
            queued: 0,
        })
    }

    /// How many idle pipes are kept right now.
    pub fn idle(&self) -> usize {
        self.idle.borrow().len()
    }

    fn create(&self) -> io::Result<Pipe> {
        let pipe = Pipe::new()?;
        if let Some(size) = self.pipe_size {
            if let Err(e) = pipe.set_size(size) {
                tracing::debug!(size, error = %e, "pipe resize refused, keeping the default size");
            }
        }
        Ok(pipe)
    }

    fn put_back(&self, pipe: Pipe) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(pipe);
        }
    }
}

/// A pipe on loan from a [`PipePool`], with the count of bytes inside it.
///
/// The count is kept by whoever splices: add after splicing in, subtract
/// after splicing or reading out. On drop the pipe returns to the pool only
/// if the count is zero.
#[derive(Debug)]
pub struct PooledPipe<'a> {
    pipe: Option<Pipe>,
    pool: &'a PipePool,
    queued: usize,
}

impl PooledPipe<'_> {
    /// The pipe itself.
    pub fn pipe(&self) -> &Pipe {
        self.pipe.as_ref().expect("pipe present until drop")
    }

    /// Bytes spliced in and not yet taken out.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Records `n` bytes put into the pipe.
    pub fn filled(&mut self, n: usize) {
        self.queued += n;
    }

    /// Records `n` bytes taken out of the pipe.
    pub fn drained(&mut self, n: usize) {
        debug_assert!(n <= self.queued, "drained more than was queued");
        self.queued = self.queued.saturating_sub(n);
    }
}

impl Drop for PooledPipe<'_> {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            // A pipe that may hold bytes is closed, never handed to another
            // connection.
            if self.queued == 0 {
                debug_assert_eq!(pipe.queued().ok(), Some(0), "pipe count out of step");
                self.pool.put_back(pipe);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn empty_pipes_are_reused_up_to_the_bound() {
        let pool = PipePool::new(1, None);
        let (a, b) = (pool.get().unwrap(), pool.get().unwrap());
        let fd = a.pipe().read_fd();
        drop(a);
        drop(b);
        assert_eq!(pool.idle(), 1, "only max_idle pipes are kept");
        assert_eq!(pool.get().unwrap().pipe().read_fd(), fd);
    }

    #[test]
    fn a_pipe_with_bytes_inside_is_not_reused() {
        let pool = PipePool::new(4, Some(128 * 1024));
        let mut p = pool.get().unwrap();
        assert!(p.pipe().size() >= 128 * 1024);
        write_end(&p).write_all(b"left over").unwrap();
        p.filled(9);
        drop(p);
        assert_eq!(pool.idle(), 0);

        // Drained to the last byte: back in the pool.
        let mut q = pool.get().unwrap();
        write_end(&q).write_all(b"x").unwrap();
        q.filled(1);
        assert_eq!(q.pipe().read(&mut [0u8; 4]).unwrap(), 1);
        q.drained(1);
        drop(q);
        assert_eq!(pool.idle(), 1);
    }

    /// A `File` on a duplicate of the pipe's write end (no `unsafe` needed).
    fn write_end(p: &PooledPipe<'_>) -> std::fs::File {
        std::fs::File::from(crate::sys::socket::dup_cloexec(p.pipe().write_fd()).unwrap())
    }
}
