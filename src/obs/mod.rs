//! Observability: per-shard counters and histograms with Envoy's names, merged at scrape
//! time, and the access log (formats and the writer thread).
//!
//! Nothing here touches sockets or routing: the data path fills records and bumps
//! counters; the admin server renders what `stats_hub` merges.
//!
//! Wiring (control thread, then each shard `i`):
//! ```text
//! let format = LogFormat::from_config(&cfg.access_log.format)?;          // FormatError -> exit 1
//! // "" = no access log: no writer (None) and senders that discard.
//! let (writer, senders) = start_access_log(&cfg.access_log.path, format, shards, 16)?;
//! if let Some(w) = &writer { signal_hook::flag::register(SIGUSR1, w.reopen_flag())?; }
//! let hub = StatsHub::new(shards);
//! hub.add_global_counter(STAT_WRITTEN, { let c = writer.counters(); move || c.written.load(Relaxed) });
//! // on shard i, inside its executor:
//! let stats = Rc::new(ShardStats::new());
//! let log = Rc::new(sender_i);
//! stats.add_counter_source(STAT_DROPPED, { let l = log.clone(); move || l.dropped() });
//! glommio::spawn_local(run_publisher(hub.clone(), i, stats.clone(), Duration::from_secs(5))).detach();
//! // admin: let scrape = hub.refresh(Duration::from_millis(200));
//! //        render_envoy_text(&scrape.stats, filter.as_ref()) / render_prometheus(&scrape.stats)
//! ```

pub mod access_log;
pub mod fast_fmt;
pub mod format_parser;
pub mod histogram;
pub mod istio_line;
pub mod log_cache_trim;
pub mod log_format;
pub mod log_writer;
pub mod logging;
pub mod shard_stats;
pub mod stats;
pub mod stats_http2;
pub mod stats_hub;
pub mod stats_render;
pub mod stats_snapshot;
pub mod stats_tls;
