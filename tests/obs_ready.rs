//! `/ready` before and after start, and the access log turned off.
//!
//! The state "admin up, shards not listening yet" is made observable without timing: the
//! access log is a FIFO, whose open(2) for writing waits until a reader opens it, and
//! egressd opens it after the admin server and before the shards. Until the test opens the
//! FIFO, egressd is held exactly there.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{admin_request, free_port, get, istio, origin::Origin};

/// egressd started by hand (the harness waits for `/ready`, which is what is under test).
struct Egressd {
    child: Child,
    /// stderr lines, as they come.
    lines: Receiver<String>,
    seen: Vec<String>,
    /// Everything printed on stdout, once egressd has exited.
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Egressd {
    fn start(config: &Path) -> Egressd {
        let mut child = Command::new(env!("CARGO_BIN_EXE_egressd"))
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn egressd");
        let (tx, lines) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        Egressd {
            child,
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits (at most 20 s) for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "egressd did not log {needle:?}; stderr:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Ends egressd with SIGTERM and returns everything it printed on stdout.
    fn stop(mut self) -> String {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "egressd did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The process is gone, so its stdout is closed and the reader ends.
        self.stdout.take().unwrap().join().unwrap()
    }
}

impl Drop for Egressd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(
    dir: &Path,
    gateway: u16,
    admin: u16,
    access_log: &str,
    origin: u16,
) -> std::path::PathBuf {
    let text = format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\nspec:\n  bindAddress: 127.0.0.1\n  portMap: {{80: {gateway}}}\n  admin: 127.0.0.1:{admin}\n  limits: {{maxConnections: 100}}\n  accessLog: {{path: {access_log:?}}}\n---\n{}",
        istio::one_route("ready.test", origin)
    );
    let path = dir.join("egressd.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn ready_is_503_until_every_shard_listens_then_200() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let origin = Origin::fixed("o", "hi");
    let (gateway, admin_port) = (free_port(), free_port());
    let cfg = config(
        dir.path(),
        gateway,
        admin_port,
        fifo.to_str().unwrap(),
        origin.port(),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut egressd = Egressd::start(&cfg);
    egressd.wait_for("admin listening");

    // egressd now waits in open(2) on the FIFO: no shard has started.
    let (status, body) = admin_request(admin, "GET", "/ready");
    assert_eq!((status, body.as_str()), (503, "PRE_INITIALIZING\n"));
    assert!(
        TcpStream::connect(("127.0.0.1", gateway)).is_err(),
        "the gateway port accepts before /ready said so"
    );
    assert_eq!(admin_request(admin, "GET", "/healthz").0, 200);

    // Becoming the FIFO's reader lets egressd go on; keep reading so lines never block it.
    let reader = std::thread::spawn(move || {
        let mut lines = String::new();
        std::fs::File::open(&fifo)
            .unwrap()
            .read_to_string(&mut lines)
            .unwrap();
        lines
    });
    // Shards are counted before this line is printed, so no poll is needed after it.
    egressd.wait_for("listening name=");
    let (status, body) = admin_request(admin, "GET", "/ready");
    assert_eq!((status, body.as_str()), (200, "LIVE\n"));
    assert_eq!(get(gateway, "ready.test", "/").status, 200);

    egressd.stop();
    // The writer closed the FIFO at exit: the reader sees the end and the one request.
    let lines = reader.join().unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(lines.contains("\"ready.test\""), "{lines}");
}

#[test]
fn an_empty_access_log_path_serves_without_writing_any_log() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::fixed("o", "hi");
    let (gateway, admin_port) = (free_port(), free_port());
    let cfg = config(dir.path(), gateway, admin_port, "", origin.port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut egressd = Egressd::start(&cfg);
    egressd.wait_for("listening name=");
    for _ in 0..3 {
        assert_eq!(get(gateway, "ready.test", "/").status, 200);
    }
    let (_, stats) = admin_request(admin, "GET", "/stats");
    // Stats still count; the writer's counters do not exist because no writer runs.
    assert!(
        stats.contains("cluster.outbound|80||ready.test.upstream_rq_total: 3"),
        "{stats}"
    );
    assert!(!stats.contains("access_log.written"), "{stats}");
    // The default would be stdout: nothing may have gone there, nor into the config dir.
    let stdout = egressd.stop();
    assert_eq!(stdout, "");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from("egressd.yaml")]);
}
