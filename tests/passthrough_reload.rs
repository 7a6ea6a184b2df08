//! Reloads and long-lived TCP connections: a relayed connection keeps the tables it
//! started with across reloads that keep its route, and is closed `timeouts.drain` after a
//! reload that removes it (the one case where a reload ends a connection).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{free_port, Gateway};

/// An echo upstream: every byte read is written back.
fn echo_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A TCP server on port 9000 with a tcp route to `db.internal`, and `extra_host` declared
/// and routed on port 9001 when given (a change that must not touch port 9000).
fn resources(upstream: u16, route_9000: bool, extra: bool) -> String {
    let mut docs = format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.internal]\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {upstream}}}}}]\n---\napiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: egress}}\nspec:\n  servers:\n  - port: {{number: 9000, name: tcp, protocol: TCP}}\n    hosts: [\"*\"]\n---\n"
    );
    if route_9000 {
        docs += "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: db}\nspec:\n  hosts: [db.internal]\n  gateways: [egress]\n  tcp:\n  - match: [{port: 9000}]\n    route:\n    - destination: {host: db.internal, port: {number: 9000}}\n---\n";
    }
    if extra {
        docs += "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: other}\nspec:\n  hosts: [other.internal]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n---\n";
    }
    docs
}

fn reload(gw: &Gateway, resources: &str) {
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let bootstrap = &text[..text.find("---\n").unwrap() + 4];
    std::fs::write(&gw.config, format!("{bootstrap}{resources}")).unwrap();
    let (status, body) = common::admin_request(gw.admin, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
}

fn ping(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    conn.read_exact(&mut back)?;
    Ok(back)
}

#[test]
fn a_relayed_connection_survives_reloads_that_keep_its_route_and_closes_after_drain_when_removed() {
    let upstream = echo_upstream();
    let port = free_port();
    let gw = Gateway::start_with(
        &[(9000, port)],
        "  timeouts: {drain: 1s}\n",
        &resources(upstream, true, false),
        &["--shards", "1"],
    );
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(ping(&mut conn, b"before").unwrap(), b"before");

    for round in 0..3 {
        reload(&gw, &resources(upstream, true, round % 2 == 0));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            ping(&mut conn, b"kept").unwrap(),
            b"kept",
            "reload {round} kept the route"
        );
    }

    reload(&gw, &resources(upstream, false, false));
    let removed_at = Instant::now();
    // Still served during the drain window, then closed.
    let mut closed = false;
    while removed_at.elapsed() < Duration::from_secs(10) {
        if ping(&mut conn, b"x").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed, "the connection whose route was removed is closed");
    assert!(
        removed_at.elapsed() >= Duration::from_millis(900),
        "not before timeouts.drain"
    );
    let lines = gw.access_log_lines(1);
    assert!(
        lines.iter().any(|l| l.contains("route removed by reload")),
        "{lines:?}"
    );
}

/// HTTP on port 80 (a.test, plus b.test in odd versions) and a TCP route on port 9000, on
/// one Gateway; `broken` writes a file with a typo that the reload must reject.
fn mixed(version: usize, http_origin: u16, echo: u16, broken: bool) -> String {
    let extra = if version % 2 == 1 {
        common::istio::static_service("b", "b.test", &[http_origin])
            + "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: vs-b}\nspec:\n  hosts: [b.test]\n  gateways: [egress]\n  http:\n  - route:\n    - destination: {host: b.test, port: {number: 80}}\n---\n"
    } else {
        String::new()
    };
    let typo = if broken { "  hsots: [oops]\n" } else { "" };
    format!(
        "{}{}apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.internal]\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {echo}}}}}]\n---\napiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: egress}}\nspec:\n{typo}  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n  - port: {{number: 9000, name: tcp, protocol: TCP}}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: db}}\nspec:\n  hosts: [db.internal]\n  gateways: [egress]\n  tcp:\n  - match: [{{port: 9000}}]\n    route:\n    - destination: {{host: db.internal, port: {{number: 9000}}}}\n---\n{extra}",
        common::istio::static_service("a", "a.test", &[http_origin]),
        common::istio::virtual_service("a.test", "a.test", ""),
    )
}

#[test]
fn http_and_a_long_relay_lose_nothing_across_twenty_reloads_with_one_invalid_file() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let origin = common::origin::Origin::fixed("a", "ok");
    let echo = echo_upstream();
    let (http_port, tcp_port) = (free_port(), free_port());
    let gw = Gateway::start(
        &[(80, http_port), (9000, tcp_port)],
        &mixed(0, origin.port(), echo, false),
        &["--shards", "2"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let http_client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut conn = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let resp = common::exchange(&mut conn, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
                if resp.status == 200 {
                    ok.fetch_add(1, Ordering::SeqCst)
                } else {
                    failed.fetch_add(1, Ordering::SeqCst)
                };
            }
        })
    };
    let mut relay = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    relay
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for version in 1..=20 {
        let broken = version == 10;
        let text = std::fs::read_to_string(&gw.config).unwrap();
        let bootstrap = &text[..text.find("---\n").unwrap() + 4];
        std::fs::write(
            &gw.config,
            format!("{bootstrap}{}", mixed(version, origin.port(), echo, broken)),
        )
        .unwrap();
        let (status, body) = common::admin_request(gw.admin, "POST", "/reload");
        assert_eq!(
            status,
            if broken { 400 } else { 200 },
            "version {version}: {body}"
        );
        let msg = format!("v{version}");
        assert_eq!(
            ping(&mut relay, msg.as_bytes()).unwrap(),
            msg.as_bytes(),
            "the relay survives reload {version}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    http_client.join().unwrap();
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(
        ok.load(Ordering::SeqCst) > 20,
        "requests flowed during the reloads"
    );
    assert_eq!(gw.stat("server.config_reload.update_rejected"), Some(1));
    assert_eq!(ping(&mut relay, b"after").unwrap(), b"after");
}
