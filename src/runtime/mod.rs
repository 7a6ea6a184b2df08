//! Runtime: shards, pinning, shutdown/drain, service-manager integration and system limits.

pub mod limits;
pub mod notify;
pub mod watchdog;
