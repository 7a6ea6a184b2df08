//! Observability: per-shard counters and histograms with Envoy's names, merged at scrape
//! time, and the access log (formats and the writer thread).
//!
//! Nothing here touches sockets or routing: the data path fills records and bumps
//! counters; the admin server renders what `stats_hub` merges.

pub mod access_log;
pub mod format_parser;
pub mod histogram;
pub mod log_format;
pub mod log_writer;
pub mod shard_stats;
pub mod stats;
pub mod stats_hub;
pub mod stats_render;
pub mod stats_snapshot;
pub mod stats_tls;
