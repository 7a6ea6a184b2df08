//! End to end: HTTP/1.1 egress routed by Host through the real binary, with real origins on
//! loopback. One scenario per test; every test picks its own ports.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::origin::Origin;
use common::{exchange, free_port, get, istio, read_response, Gateway};

fn one_route(host: &str, origin_port: u16, route_extra: &str) -> String {
    istio::route_with(host, origin_port, route_extra)
}

fn start(resources: &str) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], resources, &["--shards", "1"]);
    (gw, port)
}

#[test]
fn allowed_host_is_routed_to_its_origin_with_envoy_headers() {
    let origin = Origin::fixed("a", "hello");
    let (_gw, port) = start(&one_route("a.example.com", origin.port(), ""));
    let resp = get(port, "A.Example.COM.:80", "/x?y=1");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"hello");
    assert!(resp.header("x-envoy-upstream-service-time").is_some());
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/x?y=1");
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
    let id = seen[0].header("x-request-id").expect("x-request-id added");
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "UUIDv4");
}

#[test]
fn unknown_host_gets_502_and_reaches_no_upstream() {
    let origin = Origin::fixed("a", "hello");
    let (gw, port) = start(&one_route("a.example.com", origin.port(), ""));
    let resp = get(port, "evil.example.org", "/");
    assert_eq!(resp.status, 502);
    assert_eq!(origin.connection_count(), 0);
    let lines = gw.access_log_lines(1);
    assert!(lines[0].contains(" 502 NR "), "{}", lines[0]);
    assert!(lines[0].contains(" BlackHoleCluster "), "{}", lines[0]);
    assert_eq!(
        gw.stat("cluster.BlackHoleCluster.upstream_rq_total"),
        Some(1)
    );
}

#[test]
fn wildcard_host_matches_subdomains_but_not_the_bare_domain() {
    let origin = Origin::fixed("w", "wild");
    let (_gw, port) = start(&one_route("*.wild.test", origin.port(), ""));
    assert_eq!(get(port, "a.b.wild.test", "/").status, 200);
    assert_eq!(get(port, "wild.test", "/").status, 502);
    assert_eq!(origin.seen().len(), 1);
}

#[test]
fn weighted_destinations_split_traffic() {
    let (a, b) = (Origin::fixed("a", "A"), Origin::fixed("b", "B"));
    let resources = format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: a}}
spec:
  hosts: [a.split]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: b}}
spec:
  hosts: [b.split]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: egress}}
spec:
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [front.split]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: vs}}
spec:
  hosts: [front.split]
  gateways: [egress]
  http:
  - route:
    - destination: {{host: a.split}}
      weight: 50
    - destination: {{host: b.split}}
      weight: 50
"#,
        a.port(),
        b.port()
    );
    let (_gw, port) = start(&resources);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for _ in 0..60 {
        let resp = exchange(&mut conn, b"GET / HTTP/1.1\r\nHost: front.split\r\n\r\n");
        assert_eq!(resp.status, 200);
    }
    let (na, nb) = (a.seen().len(), b.seen().len());
    assert_eq!(na + nb, 60);
    // Each side gets some: the chance of 60 fair draws all landing on one side is 2^-59.
    assert!(na > 0 && nb > 0, "a={na} b={nb}");
}

#[test]
fn keep_alive_reuses_one_upstream_connection() {
    let origin = Origin::fixed("a", "hello");
    let (gw, port) = start(&one_route("a.example.com", origin.port(), ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for _ in 0..2 {
        let resp = exchange(&mut conn, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n");
        assert_eq!(resp.status, 200);
    }
    assert_eq!(origin.seen().len(), 2);
    assert_eq!(origin.connection_count(), 1);
    assert_eq!(
        gw.stat("cluster.outbound|80||a.example.com.upstream_cx_total"),
        Some(1)
    );
    assert_eq!(
        gw.stat("cluster.outbound|80||a.example.com.upstream_rq_total"),
        Some(2)
    );
    assert_eq!(
        gw.stat("cluster.outbound|80||a.example.com.upstream_rq_200"),
        Some(2)
    );
}

/// An origin that answers one request per connection as keep-alive (no `Connection:
/// close`), then closes the connection 50 ms later, as a server's idle timeout would.
/// Returns its port and the count of connections it accepted.
fn origin_closing_idle_connections() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let (mut head, mut byte) = (Vec::new(), [0u8; 1]);
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                std::thread::sleep(Duration::from_millis(50));
            });
        }
    });
    (port, accepted)
}

