//! End to end: resource limits against hostile clients through the real binary. Connection
//! caps count overflow, a client that does not read cannot make the gateway buffer a large
//! response, and idle keep-alive connections cost little memory (measured from VmRSS).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::process::{raise_own_nofile, rss};
use common::{exchange, free_port, Gateway};

fn resources(origin_port: u16) -> String {
    common::istio::one_route("a.example.com", origin_port)
}

fn start(limits: &str, origin_port: u16) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start_with(
        &[(80, port)],
        &format!("  limits: {limits}\n"),
        &resources(origin_port),
        &["--shards", "1"],
    );
    (gw, port)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n";

#[test]
fn connection_cap_closes_the_extra_connection_and_counts_it() {
    let origin = Origin::fixed("a", "ok");
    let (gw, port) = start("{maxConnections: 2}", origin.port());
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(exchange(&mut c, GET).status, 200);
        held.push(c);
    }
    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = third.write_all(GET);
    let mut got = Vec::new();
    // Closed without an answer: EOF or a reset, never a response.
    let _ = third.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    let name = format!("listener.127.0.0.1_{port}.downstream_cx_overflow");
    assert_eq!(gw.stat(&name), Some(1), "{name}");
    // Freeing one slot admits a new connection again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(GET);
        let mut head = [0u8; 12];
        if c.read_exact(&mut head).is_ok() {
            assert_eq!(&head[9..12], b"200");
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_does_not_read_cannot_make_the_gateway_buffer() {
    const SIZE: usize = 50 << 20;
    let origin = Origin::start(Arc::new(|_req| {
        let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n").into_bytes();
        r.resize(r.len() + SIZE, b'x');
        r
    }));
    let (gw, port) = start("{maxConnections: 100}", origin.port());
    // Warm up: one full response read to the end, so allocator pools exist already.
    let mut warm = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resp = exchange(&mut warm, GET);
    assert_eq!(resp.body.len(), SIZE);
    let before = rss(gw.pid());
    let mut lazy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    lazy.write_all(GET).unwrap();
    // The origin writes all 50 MiB as fast as it can; the client reads nothing for 3 s.
    let mut peak = before;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        peak = peak.max(rss(gw.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = peak.saturating_sub(before);
    eprintln!("RSS before {before} peak {peak}: +{} KiB", grown / 1024);
    assert!(grown < 32 << 20, "egressd buffered {grown} bytes");
    // The response is still whole once the client reads it.
    lazy.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while total < SIZE {
        let n = lazy.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {total} bytes");
        total += n;
    }
}

#[test]
fn idle_keep_alive_connections_cost_little_memory() {
    const CONNS: usize = 9000;
    match raise_own_nofile() {
        Some(n) if n as usize >= CONNS + 200 => {}
        other => {
            eprintln!("skipped: RLIMIT_NOFILE hard {other:?} < {CONNS} + 200");
            return;
        }
    }
    // No origin is needed: an unknown host gets a local 502, which still takes and
    // returns the connection's buffers like any request.
    let origin = Origin::fixed("a", "ok");
    let (gw, port) = start(&format!("{{maxConnections: {CONNS}}}"), origin.port());
    let probe = b"GET / HTTP/1.1\r\nHost: unknown.example.org\r\n\r\n";
    let mut warm = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(exchange(&mut warm, probe).status, 502);
    let before = rss(gw.pid());
    let started = Instant::now();
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 1..CONNS {
        assert!(started.elapsed() < Duration::from_secs(240), "too slow");
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(exchange(&mut c, probe).status, 502);
        conns.push(c);
    }
    let after = rss(gw.pid());
    let per_conn = after.saturating_sub(before) / (CONNS as u64 - 1);
    eprintln!(
        "{} idle keep-alive connections: RSS {before} -> {after}, {per_conn} bytes each",
        CONNS - 1
    );
    let active = format!("listener.127.0.0.1_{port}.downstream_cx_active");
    assert_eq!(gw.stat(&active), Some(CONNS as u64), "{active}");
    assert!(per_conn < 16 * 1024, "{per_conn} bytes per idle connection");
}

/// The lowest file descriptor number not open in `pid`: the next one it would get.
fn lowest_free_fd(pid: u32) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

fn set_soft_nofile(pid: u32, soft: &str) -> bool {
    std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn accept_backs_off_on_emfile_and_recovers() {
    let origin = Origin::fixed("a", "ok");
    let (gw, port) = start("{maxConnections: 100}", origin.port());
    let pid = gw.pid();
    let mut warm = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(exchange(&mut warm, GET).status, 200);
    // No free descriptor left for egressd: the next accept fails with EMFILE.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let original = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .expect("soft nofile")
        .to_string();
    let soft = lowest_free_fd(pid);
    if !set_soft_nofile(pid, &soft.to_string()) {
        eprintln!("skipped: prlimit cannot change egressd's RLIMIT_NOFILE");
        return;
    }
    let mut waiting = TcpStream::connect(("127.0.0.1", port)).unwrap();
    waiting.write_all(GET).unwrap();
    gw.wait_for_log("backing off", Duration::from_secs(10));
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "egressd died"
    );
    // With descriptors back, the connection waiting in the backlog is served.
    assert!(set_soft_nofile(pid, &original));
    let resp = common::read_response(&mut waiting);
    assert_eq!((resp.status, &resp.body[..]), (200, &b"ok"[..]));
}
