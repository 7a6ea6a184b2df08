//! TLS passthrough by SNI, end to end through the real binary: clients (openssl s_client,
//! rustls) reach a loopback TLS origin through egressd and see the origin's own
//! certificate; odd ClientHello framings route like whole ones; unroutable connections are
//! closed before any upstream connect; bulk bytes cross intact with half-close; stats and
//! the access log say what happened.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::tls_origin::{self, tls_exchange, BulkPeer, HelloDelivery, TlsOrigin};
use common::{free_port, Gateway};

const SNI: &str = "edition.cnn.com";
const CLUSTER: &str = "outbound|443||edition.cnn.com";

/// The guide's passthrough resources (tests/fixtures/3-tls-passthrough.yaml), with the
/// ServiceEntry resolved STATIC to the loopback origin.
fn passthrough_resources(origin_port: u16) -> String {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/3-tls-passthrough.yaml"
    ))
    .unwrap();
    let entry = format!(
        "  resolution: STATIC\n  endpoints:\n  - address: 127.0.0.1\n    ports:\n      tls: {origin_port}\n"
    );
    let out = fixture.replacen("  resolution: DNS\n", &entry, 1);
    assert_ne!(out, fixture, "the fixture's ServiceEntry changed shape");
    out
}

/// egressd on one shard serving the passthrough fixture; returns it and the bound port.
fn passthrough_gateway(origin: &TlsOrigin, bootstrap_extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start_with(
        &[(443, port)],
        bootstrap_extra,
        &passthrough_resources(origin.addr.port()),
        &["--shards", "1"],
    );
    (gw, port)
}

/// True when the server closed `conn` (EOF or reset) without sending anything.
fn closed_silently(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Splits an `istio` access-log line into its fields (quoted fields keep their spaces).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn rustls_client_reaches_the_origin_by_sni_and_the_log_and_stats_say_so() {
    let origin = TlsOrigin::start(&[SNI]);
    let (gw, port) = passthrough_gateway(&origin, "");
    for _ in 0..2 {
        let seen = tls_exchange(
            port,
            SNI,
            origin.client_config(vec![]),
            HelloDelivery::Whole,
        )
        .unwrap();
        assert_eq!(
            seen.peer_cert, origin.cert_der,
            "the client sees the origin's own certificate"
        );
        assert_eq!(seen.reply, "pong ping\n");
    }
    assert_eq!(origin.accepted(), 2);

    let lines = gw.access_log_lines(2);
    assert_eq!(lines.len(), 2, "one line per connection: {lines:?}");
    let f = fields(&lines[0]);
    assert_eq!(f.len(), 21, "{}", lines[0]);
    assert_eq!(&f[1..4], ["\"- - -\"", "0", "-"], "{}", lines[0]);
    assert!(
        f[6].parse::<u64>().unwrap() > 200,
        "bytes received include the hello: {}",
        lines[0]
    );
    assert!(
        f[7].parse::<u64>().unwrap() > 200,
        "bytes sent include the origin's flight: {}",
        lines[0]
    );
    assert_eq!(f[14], format!("\"{}\"", origin.addr), "{}", lines[0]);
    assert_eq!(f[15], CLUSTER);
    assert!(
        f[16].starts_with("127.0.0.1:"),
        "upstream local address: {}",
        lines[0]
    );
    assert_eq!(f[17], format!("127.0.0.1:{port}"));
    assert_eq!(f[19], SNI);

    let deadline = Instant::now() + Duration::from_secs(10);
    let stat = |name: &str| gw.stat(&format!("cluster.{CLUSTER}.{name}"));
    while stat("upstream_cx_active") != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stat("upstream_cx_total"), Some(2));
    assert_eq!(stat("upstream_cx_active"), Some(0));
    assert!(stat("upstream_cx_tx_bytes_total").unwrap() >= f[6].parse::<u64>().unwrap());
    assert!(stat("upstream_cx_rx_bytes_total").unwrap() >= f[7].parse::<u64>().unwrap());
    assert_eq!(gw.stat("tls_inspector.sni_found"), Some(2));
}

