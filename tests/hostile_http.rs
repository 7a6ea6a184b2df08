//! End to end: hostile HTTP/1.1 input through the real binary. Each case sends raw bytes on
//! a fresh connection and asserts the local answer, that the connection is closed after
//! it, and that the origin saw nothing. Upstream faults are in hostile_upstream.rs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{exchange, free_port, Gateway};

const HOST: &str = "a.example.com";

/// A ServiceEntry, a Gateway on port 80 and a VirtualService routing `host` to the origin.
fn route(host: &str, origin_port: u16, route_extra: &str) -> String {
    common::istio::route_with(host, origin_port, route_extra)
}

fn start(bootstrap: &str, resources: &str) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start_with(&[(80, port)], bootstrap, resources, &["--shards", "1"]);
    (gw, port)
}

/// Sends `raw`, reads one response and then expects the gateway to close the connection.
fn status_then_close(port: u16, raw: &[u8]) -> u16 {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resp = exchange(&mut conn, raw);
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    expect_eof(conn);
    resp.status
}

fn expect_eof(mut conn: TcpStream) {
    let mut rest = Vec::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty(), "bytes after a refusal: {rest:?}");
}

fn head_with(headers: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n").into_bytes()
}

#[test]
fn malformed_framing_and_heads_are_refused_before_any_upstream() {
    let origin = Origin::fixed("a", "ok");
    let (gw, port) = start(
        "  limits: {maxConnections: 1000, maxRequestBodyBytes: 1000}\n",
        &route(HOST, origin.port(), ""),
    );
    let many = |n: usize| {
        let mut h = String::new();
        for i in 0..n {
            h.push_str(&format!("X-H{i}: v\r\n"));
        }
        h
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "cl+te",
            head_with("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        (
            "identical duplicate cl",
            head_with("Content-Length: 3\r\nContent-Length: 3\r\n"),
            400,
        ),
        (
            "differing cl",
            head_with("Content-Length: 3\r\nContent-Length: 4\r\n"),
            400,
        ),
        ("cl list", head_with("Content-Length: 3, 3\r\n"), 400),
        ("signed cl", head_with("Content-Length: +3\r\n"), 400),
        ("negative cl", head_with("Content-Length: -1\r\n"), 400),
        ("hex cl", head_with("Content-Length: 0x10\r\n"), 400),
        (
            "te xchunked",
            head_with("Transfer-Encoding: xchunked\r\n"),
            400,
        ),
        (
            "te list",
            head_with("Transfer-Encoding: chunked, chunked\r\n"),
            400,
        ),
        (
            "te gzip",
            head_with("Transfer-Encoding: gzip, chunked\r\n"),
            400,
        ),
        (
            "te twice",
            head_with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        (
            "te identity",
            head_with("Transfer-Encoding: identity\r\n"),
            400,
        ),
        (
            "bare lf",
            format!("GET / HTTP/1.1\nHost: {HOST}\n\n").into_bytes(),
            400,
        ),
        (
            "bare lf in header",
            format!("GET / HTTP/1.1\r\nHost: {HOST}\nX: y\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "bare cr",
            format!("GET / HTTP/1.1\r\nHost: {HOST}\rX: y\r\n\r\n").into_bytes(),
            400,
        ),
        ("nul in value", head_with("X: a\0b\r\n"), 400),
        ("ctl in value", head_with("X: a\x01b\r\n"), 400),
        ("nul in name", head_with("X\0Y: a\r\n"), 400),
        ("obs-fold", head_with("X: a\r\n  folded\r\n"), 400),
        (
            "space before colon",
            head_with("Content-Length : 3\r\n"),
            400,
        ),
        ("duplicate host", head_with("Host: b.example.com\r\n"), 400),
        // Connection may not name a framing header: a hop that dropped it would frame or
        // route the request differently (smuggling). Items are matched case-blind and
        // trimmed of spaces and tabs.
        (
            "connection names content-length",
            head_with("Content-Length: 3\r\nConnection: x,\tCONTENT-LENGTH \r\n"),
            400,
        ),
        (
            "connection names host",
            head_with("Connection: Host\r\n"),
            400,
        ),
        (
            "absolute-form mismatch",
            format!("GET http://b.example.com/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "method with nul",
            format!("GET\0 / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "method non-token",
            format!("G(T / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "http/2.0",
            format!("GET / HTTP/2.0\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            400,
        ),
        (
            "http/1.2",
            format!("GET / HTTP/1.2\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            400,
        ),
        ("101 headers", head_with(&many(100)), 431),
        (
            "head over 60 KiB",
            head_with(&format!("X: {}\r\n", "a".repeat(61 * 1024))),
            431,
        ),
        (
            "declared body over limit",
            head_with("Content-Length: 1001\r\n"),
            413,
        ),
    ];
    for (name, raw, want) in &cases {
        assert_eq!(status_then_close(port, raw), *want, "case {name}");
    }
    // A non-ASCII (UTF-8) Host is refused, not matched against its punycode form (as
    // Envoy does); the head was read whole, so the connection stays usable.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let raw = "GET / HTTP/1.1\r\nHost: b\u{fc}cher.example.com\r\n\r\n";
    assert_eq!(exchange(&mut conn, raw.as_bytes()).status, 400);
    let raw = "GET / HTTP/1.1\r\nHost: a..example.com\r\n\r\n";
    assert_eq!(
        exchange(&mut conn, raw.as_bytes()).status,
        400,
        "empty label"
    );
    drop(conn);
    assert_eq!(
        origin.connection_count(),
        0,
        "a refused request reached the origin"
    );
    let lines = gw.access_log_lines(cases.len() + 2);
    assert_eq!(lines.len(), cases.len() + 2);
    for ((name, _, want), line) in cases.iter().zip(&lines) {
        assert!(
            line.contains(&format!(" {want} DPE ")),
            "case {name}: {line}"
        );
    }
    // The boundaries: exactly 100 headers (Host + 99) and a body at the limit pass.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ok = exchange(&mut conn, &head_with(&many(99)));
    assert_eq!(ok.status, 200);
    let mut raw = head_with("Content-Length: 1000\r\n");
    raw.extend_from_slice(&[b'x'; 1000]);
    assert_eq!(exchange(&mut conn, &raw).status, 200);
    assert_eq!(origin.seen().len(), 2);
}

#[test]
fn bad_chunked_bodies_are_refused_and_never_complete_upstream() {
    let origin = Origin::echo();
    let (_gw, port) = start(
        "  limits: {maxConnections: 1000, maxRequestBodyBytes: 1000}\n",
        &route(HOST, origin.port(), ""),
    );
    let chunked = |body: &[u8]| {
        let mut raw = head_with("Transfer-Encoding: chunked\r\n");
        raw.extend_from_slice(body);
        raw
    };
    let big = {
        let mut b = Vec::new();
        for _ in 0..3 {
            b.extend_from_slice(b"200\r\n");
            b.extend_from_slice(&[b'x'; 0x200]);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"0\r\n\r\n");
        b
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("bad size", chunked(b"zz\r\nab\r\n0\r\n\r\n"), 400),
        ("size then space", chunked(b"2 \r\nab\r\n0\r\n\r\n"), 400),
        ("empty extension", chunked(b"2;\r\nab\r\n0\r\n\r\n"), 400),
        (
            "extension without value",
            chunked(b"2;a=\r\nab\r\n0\r\n\r\n"),
            400,
        ),
        (
            "unterminated quote",
            chunked(b"2;a=\"x\r\nab\r\n0\r\n\r\n"),
            400,
        ),
        (
            "data longer than size",
            chunked(b"2\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        ("chunked over limit", chunked(&big), 413),
    ];
    for (name, raw, want) in &cases {
        assert_eq!(status_then_close(port, raw), *want, "case {name}");
    }
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    // A well-formed extension passes.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ok = exchange(&mut conn, &chunked(b"2;a=\"q\";b\r\nab\r\n0\r\n\r\n"));
    assert_eq!((ok.status, &ok.body[..]), (200, &b"ab"[..]));
}

#[test]
fn wildcard_hosts_need_a_label_and_case_and_dot_normalise() {
    let origin = Origin::fixed("w", "wild");
    let (_gw, port) = start("", &route("*.example.com", origin.port(), ""));
    let status = |host: &str| common::get(port, host, "/").status;
    assert_eq!(
        status("example.com"),
        502,
        "*.example.com must not match the apex"
    );
    assert_eq!(status("a.b.example.com"), 200);
    assert_eq!(status("A.B.Example.COM."), 200);
    assert_eq!(status("xexample.com"), 502);
}

#[test]
fn slowloris_gets_408_and_idle_connections_are_closed() {
    let origin = Origin::fixed("a", "ok");
    let (gw, port) = start(
        "  timeouts: {headerRead: 1s, downstreamIdle: 1s}\n",
        &route(HOST, origin.port(), ""),
    );
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    // One byte every 300 ms of a head that never ends; bounded at 15 s.
    for b in b"GET / HTTP/1.1\r\nHost: a.example.com\r\nX-Slow: "
        .iter()
        .cycle()
    {
        assert!(started.elapsed() < Duration::from_secs(15), "no 408");
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        let mut chunk = [0u8; 512];
        match slow.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // An idle keep-alive connection is closed after downstreamIdle.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ok = exchange(
        &mut idle,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    );
    assert_eq!(ok.status, 200);
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).expect("closed, not timed out");
    assert!(rest.is_empty());
    assert_eq!(origin.seen().len(), 1);
    let lines = gw.access_log_lines(2);
    assert!(lines[0].contains(" 408 DPE "), "{}", lines[0]);
}
