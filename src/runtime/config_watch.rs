//! Watching the config file for changes: a control-side thread polls, about once a second,
//! a stamp of the file (the canonical path it resolves to, plus device, inode, size and
//! mtime of that target) and asks `Control::reload` when the stamp moves. Comparing the
//! resolved path catches a Kubernetes ConfigMap update, where `egressd.yaml` is a symlink
//! to `..data/egressd.yaml` and `..data` is itself a symlink replaced atomically: the new
//! target may keep the size and even the mtime, but never the path and inode.
//!
//! Owns: the stamp and the polling thread. Must not: parse or validate anything (that is
//! `Control::reload`), or run on a shard.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::control::Control;

/// How often the file is looked at. A stat and a readlink chain per second cost nothing.
pub const POLL_PERIOD: Duration = Duration::from_secs(1);

/// What identifies one version of the config file. `None` fields mean "could not stat":
/// a missing file is a state too, so deleting and re-creating it is noticed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub target: Option<PathBuf>,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileStamp {
    /// Stamps `path` now, following every symlink.
    pub fn of(path: &Path) -> FileStamp {
        let target = std::fs::canonicalize(path).ok();
        match std::fs::metadata(path) {
            Ok(m) => FileStamp {
                target,
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            },
            Err(_) => FileStamp {
                target,
                dev: 0,
                ino: 0,
                size: 0,
                mtime_ns: 0,
            },
        }
    }
}

/// Starts the watcher; it ends when the process starts exiting.
pub fn spawn(control: Arc<Control>, period: Duration) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("egressd-config-watch".into())
        .spawn(move || {
            while !control.exiting.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                let now = FileStamp::of(control.config_path());
                if control.last_stamp().as_ref() == Some(&now) {
                    continue;
                }
                if now.target.is_none() {
                    // Mid-swap, or deleted: the old tables keep serving; look again later.
                    // Remember the state so a missing file is not retried every second.
                    tracing::warn!(path = %control.config_path().display(), "config file is missing; keeping the current configuration");
                    control.set_last_stamp(now);
                    continue;
                }
                tracing::info!(path = %control.config_path().display(), "config file changed; reloading");
                let _ = control.reload();
            }
        })
}

#[cfg(test)]
mod tests {
    use super::FileStamp;

    #[test]
    fn a_configmap_style_symlink_swap_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (v, text) in [("v1", "same size A\n"), ("v2", "same size B\n")] {
            std::fs::create_dir(d.join(v)).unwrap();
            std::fs::write(d.join(v).join("egressd.yaml"), text).unwrap();
        }
        std::os::unix::fs::symlink("v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/egressd.yaml", d.join("egressd.yaml")).unwrap();
        let path = d.join("egressd.yaml");
        let before = FileStamp::of(&path);
        assert_eq!(before, FileStamp::of(&path), "a stamp is stable");
        // The kubelet's swap: a new symlink renamed over `..data`.
        std::os::unix::fs::symlink("v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let after = FileStamp::of(&path);
        assert_eq!(before.size, after.size);
        assert_ne!(before, after);
        assert!(after.target.unwrap().ends_with("v2/egressd.yaml"));
    }

    #[test]
    fn a_missing_file_has_no_target() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FileStamp::of(&dir.path().join("nope")).target, None);
    }
}
