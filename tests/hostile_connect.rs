//! End to end: CONNECT through the real binary. A tunnel opens only where a route says
//! `method: {exact: CONNECT}` and its ServiceEntry port is the one the client named;
//! every other CONNECT gets 403 and the connection closes, reaching no upstream. A tunnel
//! that goes silent is closed after `timeouts.downstreamIdle`, both sides, and logged with
//! Envoy's `SI` flag; CONNECT lines carry no path (`"CONNECT - HTTP/1.1"`), as Envoy's do.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, Gateway};

/// A TCP echo server counting the connections it accepted and those that have ended.
fn echo_server() -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (seen, done) = (count.clone(), ended.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            seen.fetch_add(1, Ordering::SeqCst);
            let done = done.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, count, ended)
}

fn resources(echo_port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: tunnel}}
spec:
  hosts: ["tunnel.example.com"]
  ports: [{{number: 443, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {echo_port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: plain}}
spec:
  hosts: ["plain.example.com"]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {echo_port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: egress}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: tunnel}}
spec:
  hosts: ["tunnel.example.com"]
  gateways: [egress]
  http:
  - name: connect
    match: [{{method: {{exact: CONNECT}}}}]
    route:
    - destination: {{host: tunnel.example.com, port: {{number: 443}}}}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: plain}}
spec:
  hosts: ["plain.example.com"]
  gateways: [egress]
  http:
  - route:
    - destination: {{host: plain.example.com, port: {{number: 80}}}}
"#
    )
}

fn connect_status(port: u16, target: &str) -> (TcpStream, u16) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    // A 200 to CONNECT has no body framing: read the head only.
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
    (conn, status)
}

#[test]
fn connect_tunnels_only_where_a_route_allows_it() {
    let (echo_port, echo_conns, _) = echo_server();
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &resources(echo_port), &["--shards", "1"]);
    for target in [
        "plain.example.com:80",
        "tunnel.example.com:444",
        "other.example.com:443",
    ] {
        let (mut conn, status) = connect_status(port, target);
        assert_eq!(status, 403, "{target}");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        // The 403's body, then the close.
        assert_eq!(rest, b"forbidden\n", "{target}: connection must close");
    }
    assert_eq!(echo_conns.load(Ordering::SeqCst), 0);
    gw.wait_for_log("CONNECT refused", Duration::from_secs(10));

    let (mut tunnel, status) = connect_status(port, "tunnel.example.com:443");
    assert_eq!(status, 200);
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for msg in [&b"ping"[..], b"\x16\x03\x01 any bytes, not HTTP\r\n\r\n"] {
        tunnel.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        tunnel.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    // Half-close from the client ends the tunnel once the echo side closes too.
    tunnel.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(echo_conns.load(Ordering::SeqCst), 1);
    let lines = gw.access_log_lines(4);
    // The authority-form target is no path: Envoy logs `-` there, and the target under
    // %REQ(:AUTHORITY)%. The peers ended this tunnel, so no flag.
    let tunnel_line = lines
        .iter()
        .find(|l| l.contains(r#""CONNECT - HTTP/1.1" 200 - "#))
        .unwrap_or_else(|| panic!("no CONNECT 200 line: {lines:?}"));
    assert!(
        tunnel_line.contains(r#""tunnel.example.com:443""#),
        "{tunnel_line}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""CONNECT - HTTP/1.1" 403 "#)),
        "{lines:?}"
    );
}

#[test]
fn a_silent_connect_tunnel_is_closed_after_the_idle_timeout_and_logged() {
    let (echo_port, echo_conns, echo_ended) = echo_server();
    let port = free_port();
    let gw = Gateway::start_with(
        &[(80, port)],
        "  timeouts: {downstreamIdle: 1s}\n",
        &resources(echo_port),
        &["--shards", "1"],
    );
    let (mut tunnel, status) = connect_status(port, "tunnel.example.com:443");
    assert_eq!(status, 200);
    tunnel.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    // Then nothing either way: the gateway must end the tunnel itself. The client sees
    // EOF (bounded by the 10 s read timeout: a timeout fails the test).
    let mut rest = Vec::new();
    tunnel
        .read_to_end(&mut rest)
        .expect("the gateway closes a silent tunnel");
    assert!(rest.is_empty(), "{rest:?}");
    gw.wait_for_log("CONNECT tunnel closed", Duration::from_secs(10));
    // The upstream side was closed too, not left open behind the client's back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while echo_ended.load(Ordering::SeqCst) < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(echo_conns.load(Ordering::SeqCst), 1);
    assert_eq!(
        echo_ended.load(Ordering::SeqCst),
        1,
        "upstream side still open"
    );
    let lines = gw.access_log_lines(1);
    let line = lines
        .iter()
        .find(|l| l.contains(r#""CONNECT - HTTP/1.1" 200 SI "#))
        .unwrap_or_else(|| panic!("no CONNECT line with SI: {lines:?}"));
    // 4 bytes each way went through before the silence.
    assert!(line.contains(r#" 4 4 "#), "{line}");
}
