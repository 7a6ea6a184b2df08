//! The control plane of one process: the config file, the current model, DNS answers, and
//! the publication of compiled snapshots to the shards. Everything slow happens here, on
//! the control and DNS threads, under a mutex the data path never touches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::diag::Diagnostic;
use crate::config::model::Config;
use crate::config::{load, LoadMode};
use crate::obs::stats_hub::StatsHub;
use crate::route::compile::compile;
use crate::route::table::Snapshot;
use crate::runtime::config_watch::FileStamp;
use crate::runtime::snapshot::{new_cell, SnapshotCell};

/// Reload counters, named as Envoy names a config subscription's (`update_attempt`,
/// `update_success`, `update_rejected`), under `server.config_reload.`.
pub const STAT_RELOAD_ATTEMPT: &str = "server.config_reload.update_attempt";
pub const STAT_RELOAD_SUCCESS: &str = "server.config_reload.update_success";
pub const STAT_RELOAD_REJECTED: &str = "server.config_reload.update_rejected";

pub struct Control {
    pub cell: SnapshotCell,
    /// Where shards publish their counters and the admin server merges them.
    pub stats: Arc<StatsHub>,
    path: PathBuf,
    current: Mutex<(Arc<Config>, u64)>,
    dns_answers: Mutex<HashMap<String, Vec<IpAddr>>>,
    /// Set by SIGTERM or `POST /drain_listeners`: shards stop accepting and drain.
    pub draining: AtomicBool,
    /// Set once draining ends in an exit (SIGTERM), not by `/drain_listeners`.
    pub exiting: AtomicBool,
    pub shards: usize,
    pub shards_listening: AtomicUsize,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// The file as it was when last read, so the watcher reloads each version once.
    stamp: Mutex<Option<FileStamp>>,
    pub started: std::time::Instant,
}

impl Control {
    pub fn new(path: &Path, config: Config, shards: usize) -> Arc<Self> {
        let config = Arc::new(config);
        let snapshot = compile(config.clone(), 1, &|_| None);
        let control = Arc::new(Control {
            cell: new_cell(snapshot),
            stats: StatsHub::new(shards),
            path: path.to_path_buf(),
            current: Mutex::new((config, 1)),
            dns_answers: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            shards,
            shards_listening: AtomicUsize::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            stamp: Mutex::new(Some(FileStamp::of(path))),
            started: std::time::Instant::now(),
        });
        // Weak: the hub lives inside the control; a strong reference would be a cycle.
        let weak = Arc::downgrade(&control);
        control
            .stats
            .add_global_counter(STAT_RELOAD_ATTEMPT, move || {
                weak.upgrade().map_or(0, |c| {
                    c.reloads_ok.load(Ordering::Relaxed) + c.reloads_failed.load(Ordering::Relaxed)
                })
            });
        let weak = Arc::downgrade(&control);
        control
            .stats
            .add_global_counter(STAT_RELOAD_SUCCESS, move || {
                weak.upgrade()
                    .map_or(0, |c| c.reloads_ok.load(Ordering::Relaxed))
            });
        let weak = Arc::downgrade(&control);
        control
            .stats
            .add_global_counter(STAT_RELOAD_REJECTED, move || {
                weak.upgrade()
                    .map_or(0, |c| c.reloads_failed.load(Ordering::Relaxed))
            });
        control
    }

    /// The config file's stamp when it was last read (by start or any reload).
    pub fn last_stamp(&self) -> Option<FileStamp> {
        self.stamp.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_last_stamp(&self, stamp: FileStamp) {
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = Some(stamp);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }

    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// Re-reads and validates the file; on success publishes a new snapshot. On failure the
    /// current snapshot keeps serving and the diagnostics are returned (and logged).
    pub fn reload(&self) -> Result<u64, Vec<Diagnostic>> {
        // Stamped before reading: a change during the read is seen as a new version.
        self.set_last_stamp(FileStamp::of(&self.path));
        match load(&self.path, LoadMode::Run) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    tracing::warn!("{w}");
                }
                let generation = self.publish(Some(Arc::new(loaded.config)));
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation, "configuration reloaded");
                Ok(generation)
            }
            Err(errors) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                // The old snapshot keeps serving; nothing was swapped.
                for e in &errors {
                    tracing::error!("reload rejected: {e}");
                }
                Err(errors)
            }
        }
    }

    /// Replaces the DNS answers the compiler sees and republishes.
    pub fn set_dns_answers(&self, answers: HashMap<String, Vec<IpAddr>>) {
        *self.dns_answers.lock().unwrap_or_else(|p| p.into_inner()) = answers;
        self.publish(None);
    }

    /// Compiles `config` (or the current one) with the current DNS answers and swaps it in.
    fn publish(&self, config: Option<Arc<Config>>) -> u64 {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = config {
            current.0 = config;
        }
        current.1 += 1;
        let answers = self
            .dns_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let lookup = |name: &str| answers.get(name).cloned();
        let snapshot = compile(current.0.clone(), current.1, &lookup);
        self.cell.store(Arc::new(snapshot));
        current.1
    }
}