/// The pool must not hand out a connection the upstream closed while it sat idle: the
/// second request gets a new upstream connection at once, not a failure or a retry.
#[test]
fn an_upstream_connection_closed_while_idle_is_not_reused() {
    let (origin_port, accepted) = origin_closing_idle_connections();
    let (gw, port) = start(&one_route("a.example.com", origin_port, ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let get = b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n";
    assert_eq!(exchange(&mut conn, get).status, 200);
    // The origin closes its side 50 ms after answering; give the FIN time to arrive.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(exchange(&mut conn, get).status, 200);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    let stat = |name: &str| gw.stat(&format!("cluster.outbound|80||a.example.com.{name}"));
    assert_eq!(stat("upstream_cx_total"), Some(2));
    assert_eq!(stat("upstream_rq_200"), Some(2));
    assert_eq!(stat("upstream_rq_retry").unwrap_or(0), 0);
}

#[test]
fn chunked_and_large_bodies_stream_intact() {
    use sha2::{Digest, Sha256};
    let origin = Origin::echo();
    let (_gw, port) = start(&one_route("echo.test", origin.port(), ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = b"POST /c HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    let resp = exchange(&mut conn, req);
    assert_eq!(resp.body, b"hello world");
    let body: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut head = format!(
        "POST /big HTTP/1.1\r\nHost: echo.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    let writer = {
        let mut w = conn.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&head).unwrap())
    };
    let resp = read_response(&mut conn);
    writer.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(Sha256::digest(&resp.body), Sha256::digest(&body));
}

#[test]
fn upstream_down_gets_503_with_uf() {
    let dead_port = free_port();
    let (gw, port) = start(&one_route("down.test", dead_port, ""));
    let resp = get(port, "down.test", "/");
    assert_eq!(resp.status, 503);
    let line = &gw.access_log_lines(1)[0];
    assert!(line.contains(" 503 UF"), "{line}");
    assert!(
        gw.stat("cluster.outbound|80||down.test.upstream_cx_connect_fail")
            .unwrap()
            >= 1
    );
}

#[test]
fn route_timeout_gives_504_ut() {
    let slow = Origin::start(std::sync::Arc::new(|_req| {
        std::thread::sleep(Duration::from_secs(3));
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
    }));
    let resources = one_route("slow.test", slow.port(), "    timeout: 300ms\n");
    let (gw, port) = start(&resources);
    let resp = get(port, "slow.test", "/");
    assert_eq!(resp.status, 504);
    assert!(gw.access_log_lines(1)[0].contains(" 504 UT "));
}

#[test]
fn expect_100_continue_passes_through() {
    let origin = Origin::echo();
    let (_gw, port) = start(&one_route("echo.test", origin.port(), ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(
        b"POST / HTTP/1.1\r\nHost: echo.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .unwrap();
    let interim = read_response(&mut conn);
    assert_eq!(interim.status, 100);
    conn.write_all(b"ping").unwrap();
    let resp = read_response(&mut conn);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ping");
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let origin = Origin::fixed("a", "ok");
    let (_gw, port) = start(&one_route("a.test", origin.port(), ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Kept: yes\r\n\r\n";
    assert_eq!(exchange(&mut conn, req).status, 200);
    let seen = &origin.seen()[0];
    assert_eq!(seen.header("x-secret"), None);
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(seen.header("x-kept"), Some("yes"));
}

#[test]
fn access_log_line_has_the_21_istio_fields() {
    let origin = Origin::fixed("a", "hello");
    let (gw, port) = start(&one_route("a.example.com", origin.port(), ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = b"GET /politics HTTP/1.1\r\nHost: a.example.com\r\nUser-Agent: curl/7.64.0\r\nX-Request-Id: rid-1\r\n\r\n";
    assert_eq!(exchange(&mut conn, req).status, 200);
    let line = gw.access_log_lines(1).remove(0);
    let fields = split_log_fields(&line);
    assert_eq!(fields.len(), 21, "{line}");
    assert!(fields[0].starts_with('[') && fields[0].ends_with("Z]"));
    assert_eq!(fields[1], "\"GET /politics HTTP/1.1\"");
    assert_eq!(fields[2], "200");
    assert_eq!(fields[3], "-");
    assert_eq!(fields[6], "0");
    assert_eq!(fields[7], "5");
    assert_eq!(fields[10], "\"127.0.0.1\"");
    assert_eq!(fields[11], "\"curl/7.64.0\"");
    assert_eq!(fields[12], "\"rid-1\"");
    assert_eq!(fields[13], "\"a.example.com\"");
    assert_eq!(fields[14], format!("\"127.0.0.1:{}\"", origin.port()));
    assert_eq!(fields[15], "outbound|80||a.example.com");
    assert!(fields[17].starts_with("127.0.0.1:"));
    assert_eq!(fields[19], "-");
    assert_eq!(fields[20], "main");
}

/// Splits an istio-format line into fields: space-separated, quoted fields kept whole.
fn split_log_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut bracket) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            '[' if !quoted => {
                bracket = true;
                cur.push(c)
            }
            ']' if !quoted => {
                bracket = false;
                cur.push(c)
            }
            ' ' if !quoted && !bracket => {
                if !cur.is_empty() {
                    fields.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        fields.push(cur);
    }
    fields
}

#[test]
fn ready_and_admin_errors() {
    let origin = Origin::fixed("a", "hello");
    let (gw, _port) = start(&one_route("a.test", origin.port(), ""));
    assert_eq!(gw.admin_get("/ready").0, 200);
    assert_eq!(gw.admin_get("/healthz").0, 200);
    assert_eq!(gw.admin_get("/nope").0, 404);
    assert_eq!(common::admin_request(gw.admin, "DELETE", "/stats").0, 405);
    assert_eq!(gw.admin_get("/stats?filter=(").0, 400);
}

#[test]
fn bad_config_is_refused_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hsots: [a]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:7:5: ", path.display())), "{err}");
    assert!(err.contains("unknown field"), "{err}");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
}

#[test]
fn malformed_request_gets_400_and_close() {
    let origin = Origin::fixed("a", "hello");
    let (_gw, port) = start(&one_route("a.test", origin.port(), ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resp = exchange(&mut conn, b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc");
    assert_eq!(resp.status, 400);
    let mut rest = Vec::new();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "closed after 400");
    assert_eq!(origin.connection_count(), 0);
}