#[test]
fn openssl_s_client_sees_the_origin_certificate() {
    let origin = TlsOrigin::start(&[SNI]);
    let (_gw, port) = passthrough_gateway(&origin, "");
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &origin.cert_pem).unwrap();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            SNI,
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(ca.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is installed");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    child.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !out.iter().any(|l: &String| l.contains("pong ping")) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            out.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = out.join("\n");
    assert!(
        text.contains("pong ping"),
        "no answer through egressd:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("subject=") && l.contains("CN") && l.contains(SNI)),
        "{text}"
    );
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert_eq!(origin.accepted(), 1);
}

#[test]
fn split_and_trickled_and_padded_hellos_route_like_whole_ones() {
    let origin = TlsOrigin::start(&[SNI]);
    let (_gw, port) = passthrough_gateway(&origin, "");
    for delivery in [HelloDelivery::ByteAtATime, HelloDelivery::TwoRecords] {
        let seen = tls_exchange(port, SNI, origin.client_config(vec![]), delivery).unwrap();
        assert_eq!(seen.peer_cert, origin.cert_der, "{delivery:?}");
        assert_eq!(seen.reply, "pong ping\n", "{delivery:?}");
    }
    // Long ALPN names pad the hello past 1.8 KB, the size post-quantum key shares reach.
    let alpn: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 200]).collect();
    let seen = tls_exchange(port, SNI, origin.client_config(alpn), HelloDelivery::Whole).unwrap();
    assert!(seen.hello_len > 1800, "hello of {} bytes", seen.hello_len);
    assert_eq!(seen.reply, "pong ping\n");
    assert_eq!(origin.accepted(), 3);
}

#[test]
fn unknown_sni_and_non_tls_bytes_are_closed_before_any_upstream_connect() {
    let origin = TlsOrigin::start(&[SNI, "other.example.com"]);
    let (gw, port) = passthrough_gateway(&origin, "  timeouts: {sniPeek: 1s}\n");
    let refused = tls_exchange(
        port,
        "other.example.com",
        origin.client_config(vec![]),
        HelloDelivery::Whole,
    );
    assert!(refused.is_err(), "a name no route declares must not pass");

    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: edition.cnn.com\r\n\r\n")
        .unwrap();
    assert!(closed_silently(&mut plain));

    // Half a hello, then silence: closed after timeouts.sniPeek.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    assert!(closed_silently(&mut slow));

    assert_eq!(origin.accepted(), 0, "nothing reached the upstream");
    let lines = gw.access_log_lines(3);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().all(|l| fields(l)[15] == "BlackHoleCluster"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| fields(l)[19] == "other.example.com" && fields(l)[3] == "NR"),
        "{lines:?}"
    );
    let listener = format!("listener.127.0.0.1_{port}");
    assert_eq!(
        gw.stat(&format!("{listener}.downstream_cx_no_route")),
        Some(2)
    );
    assert_eq!(
        gw.stat(&format!("{listener}.downstream_pre_cx_timeout")),
        Some(1)
    );
    assert_eq!(
        gw.stat("cluster.BlackHoleCluster.upstream_rq_total"),
        Some(2)
    );
    assert_eq!(gw.stat("tls_inspector.tls_not_found"), Some(1));
}

/// 256 MiB each way through a TCP listener's `tcp` route; the client half-closes first and
/// the upstream keeps sending after it saw that EOF. (About 35 s in a debug build, where the
/// test's own pattern generation and hashing dominate.)
#[test]
fn bulk_transfer_both_ways_arrives_intact_with_half_close() {
    let total: u64 = 256 << 20;
    let peer = BulkPeer::start(2, total);
    let port = free_port();
    let resources = format!(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: bulk}}
