//! Shared harness for end-to-end tests: runs the real `egressd` binary on a config written
//! to a temp dir, waits for its `listening` lines, reads `/stats` and the access log, and
//! kills it on drop. Ports are picked free at run time; everything stays on loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod h2_origin;
pub mod h2raw;
pub mod istio;
pub mod origin;
pub mod process;
pub mod tls;
pub mod tls_origin;

/// A port free on 127.0.0.1 right now (the OS picked it; the gateway binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The bootstrap document: loopback, the given portMap, a free admin port, the access log
/// in the temp dir. `extra` is appended inside `spec` (already indented by two spaces).
pub fn bootstrap(
    port_map: &[(u16, u16)],
    admin: u16,
    log: &std::path::Path,
    extra: &str,
) -> String {
    bootstrap_with_format(port_map, admin, log, "istio", extra)
}

/// `bootstrap` with the access log in `format` (istio, json or an Envoy format string).
pub fn bootstrap_with_format(
    port_map: &[(u16, u16)],
    admin: u16,
    log: &std::path::Path,
    format: &str,
    extra: &str,
) -> String {
    let map: Vec<String> = port_map.iter().map(|(g, b)| format!("{g}: {b}")).collect();
    // `extra` may bring its own `limits`; a second key would be a duplicate.
    let limits = if extra.contains("  limits:") {
        ""
    } else {
        "  limits: {maxConnections: 1000}\n"
    };
    format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\nspec:\n  bindAddress: 127.0.0.1\n  portMap: {{{}}}\n  admin: 127.0.0.1:{admin}\n{limits}  accessLog: {{path: {}, format: {format}}}\n{extra}---\n",
        map.join(", "),
        log.display()
    )
}

pub struct Gateway {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub admin: SocketAddr,
    pub access_log: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts egressd on `resources` (Istio documents) behind a generated bootstrap that
    /// maps each `(gateway_port, bound_port)`; waits until every shard listens.
    pub fn start(port_map: &[(u16, u16)], resources: &str, args: &[&str]) -> Gateway {
        Self::start_with(port_map, "", resources, args)
    }

    pub fn start_with(
        port_map: &[(u16, u16)],
        bootstrap_extra: &str,
        resources: &str,
        args: &[&str],
    ) -> Gateway {
        Self::launch(port_map, "istio", bootstrap_extra, resources, args)
    }

    /// `start` with the access log in `format`.
    pub fn start_with_log_format(
        port_map: &[(u16, u16)],
        format: &str,
        resources: &str,
        args: &[&str],
    ) -> Gateway {
        Self::launch(port_map, format, "", resources, args)
    }

    /// `start_with` with the access log in `format`.
    pub fn start_with_format(
        port_map: &[(u16, u16)],
        format: &str,
        bootstrap_extra: &str,
        resources: &str,
        args: &[&str],
    ) -> Gateway {
        Self::launch(port_map, format, bootstrap_extra, resources, args)
    }

    fn launch(
        port_map: &[(u16, u16)],
        format: &str,
        bootstrap_extra: &str,
        resources: &str,
        args: &[&str],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let access_log = dir.path().join("access.log");
        let admin_port = free_port();
        let config = dir.path().join("egressd.yaml");
        std::fs::write(
            &config,
            bootstrap_with_format(port_map, admin_port, &access_log, format, bootstrap_extra)
                + resources,
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_egressd"))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn egressd");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let gw = Gateway {
            child,
            dir,
            config,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            access_log,
            stderr,
        };
        gw.wait_for_log("admin listening", Duration::from_secs(20));
        gw.wait_ready(Duration::from_secs(20));
        gw
    }

    /// Waits until `/ready` answers 200 (every shard listens). A refused connection is
    /// retried too: if egressd exited (a listener port taken by a parallel test between
    /// `free_port` and its bind), the panic shows its stderr instead of a bare refusal.
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !admin_ready(self.admin) {
            if Instant::now() > deadline {
                panic!(
                    "egressd never became ready; stderr:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a stderr line contains `needle`; panics with the log on timeout or exit.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "egressd did not log {needle:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to this egressd (by its PID).
    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through the command line keeps tests free of unsafe.
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `GET path` on the admin port: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        admin_request(self.admin, "GET", path)
    }

    /// A counter from `/stats`, None when absent.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = self.admin_get("/stats");
        body.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Waits until the access log has at least `n` lines and returns them.
    pub fn access_log_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the admin server at `addr` answers `/ready` with 200: every shard listens. A
/// refused connection is a no, not a panic (the admin port may not be bound yet).
pub fn admin_ready(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_ok() && admin_request(addr, "GET", "/ready").0 == 200
}

pub fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A parsed HTTP/1.1 response read from a client connection.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes on `conn` and reads one response (Content-Length, chunked or close).
pub fn exchange(conn: &mut TcpStream, request: &[u8]) -> Response {
    conn.write_all(request).unwrap();
    read_response(conn)
}

pub fn read_response(conn: &mut TcpStream) -> Response {
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = resp
        .header("content-length")
        .map(|v| v.parse::<usize>().unwrap())
    {
        resp.body = vec![0; len];
        conn.read_exact(&mut resp.body).unwrap();
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = origin::read_chunked(conn);
    } else if resp.status >= 200 && resp.status != 204 && resp.status != 304 {
        conn.read_to_end(&mut resp.body).unwrap();
    }
    resp
}

/// A plain GET with `Host: host` on a new connection.
pub fn get(port: u16, host: &str, path: &str) -> Response {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    exchange(
        &mut conn,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
}
