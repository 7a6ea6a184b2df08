//! Memory per idle downstream connection, plain HTTP and mutual TLS, measured from egressd's
//! VmRSS: open N connections, one request each (so every connection has been through a
//! whole exchange and is back in its idle keep-alive state), then compare RSS with the
//! figure before. Records the numbers in perf-results/2026-11-27-idle-memory.md; rerun with
//!
//!   EGRESSD_IDLE_CONNS=2000 cargo test --release --test idle_memory -- --nocapture
//!
//! Without the variable each test opens a few hundred connections (enough for a stable
//! per-connection figure, cheap enough for CI) and asserts the bound.
//!
//! Limits: `egressd run` wants RLIMIT_NOFILE ≥ 8 × maxConnections when a listener
//! terminates TLS, so maxConnections is N + 100 and the test raises its own soft limit to
//! the hard one (the gateway inherits it); with too low a hard limit the test says so and
//! skips.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::process::{raise_own_nofile, rss};
use common::tls::{client_config, tls_connect, ClientTls, Pki};
use common::{exchange, free_port, Gateway};

/// N from EGRESSD_IDLE_CONNS, else `default`.
fn conns(default: usize) -> usize {
    std::env::var("EGRESSD_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// RSS growth per connection while `open` adds `n` idle connections to `gw`'s process.
fn per_connection<C>(gw: &Gateway, n: usize, mut open: impl FnMut() -> C) -> (u64, u64, u64) {
    let before = rss(gw.pid());
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        assert!(started.elapsed() < Duration::from_secs(300), "too slow");
        held.push(open());
    }
    // Every connection has had its answer: the gateway is idle on all of them.
    let after = rss(gw.pid());
    let each = after.saturating_sub(before) / n as u64;
    (before, after, each)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: edition.cnn.com\r\n\r\n";

/// Reads one response with a 2-byte body ("ok") off a keep-alive TLS stream.
fn tls_exchange(tls: &mut ClientTls) {
    tls.write_all(GET).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"ok")) {
        let n = tls.read(&mut buf).expect("response");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn idle_mutual_tls_connections_cost_bounded_memory() {
    let n = conns(300);
    let max = n + 100;
    match raise_own_nofile() {
        Some(hard) if hard as usize >= 8 * max => {}
        other => {
            eprintln!("skipped: RLIMIT_NOFILE hard {other:?} < 8 x {max}");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let origin = Origin::fixed("cnn", "ok");
    let port = free_port();
    let resources = format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: egress}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [edition.cnn.com]\n    tls: {{mode: MUTUAL, serverCertificate: {}, privateKey: {}, caCertificates: {}}}\n---\n{}{}",
        pki.cert_chain.display(),
        pki.key.display(),
        pki.root.display(),
        common::istio::static_service("cnn", "edition.cnn.com", &[origin.port()]),
        common::istio::virtual_service("edition.cnn.com", "edition.cnn.com", ""),
    );
    let gw = Gateway::start_with(
        &[(443, port)],
        &format!("  limits: {{maxConnections: {max}}}\n"),
        &resources,
        &["--shards", "1"],
    );
    let client = pki.client();
    let config = client_config(&std::fs::read_to_string(&pki.root).unwrap(), Some(&client));
    let open = || {
        let (mut tls, _) = tls_connect(port, "edition.cnn.com", config.clone()).expect("handshake");
        tls_exchange(&mut tls);
        tls
    };
    // Warm-up: the first handshakes and exchanges allocate what every later one reuses
    // (allocator arenas, the upstream pool's connection).
    let warm: Vec<_> = (0..20).map(|_| open()).collect();
    let (before, after, each) = per_connection(&gw, n, open);
    println!(
        "mTLS idle: {n} connections, RSS {} -> {} KiB, {:.1} KiB each",
        before / 1024,
        after / 1024,
        each as f64 / 1024.0
    );
    drop(warm);
    assert!(each < 64 * 1024, "{each} bytes per idle mTLS connection");
}

#[test]
fn idle_plain_connections_cost_bounded_memory() {
    let n = conns(300);
    let max = n + 100;
    match raise_own_nofile() {
        Some(hard) if hard as usize >= max + 200 => {}
        other => {
            eprintln!("skipped: RLIMIT_NOFILE hard {other:?} < {max} + 200");
            return;
        }
    }
    let origin = Origin::fixed("cnn", "ok");
    let port = free_port();
    let gw = Gateway::start_with(
        &[(80, port)],
        &format!("  limits: {{maxConnections: {max}}}\n"),
        &common::istio::one_route("edition.cnn.com", origin.port()),
        &["--shards", "1"],
    );
    let open = || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let resp = exchange(&mut c, GET);
        assert_eq!((resp.status, &resp.body[..]), (200, &b"ok"[..]));
        c
    };
    let warm: Vec<_> = (0..20).map(|_| open()).collect();
    let (before, after, each) = per_connection(&gw, n, open);
    println!(
        "plain idle: {n} connections, RSS {} -> {} KiB, {:.1} KiB each",
        before / 1024,
        after / 1024,
        each as f64 / 1024.0
    );
    drop(warm);
    assert!(each < 8 * 1024, "{each} bytes per idle plain connection");
}