spec:
  hosts: [bulk.internal]
  ports:
  - {{number: 9000, name: tcp, protocol: TCP}}
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {{tcp: {}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {{name: istio-egressgateway}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 9000, name: tcp, protocol: TCP}}
    hosts: [bulk.internal]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: bulk}}
spec:
  hosts: [bulk.internal]
  gateways: [istio-egressgateway]
  tcp:
  - match:
    - port: 9000
    route:
    - destination: {{host: bulk.internal, port: {{number: 9000}}}}
"#,
        peer.addr.port()
    );
    let gw = Gateway::start(&[(9000, port)], &resources, &["--shards", "1"]);
    let started = Instant::now();
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut reader = conn.try_clone().unwrap();
    let read = std::thread::spawn(move || tls_origin::drain_hash(&mut reader).unwrap());
    let sent = tls_origin::send_pattern(&mut &conn, 1, total).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let received = read.join().unwrap();
    let report = peer
        .report
        .recv_timeout(Duration::from_secs(120))
        .unwrap()
        .unwrap();
    eprintln!("{} MiB each way in {:?}", total >> 20, started.elapsed());
    assert_eq!(report.received, (total, sent), "client -> upstream");
    assert_eq!(received, (total, report.sent), "upstream -> client");
    let lines = gw.access_log_lines(1);
    let f = fields(&lines[0]);
    assert_eq!(
        (f[6].as_str(), f[7].as_str()),
        (total.to_string().as_str(), total.to_string().as_str()),
        "{}",
        lines[0]
    );
    assert_eq!(f[15], "outbound|9000||bulk.internal");
    assert_eq!(f[19], "-", "no SNI on a TCP listener");
}

#[test]
fn a_dead_endpoint_is_retried_on_the_next_and_all_dead_logs_uf() {
    let origin = TlsOrigin::start(&[SNI]);
    let dead = free_port();
    let resources = passthrough_resources(origin.addr.port()).replacen(
        "  endpoints:\n",
        &format!("  endpoints:\n  - address: 127.0.0.1\n    ports:\n      tls: {dead}\n"),
        1,
    );
    let port = free_port();
    let gw = Gateway::start(&[(443, port)], &resources, &["--shards", "1"]);
    for _ in 0..2 {
        let seen = tls_exchange(
            port,
            SNI,
            origin.client_config(vec![]),
            HelloDelivery::Whole,
        )
        .unwrap();
        assert_eq!(seen.reply, "pong ping\n");
    }
    let stat = |name: &str| gw.stat(&format!("cluster.{CLUSTER}.{name}"));
    assert!(
        stat("upstream_cx_connect_fail").unwrap() >= 1,
        "round robin met the dead endpoint"
    );
    assert_eq!(stat("upstream_cx_total"), Some(2));
    drop(gw);

    // Only the dead endpoint: the first try and both retries fail, the client is closed.
    let only_dead = passthrough_resources(dead);
    let port = free_port();
    let gw = Gateway::start(&[(443, port)], &only_dead, &["--shards", "1"]);
    let failed = tls_exchange(
        port,
        SNI,
        origin.client_config(vec![]),
        HelloDelivery::Whole,
    );
    assert!(failed.is_err());
    let lines = gw.access_log_lines(1);
    let f = fields(&lines[0]);
    assert_eq!(
        (f[3].as_str(), f[15].as_str(), f[19].as_str()),
        ("UF", CLUSTER, SNI),
        "{}",
        lines[0]
    );
    assert_eq!(f[14], format!("\"127.0.0.1:{dead}\""));
    assert_eq!(stat_of(&gw, "upstream_cx_connect_fail"), Some(3));
    assert_eq!(stat_of(&gw, "upstream_cx_total"), Some(0));
}

fn stat_of(gw: &Gateway, name: &str) -> Option<u64> {
    gw.stat(&format!("cluster.{CLUSTER}.{name}"))
}
