//! End to end with a fake service manager (a NOTIFY_SOCKET datagram listener in a temp
//! dir): READY=1 comes only once every listener accepts, the watchdog is fed while every
//! shard heartbeats and starves when one stalls (EGRESSD_TEST_STALL_SHARD), SIGHUP gives
//! RELOADING=1 then READY=1, SIGTERM gives STOPPING=1 and exit 0; limits too low give exit 4
//! with what to set, and check-system says the same.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(30);
const WATCHDOG_USEC: u64 = 1_000_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The guide's plain-HTTP example behind a bootstrap that binds loopback on `port`.
fn config(dir: &Path, port: u16, shards: usize) -> PathBuf {
    let fixture = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/1-http-plain.yaml"),
    )
    .unwrap();
    let text = format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\n\
         spec:\n  bindAddress: 127.0.0.1\n  portMap: {{80: {port}}}\n  shards: {shards}\n  admin: \"\"\n\
         \x20 limits: {{maxConnections: 1000}}\n  resolver: {{nameservers: [\"127.0.0.1:1\"]}}\n---\n{fixture}"
    );
    let path = dir.join("egressd.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Gateway {
    child: Child,
    manager: UnixDatagram,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(shards: usize, stall: Option<usize>) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = config(dir.path(), port, shards);
        let sock = dir.path().join("notify");
        let manager = UnixDatagram::bind(&sock).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_egressd"));
        cmd.arg("run").arg("-c").arg(&cfg);
        cmd.env("NOTIFY_SOCKET", &sock)
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string());
        cmd.env_remove("WATCHDOG_PID")
            .env_remove("EGRESSD_TEST_STALL_SHARD");
        if let Some(n) = stall {
            cmd.env("EGRESSD_TEST_STALL_SHARD", n.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Gateway {
            child,
            manager,
            _dir: dir,
            port,
        }
    }

    /// Next datagram's lines, or None once `deadline` passes.
    fn next(&self, deadline: Instant) -> Option<Vec<String>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.manager
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = self.manager.recv(&mut buf).ok()?;
        Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }

    /// Waits for a datagram with `line`; panics with what came instead.
    fn expect(&self, line: &str) -> Vec<String> {
        let deadline = Instant::now() + BOUND;
        let mut seen = Vec::new();
        while let Some(msg) = self.next(deadline) {
            if msg.iter().any(|l| l == line) {
                return seen;
            }
            seen.extend(msg);
        }
        panic!("no {line} within {BOUND:?}; got {seen:?}");
    }

    /// One HTTP request on a fresh connection: some status line must come back (a route
    /// miss is 502), proving a shard's accept loop is live.
    fn request(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("READY=1 before listening");
        s.set_read_timeout(Some(BOUND)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

#[test]
fn ready_comes_after_the_listeners_accept_and_the_watchdog_is_fed() {
    let mut gw = Gateway::start(2, None);
    let before = gw.expect("READY=1");
    assert!(
        before.iter().all(|l| l != "WATCHDOG=1"),
        "watchdog fed before READY: {before:?}"
    );
    // READY=1 is in hand: every connection must now be accepted and answered.
    for _ in 0..8 {
        assert!(
            gw.request().starts_with("HTTP/1.1 "),
            "no HTTP answer right after READY=1"
        );
    }
    gw.expect("WATCHDOG=1");
    gw.expect("WATCHDOG=1");

    gw.signal("-HUP");
    gw.expect("RELOADING=1");
    gw.expect("READY=1");

    gw.signal("-TERM");
    gw.expect("STOPPING=1");
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_shard_that_stops_heartbeating_starves_the_watchdog() {
    let gw = Gateway::start(2, Some(1));
    gw.expect("READY=1");
    // Shard 1 never beats: the watchdog must report it and never ping.
    let deadline = Instant::now() + BOUND;
    let mut stuck = false;
    while let Some(msg) = gw.next(deadline) {
        assert!(
            msg.iter().all(|l| l != "WATCHDOG=1"),
            "pinged with a stalled shard: {msg:?}"
        );
        if msg
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("[1] stuck"))
        {
            stuck = true;
            break;
        }
    }
    assert!(stuck, "the stalled shard was not reported");
    // Several more check periods: still no ping (systemd would now restart egressd).
    let window = Instant::now() + Duration::from_micros(3 * WATCHDOG_USEC);
    while let Some(msg) = gw.next(window) {
        assert!(
            msg.iter().all(|l| l != "WATCHDOG=1"),
            "pinged with a stalled shard: {msg:?}"
        );
    }
    // Requests are still served by the healthy shard(s) or the stalled one: the hook only
    // stops the heartbeat, so the process stays up until the service manager acts.
    assert!(gw.request().starts_with("HTTP/1.1 "));
}

/// Runs egressd with RLIMIT_MEMLOCK lowered to `bytes` (prlimit may lower limits without
/// privilege). As root, CAP_IPC_LOCK is dropped too (setpriv), since it makes the kernel
/// ignore the limit and egressd rightly counts it as fitting. Bounded: killed after BOUND.
fn with_memlock(bytes: u64, args: &[&str], cfg: &Path) -> std::process::Output {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--memlock={bytes}:{bytes}")).arg("--");
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
    {
        cmd.args([
            "setpriv",
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
            "--",
        ]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_egressd"))
        .args(args)
        .arg("-c")
        .arg(cfg);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "egressd {args:?} still running after {BOUND:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn run_refuses_low_memlock_with_exit_4_and_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), free_port(), 2);
    let out = with_memlock(1 << 20, &["run", "--shards", "2"], &cfg);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memlock: need") && err.contains("TOO LOW (set LimitMEMLOCK="),
        "{err}"
    );
}

#[test]
fn check_system_prints_needs_and_haves_with_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), free_port(), 1);
    let fits = with_memlock(8 << 20, &["check-system", "--shards", "1"], &cfg);
    let text = String::from_utf8_lossy(&fits.stdout);
    assert_eq!(fits.status.code(), Some(0), "{text}");
    for item in [
        "memlock: need",
        "nofile: need",
        "cpus: need",
        "kernel: need",
    ] {
        assert!(text.contains(item), "{item} missing:\n{text}");
    }
    let low = with_memlock(1 << 20, &["check-system", "--shards", "1"], &cfg);
    assert_eq!(low.status.code(), Some(4));
    let mut text = String::new();
    low.stdout.as_slice().read_to_string(&mut text).unwrap();
    assert!(text.contains("TOO LOW (set LimitMEMLOCK="), "{text}");
}
