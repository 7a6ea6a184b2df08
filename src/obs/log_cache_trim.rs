//! Keeping the access log's written pages from piling up in the page cache.
//!
//! Owns: the byte offsets of what the writer appended to one open log file, and the
//! advice (`POSIX_FADV_DONTNEED`) that lets the kernel free the pages behind the newest
//! `KEEP_CACHED` bytes once they are on disk.
//! Must not: fail a write. This is advice: when the kernel refuses it (a pipe, a
//! character device) trimming stops and the log is written as before.
//!
//! Why (measured on the bench VM, 14 MB/s of 64 KiB appends to ext4, as `bench http`
//! logs): every page an append adds is a page the kernel must allocate, and on a virtual
//! machine a page never touched before is also faulted in from the host. The appends cost
//! 2.6 ns of system time per byte; with the pages dropped behind the writer, so that the
//! next appends reuse them, 1.4 ns. In `bench http`'s layout the writer thread's system
//! time fell from 1.0–1.4 to 0.6–0.8 µs per request (of 15–16 µs on the shared core).
//! An egress node's logs are read by shippers that follow the end of the file, which
//! stays cached; nothing else reads them back. The writeback the advice starts is what
//! the kernel would have written within 30 s anyway; it is started from the writer
//! thread, never from a shard.

use std::fs::File;

use crate::sys::fd::drop_cached;

/// The newest bytes of the file left cached for readers that follow it.
const KEEP_CACHED: u64 = 1 << 20;
/// How much is appended between two pieces of advice.
const STEP: u64 = 1 << 20;
/// How far back each piece of advice reaches. Pages still dirty when advised are only
/// queued for writeback; the next few pieces of advice, covering them again, free them.
const WINDOW: u64 = 8 << 20;

pub struct CacheTrim {
    /// Where this file ended when it was opened: nothing before is ours to advise on.
    start: u64,
    /// Where our appends end.
    end: u64,
    /// `end` at the last advice.
    advised_at: u64,
    /// False for anything but a regular file, and once the kernel refused the advice.
    enabled: bool,
}

impl CacheTrim {
    /// Trimming for `file`, just opened for appending.
    pub fn new(file: &File) -> Self {
        let (start, enabled) = match file.metadata() {
            Ok(m) if m.is_file() => (m.len(), true),
            _ => (0, false),
        };
        CacheTrim {
            start,
            end: start,
            advised_at: start,
            enabled,
        }
    }

    /// Records `n` bytes appended to `file`, advising the kernel every `STEP` bytes.
    pub fn appended(&mut self, file: &File, n: usize) {
        self.end += n as u64;
        if !self.enabled || self.end - self.advised_at < STEP {
            return;
        }
        self.advised_at = self.end;
        let hi = self.end.saturating_sub(KEEP_CACHED);
        let lo = hi.saturating_sub(WINDOW).max(self.start);
        if hi > lo {
            if let Err(e) = drop_cached(file, lo, hi - lo) {
                tracing::debug!(error = %e, "access log: page cache advice refused; not trimming");
                self.enabled = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Output of a util-linux/coreutils command about `path`, trimmed.
    fn ask(cmd: &str, args: &[&str], path: &std::path::Path) -> String {
        let out = std::process::Command::new(cmd)
            .args(args)
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn pages_behind_the_newest_mebibyte_are_freed_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut trim = CacheTrim::new(&file);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(6 << 20) / chunk.len() {
            file.write_all(&chunk).unwrap();
            trim.appended(&file, chunk.len());
        }
        // On disk now, so the next advice frees rather than only queues writeback.
        file.sync_data().unwrap();
        for _ in 0..STEP as usize / chunk.len() {
            file.write_all(&chunk).unwrap();
            trim.appended(&file, chunk.len());
        }
        // tmpfs keeps its pages whatever the advice: nothing to measure there.
        if ask("stat", &["-f", "-c", "%T"], dir.path()) == "tmpfs" {
            eprintln!("temp dir is on tmpfs: residency not checked");
            return;
        }
        let pages: u64 = ask("fincore", &["--noheadings", "--output", "PAGES"], &path)
            .parse()
            .unwrap();
        // 7 MiB written (1,792 pages); the newest 1 MiB (256 pages) is kept.
        assert!(pages <= 600, "{pages} pages still cached");
    }

    #[test]
    fn a_character_device_is_written_without_advice() {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/null")
            .unwrap();
        let mut trim = CacheTrim::new(&file);
        trim.appended(&file, 4 << 20);
        assert!(!trim.enabled);
        assert_eq!(trim.end, 4 << 20);
    }
}
