//! The sharded runtime: shard state, snapshot publication, executors, signals and drain.

pub mod control;
pub mod dns_thread;
pub mod executor;
pub mod run;
pub mod shard;
pub mod snapshot;
