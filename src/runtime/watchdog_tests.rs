//! Unit tests of the watchdog: slots driven by hand against a fake NOTIFY_SOCKET, and the
//! shard-side heartbeat task with the stall hook on a real glommio executor.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::*;

const BOUND: Duration = Duration::from_secs(20);

/// A fake service manager: a datagram socket in a temp dir.
struct FakeManager {
    _dir: tempfile::TempDir,
    sock: UnixDatagram,
    notifier: Notifier,
}

impl FakeManager {
    fn new() -> FakeManager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_path(&path).unwrap();
        FakeManager {
            _dir: dir,
            sock,
            notifier,
        }
    }

    /// Waits (bounded) for the next WATCHDOG=1, skipping STATUS lines.
    fn next_ping(&self) -> bool {
        let deadline = Instant::now() + BOUND;
        let mut buf = [0u8; 512];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) if buf[..n].split(|&b| b == b'\n').any(|l| l == b"WATCHDOG=1") => {
                    return true
                }
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Everything received so far, without waiting.
    fn drain(&self) -> String {
        self.sock.set_nonblocking(true).unwrap();
        let mut out = String::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = self.sock.recv(&mut buf) {
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        self.sock.set_nonblocking(false).unwrap();
        out
    }
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn stuck_shards_are_those_that_did_not_move() {
    assert_eq!(stuck_shards(&[1, 2, 3], &[2, 2, 4]), vec![1]);
    assert!(stuck_shards(&[1, 2], &[5, 3]).is_empty());
    assert_eq!(stuck_shards(&[0, 0], &[0, 0]), vec![0, 1]);
}

#[test]
fn stall_hook_is_inert_unless_set_to_a_number() {
    assert_eq!(parse_stall(None), None);
    assert_eq!(parse_stall(Some("")), None);
    assert_eq!(parse_stall(Some("one")), None);
    assert_eq!(parse_stall(Some("1")), Some(1));
}

#[test]
fn pings_while_all_shards_advance_and_stop_when_one_stalls() {
    let fake = FakeManager::new();
    let hb = Heartbeat::new(2);
    let wd = Watchdog::spawn(hb.clone(), Duration::from_millis(40), fake.notifier.clone()).unwrap();

    // Phase 1: both shards beat; pings arrive. The test beats only between pings, so
    // each ping proves both slots moved since the previous one.
    for _ in 0..3 {
        hb.beat(0);
        hb.beat(1);
        assert!(fake.next_ping(), "no WATCHDOG=1 while every shard beats");
    }

    // Phase 2: shard 1 stalls right after a ping (its slot equals the last ping's
    // snapshot). Let several checks pass while shard 0 keeps beating: no ping may arrive.
    let checks = wd.checks();
    let pings = wd.pings();
    wait_until(|| {
        hb.beat(0);
        wd.checks() >= checks + 4
    });
    assert_eq!(wd.pings(), pings, "pinged although shard 1 stalled");
    let received = fake.drain();
    assert!(!received.contains("WATCHDOG=1"), "{received}");
    assert!(
        received.contains("stuck; watchdog pings stopped"),
        "{received}"
    );
    assert_eq!(wd.stuck(), vec![1]);

    // Phase 3: shard 1 recovers; pings resume.
    hb.beat(0);
    hb.beat(1);
    assert!(
        fake.next_ping(),
        "pings did not resume after the shard recovered"
    );
    wd.stop();
}

#[test]
fn stopping_the_watchdog_ends_its_thread_promptly() {
    let fake = FakeManager::new();
    let wd = Watchdog::spawn(
        Heartbeat::new(1),
        Duration::from_secs(3600),
        fake.notifier.clone(),
    )
    .unwrap();
    // A one-hour period: only the stop signal can end the thread; join must return.
    wd.stop();
    assert_eq!(fake.drain(), "");
}

#[test]
fn heartbeat_task_beats_every_shard_except_the_stalled_one() {
    use glommio::{LocalExecutorBuilder, Placement};
    let hb = Heartbeat::new(2);
    let done = Arc::new(AtomicBool::new(false));
    let (hb2, done2) = (hb.clone(), done.clone());
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 16)
        .spawn(move || async move {
            let period = Duration::from_millis(1);
            glommio::spawn_local(heartbeat_loop(hb2.clone(), 0, period, Some(1))).detach();
            glommio::spawn_local(heartbeat_loop(hb2, 1, period, Some(1))).detach();
            while !done2.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
        })
        .unwrap();
    wait_until(|| hb.snapshot()[0] >= 5);
    done.store(true, Ordering::Relaxed);
    ex.join().unwrap();
    assert_eq!(hb.snapshot()[1], 0, "the stalled shard beat anyway");
}

#[test]
fn beat_period_is_a_quarter_of_the_timeout() {
    assert_eq!(beat_period(Duration::from_secs(20)), Duration::from_secs(5));
}
