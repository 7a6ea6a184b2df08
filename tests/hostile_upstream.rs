//! End to end: hostile or broken upstreams through the real binary. Each fault gets its
//! 5xx (or a closed client connection once a response has begun), a clean access-log line,
//! and the downstream connection stays usable where HTTP allows.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

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

#[test]
fn upstream_faults_give_5xx_and_keep_the_client_connection() {
    let origin = Origin::start(Arc::new(|req| match req.path.as_str() {
        "/garbage" => b"this is not http\r\n\r\n".to_vec(),
        "/huge-head" => {
            let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..2000 {
                r.extend_from_slice(format!("x-h{i}: {}\r\n", "v".repeat(64)).as_bytes());
            }
            r.extend_from_slice(b"content-length: 0\r\n\r\n");
            r
        }
        "/hang" => {
            std::thread::sleep(Duration::from_secs(3));
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
        }
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    }));
    let (gw, port) = start("", &route(HOST, origin.port(), "    timeout: 500ms\n"));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes();
    for (i, (path, want, flag)) in [
        ("/garbage", 502, "UPE"),
        ("/huge-head", 502, "UPE"),
        ("/hang", 504, "UT"),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = exchange(&mut conn, &get(path));
        assert_eq!(resp.status, want, "{path}");
        let ok = exchange(&mut conn, &get("/ok"));
        assert_eq!((ok.status, &ok.body[..]), (200, &b"ok"[..]), "after {path}");
        let lines = gw.access_log_lines(2 * (i + 1));
        assert!(
            lines
                .iter()
                .any(|l| l.contains(path) && l.contains(&format!(" {want} {flag} "))),
            "{path}: {lines:?}"
        );
    }
}

/// A one-behaviour origin on a raw socket: `behave` runs for each accepted connection after
/// its request head was read, on its own thread.
fn raw_origin(behave: fn(&mut TcpStream)) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                behave(&mut conn);
            });
        }
    });
    port
}

#[test]
fn upstream_reset_mid_body_closes_the_client_and_is_logged() {
    let port_up = raw_origin(|c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
        let _ = c.flush();
        std::thread::sleep(Duration::from_millis(100));
        // Dropping the socket closes it: 90 promised bytes never come.
    });
    let (gw, port) = start("", &route(HOST, port_up, ""));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(format!("GET /reset HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert_eq!(body, "0123456789", "a truncated body, then close");
    let lines = gw.access_log_lines(1);
    assert!(lines[0].contains("/reset"), "{}", lines[0]);
}

#[test]
fn upstream_dripping_its_head_past_the_route_timeout_gets_504() {
    let port_up = raw_origin(|c| {
        for b in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
            if c.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (gw, port) = start("", &route(HOST, port_up, "    timeout: 500ms\n"));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resp = exchange(
        &mut conn,
        format!("GET /drip HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    );
    assert_eq!(resp.status, 504);
    let lines = gw.access_log_lines(1);
    assert!(lines[0].contains(" 504 UT "), "{}", lines[0]);
}
