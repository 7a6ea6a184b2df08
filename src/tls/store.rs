//! Process-wide cache of built TLS configurations, keyed by what they are built from (file
//! paths and settings), reloaded when their files change on disk.
//!
//! Owns: one `Entry` per distinct spec, shared by every shard and listener that uses it;
//! a background thread that polls the files' (mtime, size, inode) every few seconds and
//! swaps in a rebuilt config. New handshakes load the current config (one `ArcSwap` load);
//! connections already established keep the config they started with.
//! Must not: run on a shard's hot path beyond `Entry::current` (the map's mutex is taken
//! only when a shard first meets a spec, once per snapshot generation).

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::pem::TlsConfigError;

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Something a TLS config is built from.
pub trait Material: Clone + Eq + Hash + Debug + Send + Sync + 'static {
    type Built: Send + Sync + 'static;
    /// The files whose change means a rebuild.
    fn files(&self) -> Vec<PathBuf>;
    fn build(&self) -> Result<Self::Built, TlsConfigError>;
}

/// The identity of a file version: a rename or rewrite changes at least one of these.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// One built config and the file versions it was built from.
pub struct Entry<M: Material> {
    pub spec: M,
    current: ArcSwap<M::Built>,
    stamps: Mutex<Vec<Stamp>>,
}

impl<M: Material> Entry<M> {
    /// The config new handshakes use.
    pub fn current(&self) -> Arc<M::Built> {
        self.current.load_full()
    }

    /// Whether `built` is still the current config (no reload since it was taken).
    pub fn is_current(&self, built: &Arc<M::Built>) -> bool {
        Arc::ptr_eq(&self.current.load(), built)
    }

    /// Rebuilds when a file changed; keeps the old config when the new files do not build
    /// (a half-rotated pair, a typo), and says so.
    fn poll(&self) {
        let now: Vec<Stamp> = self.spec.files().iter().map(stamp).collect();
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if *stamps == now {
            return;
        }
        match self.spec.build() {
            Ok(built) => {
                self.current.store(Arc::new(built));
                *stamps = now;
                tracing::info!(files = ?self.spec.files(), "tls certificates reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "tls certificates changed but do not load; keeping the previous ones");
            }
        }
    }
}

pub struct Store<M: Material> {
    entries: Mutex<HashMap<M, Arc<Entry<M>>>>,
}

impl<M: Material> Store<M> {
    /// The entry for `spec`, built now if no shard asked for it before.
    pub fn get(&self, spec: &M) -> Result<Arc<Entry<M>>, TlsConfigError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get(spec) {
            return Ok(e.clone());
        }
        let stamps = spec.files().iter().map(stamp).collect();
        let built = spec.build()?;
        let entry = Arc::new(Entry {
            spec: spec.clone(),
            current: ArcSwap::from_pointee(built),
            stamps: Mutex::new(stamps),
        });
        entries.insert(spec.clone(), entry.clone());
        Ok(entry)
    }

    /// Checks every entry's files; drops entries nothing uses any more.
    fn poll(&self) {
        let live: Vec<Arc<Entry<M>>> = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.retain(|_, e| Arc::strong_count(e) > 1);
            entries.values().cloned().collect()
        };
        // Built outside the map's lock: a slow disk must not stall a shard's first lookup.
        for e in live {
            e.poll();
        }
    }
}

/// The process-wide store for `M`, with its reload thread started on first use.
pub fn global<M: Material>(cell: &'static OnceLock<Arc<Store<M>>>) -> &'static Store<M> {
    cell.get_or_init(|| {
        let store = Arc::new(Store {
            entries: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&store);
        let spawned = std::thread::Builder::new()
            .name("egressd-tls-reload".into())
            .spawn(move || loop {
                std::thread::sleep(RELOAD_INTERVAL);
                match weak.upgrade() {
                    Some(store) => store.poll(),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the certificate reload thread; certificates will not reload");
        }
        store
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static BUILDS: AtomicUsize = AtomicUsize::new(0);

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct FileText(PathBuf);

    impl Material for FileText {
        type Built = String;
        fn files(&self) -> Vec<PathBuf> {
            vec![self.0.clone()]
        }
        fn build(&self) -> Result<String, TlsConfigError> {
            BUILDS.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(&self.0).map_err(|source| TlsConfigError::Read {
                path: self.0.clone(),
                source,
            })?;
            if text.is_empty() {
                return Err(TlsConfigError::Missing("text"));
            }
            Ok(text)
        }
    }

    #[test]
    fn changed_files_rebuild_and_broken_files_keep_the_old_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.pem");
        std::fs::write(&path, "one").expect("write");
        let store = Store {
            entries: Mutex::new(HashMap::new()),
        };
        let spec = FileText(path.clone());
        let entry = store.get(&spec).expect("builds");
        assert_eq!(*entry.current(), "one");
        assert!(Arc::ptr_eq(&entry, &store.get(&spec).expect("cached")));
        store.poll();
        assert_eq!(*entry.current(), "one");
        crate::tls::demo_pki::write(&path, "two").expect("rotate");
        store.poll();
        assert_eq!(*entry.current(), "two");
        crate::tls::demo_pki::write(&path, "").expect("break");
        store.poll();
        assert_eq!(*entry.current(), "two");
        drop(entry);
        store.poll();
        assert!(store.entries.lock().expect("lock").is_empty());
    }
}
