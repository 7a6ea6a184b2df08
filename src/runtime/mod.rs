//! The sharded runtime: shard state, snapshot publication, executors, signals and drain,
//! service-manager integration and system limits.

pub mod config_watch;
pub mod control;
pub mod dns_thread;
pub mod executor;
pub mod limits;
pub mod notify;
pub mod reload_signal;
pub mod run;
pub mod shard;
pub mod snapshot;
pub mod watchdog;
