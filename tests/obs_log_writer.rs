//! The access log's shard-side batches and writer thread: lines from several shards reach
//! the file, a full queue drops and counts instead of blocking, and a reopen after a
//! rename (what logrotate does before SIGUSR1) moves writing to the new file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use egressd::obs::access_log::AccessRecord;
use egressd::obs::log_format::{compile_format, LogFormat};
use egressd::obs::log_writer::{spawn_writer, spawn_writer_at, AccessLogQueues};

/// A record whose remote port says which shard sent it and whose byte count numbers it.
fn record(shard: u16, n: u64) -> AccessRecord {
    let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let remote = SocketAddr::from(([127, 0, 0, 2], 40_000 + shard));
    let mut r = AccessRecord::new(SystemTime::now(), local, remote);
    r.bytes_sent = n;
    r
}

fn marker_format() -> LogFormat {
    compile_format("%DOWNSTREAM_REMOTE_ADDRESS% %BYTES_SENT%").unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits (at most 10 s) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn records_from_every_shard_reach_the_file_in_the_configured_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let (writer, senders) =
        spawn_writer(path.to_str().unwrap(), LogFormat::istio(), 3, 16).unwrap();
    // Each shard's last, partial batch goes to the writer when its sender is dropped.
    let threads: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(shard, sender)| {
            std::thread::spawn(move || {
                for n in 0..200 {
                    sender.send(&record(shard as u16, n));
                }
                sender.dropped()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 0);
    }
    let counters = writer.counters();
    writer.shutdown();
    let text = read(&path);
    assert_eq!(text.lines().count(), 600);
    assert_eq!(counters.written.load(Ordering::Relaxed), 600);
    for shard in 0..3u16 {
        let tag = format!(" 127.0.0.2:{} ", 40_000 + shard);
        assert_eq!(text.lines().filter(|l| l.contains(&tag)).count(), 200);
    }
    assert!(text
        .lines()
        .all(|l| l.starts_with('[') && l.ends_with(" -")));
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    // The writer is not running yet, so nothing empties the queues (one batch each).
    let (queues, senders) = AccessLogQueues::new(2, 1, &marker_format());
    // Far more than one 64 KiB batch of ~22-byte lines.
    const SENT: u64 = 10_000;
    for n in 0..SENT {
        senders[0].send(&record(0, n));
    }
    senders[0].flush();
    senders[1].send(&record(1, 99));
    senders[1].flush();
    let dropped = senders[0].dropped();
    assert!(dropped > 0, "a full queue drops");
    assert_eq!(senders[1].dropped(), 0);
    let writer = spawn_writer_at(queues, path.to_str().unwrap()).unwrap();
    writer.shutdown();
    let text = read(&path);
    // What was queued is written whole and in order; the rest was counted, not lost
    // silently.
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("127.0.0.2:40000 "))
        .collect();
    assert_eq!(kept.len() as u64 + dropped, SENT);
    for (n, line) in kept.iter().enumerate() {
        assert_eq!(*line, format!("127.0.0.2:40000 {n}"));
    }
    assert!(text.contains("127.0.0.2:40001 99\n"));
    // After shutdown a hand-over cannot block either: its lines are dropped and counted.
    senders[1].send(&record(1, 100));
    senders[1].flush();
    assert_eq!(senders[1].dropped(), 1);
}

#[test]
fn reopen_after_rename_writes_to_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let (writer, senders) = spawn_writer(path.to_str().unwrap(), marker_format(), 1, 4).unwrap();
    senders[0].send(&record(0, 1));
    senders[0].flush();
    wait_for("the first line", || read(&path).lines().count() == 1);

    std::fs::rename(&path, &rotated).unwrap();
    let counters = writer.counters();
    let before = counters.reopens.load(Ordering::Acquire);
    // What the SIGUSR1 handler does: set the flag.
    writer.reopen_flag().store(true, Ordering::Release);
    wait_for("the reopen", || {
        counters.reopens.load(Ordering::Acquire) > before
    });
    senders[0].send(&record(0, 2));
    senders[0].flush();
    wait_for("the line in the new file", || {
        read(&path).lines().count() == 1
    });
    writer.shutdown();

    assert_eq!(read(&rotated), "127.0.0.2:40000 1\n");
    assert_eq!(read(&path), "127.0.0.2:40000 2\n");
    assert_eq!(counters.reopen_failed.load(Ordering::Relaxed), 0);
}

#[test]
fn an_unwritable_path_is_an_error_at_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("access.log");
    assert!(spawn_writer(path.to_str().unwrap(), LogFormat::json(), 1, 8).is_err());
}
