//! Observability: per-shard counters and the access log.

pub mod logging;
pub mod shard_stats;
pub mod sink;
