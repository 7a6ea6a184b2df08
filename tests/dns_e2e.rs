//! End to end: `resolution: DNS` clusters resolved by the control thread against a small
//! DNS server the test runs on loopback. TTL expiry moves traffic to the new address,
//! `denyPrivateAddresses` refuses a private answer (503 UH), and a SERVFAIL keeps the last
//! good answer serving.

mod common;
#[path = "support/dns_server.rs"]
mod dns_server;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{free_port, get, Gateway};
use dns_server::DnsServer;

const NAME: &str = "api.dns-test.example";

/// One origin on `ip:port` answering its own name as the body.
fn origin_on(ip: &str, port: u16) -> Origin {
    let body = ip.to_string();
    Origin::start_on(
        &format!("{ip}:{port}"),
        Arc::new(move |_| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }),
    )
}

/// A port free on both 127.0.0.2 and 127.0.0.3 (the OS picks it on the first).
fn port_free_on_two_addresses() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn resources(upstream_port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: se}}
spec:
  hosts: ["{NAME}"]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {upstream_port}}}]
  resolution: DNS
---
"#
    ) + &common::istio::http_gateway()
        + &common::istio::virtual_service(NAME, NAME, "")
}

fn start(dns: &DnsServer, deny_private: bool, upstream_port: u16) -> (Gateway, u16) {
    let port = free_port();
    let extra = format!(
        "  resolver: {{nameservers: [\"{}\"], denyPrivateAddresses: {deny_private}}}\n",
        dns.addr
    );
    let gw = Gateway::start_with(
        &[(80, port)],
        &extra,
        &resources(upstream_port),
        &["--shards", "1"],
    );
    (gw, port)
}

/// Requests until the body is `want` (bounded); returns how long that took.
fn wait_for_body(port: u16, want: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < limit {
        let resp = get(port, NAME, "/");
        last = format!("{} {}", resp.status, String::from_utf8_lossy(&resp.body));
        if resp.status == 200 && resp.body == want.as_bytes() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never got {want:?} within {limit:?}; last answer: {last}");
}

#[test]
fn ttl_expiry_moves_traffic_to_the_new_address() {
    let dns = DnsServer::start(1);
    let port = port_free_on_two_addresses();
    let (_two, _three) = (origin_on("127.0.0.2", port), origin_on("127.0.0.3", port));
    dns.set(NAME, &["127.0.0.2".parse().unwrap()]);
    let (_gw, gw_port) = start(&dns, false, port);
    wait_for_body(gw_port, "127.0.0.2", Duration::from_secs(15));
    dns.set(NAME, &["127.0.0.3".parse().unwrap()]);
    wait_for_body(gw_port, "127.0.0.3", Duration::from_secs(15));
    // Once moved, it stays moved: the old address is gone from the cluster.
    for _ in 0..5 {
        let resp = get(gw_port, NAME, "/");
        assert_eq!(resp.body, b"127.0.0.3");
    }
}

#[test]
fn a_private_answer_is_refused_when_deny_private_addresses_is_on() {
    let dns = DnsServer::start(1);
    let port = port_free_on_two_addresses();
    let origin = origin_on("127.0.0.2", port);
    dns.set(NAME, &["127.0.0.2".parse().unwrap()]);
    let (gw, gw_port) = start(&dns, true, port);
    gw.wait_for_log("refusing private address", Duration::from_secs(15));
    let resp = get(gw_port, NAME, "/");
    assert_eq!(resp.status, 503);
    let lines = gw.access_log_lines(1);
    assert!(lines.last().unwrap().contains(" 503 UH "), "{lines:?}");
    assert_eq!(
        origin.connection_count(),
        0,
        "the private address was never dialled"
    );
}

#[test]
fn servfail_keeps_the_last_good_answer() {
    let dns = DnsServer::start(1);
    let port = port_free_on_two_addresses();
    let _two = origin_on("127.0.0.2", port);
    dns.set(NAME, &["127.0.0.2".parse().unwrap()]);
    let (gw, gw_port) = start(&dns, false, port);
    wait_for_body(gw_port, "127.0.0.2", Duration::from_secs(15));
    dns.set_servfail(true);
    let before = dns.queries(NAME);
    gw.wait_for_log("keeping the last good answer", Duration::from_secs(15));
    // Several refreshes failed by now (TTL 1 s, retried every 2 s); the answer still serves.
    let deadline = Instant::now() + Duration::from_secs(15);
    while dns.queries(NAME) < before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dns.queries(NAME) >= before + 2, "the gateway kept asking");
    for _ in 0..5 {
        let resp = get(gw_port, NAME, "/");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"127.0.0.2");
    }
}

#[test]
fn a_name_with_only_an_aaaa_record_is_reached_over_ipv6() {
    let dns = DnsServer::start(1);
    let origin = Origin::start_on(
        "[::1]:0",
        Arc::new(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv6".to_vec()),
    );
    dns.set(NAME, &["::1".parse().unwrap()]);
    let (_gw, gw_port) = start(&dns, false, origin.port());
    wait_for_body(gw_port, "v6", Duration::from_secs(15));
}
