//! `h2UpgradePolicy: UPGRADE`: HTTP/1.1 and HTTP/2 clients' requests reach an HTTP/2
//! upstream as streams multiplexed on one pooled connection per shard, bodies stream both
//! ways (chunked and content-length), and the response is framed for HTTP/1.1 clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::h2_origin::H2Origin;
use common::istio::{http_gateway, static_service, virtual_service};
use common::origin::read_chunked;
use common::{free_port, Gateway};

fn resources(origin: u16) -> String {
    static_service("a", "a.example.com", &[origin])
        + &http_gateway()
        + &virtual_service("a.example.com", "a.example.com", "")
        + "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: a-h2}\nspec:\n  host: a.example.com\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n---\n"
}

/// One HTTP/1.1 exchange with `Connection: close`, read to the end: the head as sent and
/// the body with its chunk framing removed.
fn http1(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let body = if head.contains("transfer-encoding: chunked") {
        String::from_utf8(read_chunked(&mut body.as_bytes())).unwrap()
    } else {
        body.to_string()
    };
    format!("{head}\r\n\r\n{body}")
}

#[test]
fn http1_and_http2_clients_share_one_multiplexed_http2_upstream_connection() {
    let origin = H2Origin::start();
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &resources(origin.port()), &["--shards", "1"]);

    // Twenty HTTP/1.1 clients at once.
    let clients: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                http1(
                    port,
                    format!(
                        "GET /c{i} HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let resp = c.join().unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("transfer-encoding: chunked"), "{resp}");
        assert!(resp.contains("x-origin-protocol: HTTP/2"), "{resp}");
        assert!(
            resp.contains(&format!(
                "GET /c{i} authority=a.example.com xff=127.0.0.1 len=0"
            )),
            "{resp}"
        );
    }

    // A chunked upload and a content-length one, streamed into HTTP/2 DATA frames.
    let body = "x".repeat(200_000);
    let chunked = format!(
        "POST /up HTTP/1.1\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let resp = http1(port, chunked.as_bytes());
    assert!(
        resp.contains(&format!(
            "POST /up authority=a.example.com xff=127.0.0.1 len={}\n{body}",
            body.len()
        )),
        "{}",
        &resp[..300.min(resp.len())]
    );
    let sized = format!(
        "PUT /up HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = http1(port, sized.as_bytes());
    assert!(resp.contains(&format!(
        "PUT /up authority=a.example.com xff=127.0.0.1 len={}",
        body.len()
    )));

    // An HTTP/2 client (h2c) on the same gateway: HTTP/2 on both sides.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "20"])
        .args([
            "--connect-to",
            &format!("a.example.com:80:127.0.0.1:{port}"),
        ])
        .arg("http://a.example.com/via-h2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("GET /via-h2 authority=a.example.com"),
        "{text}"
    );

    assert_eq!(origin.streams.load(std::sync::atomic::Ordering::SeqCst), 23);
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
    assert_eq!(
        gw.stat("cluster.outbound|80||a.example.com.upstream_cx_total"),
        Some(1)
    );
    assert_eq!(
        gw.stat("cluster.outbound|80||a.example.com.upstream_rq_200"),
        Some(23)
    );
}

/// nghttpd (nghttp2-server) on a free port, serving `docroot` over TLS with ALPN h2 only;
/// killed on drop.
struct Nghttpd(std::process::Child, u16);

impl Nghttpd {
    fn start(docroot: &std::path::Path, key: &std::path::Path, cert: &std::path::Path) -> Nghttpd {
        let port = free_port();
        let child = std::process::Command::new("nghttpd")
            .arg(format!("--htdocs={}", docroot.display()))
            .args(["--address=127.0.0.1", &port.to_string()])
            .arg(key)
            .arg(cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nghttpd (CI installs nghttp2-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nghttpd did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nghttpd(child, port)
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tls_origination_negotiates_h2_by_alpn_and_multiplexes_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::tls::Pki::new(dir.path(), "upstream");
    let leaf = pki.issue(&egressd::tls::demo_pki::LeafSpec::new("cnn").dns("edition.cnn.com"));
    let (key, cert) = (
        dir.path().join("up-key.pem"),
        dir.path().join("up-cert.pem"),
    );
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    let docroot = dir.path().join("www");
    std::fs::create_dir_all(&docroot).unwrap();
    std::fs::write(docroot.join("politics"), "served over h2\n").unwrap();
    let upstream = Nghttpd::start(&docroot, &key, &cert);
    let resources = format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  ports:\n  - {{number: 443, name: https, protocol: HTTPS}}\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{https: {}}}}}\n---\n{}apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [egress]\n  http:\n  - route:\n    - destination: {{host: edition.cnn.com, port: {{number: 443}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: cnn-h2}}\nspec:\n  host: edition.cnn.com\n  trafficPolicy:\n    connectionPool:\n      http: {{h2UpgradePolicy: UPGRADE}}\n    tls: {{mode: SIMPLE, caCertificates: {}}}\n",
        upstream.1,
        http_gateway(),
        pki.root.display()
    );
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &resources, &["--shards", "1"]);
    for i in 0..20 {
        let resp = http1(
            port,
            format!("GET /politics?n={i} HTTP/1.1\r\nHost: edition.cnn.com\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nserved over h2\n"), "{resp}");
    }
    let cluster = "cluster.outbound|443||edition.cnn.com";
    assert_eq!(gw.stat(&format!("{cluster}.upstream_cx_total")), Some(1));
    assert_eq!(gw.stat(&format!("{cluster}.ssl.handshake")), Some(1));
    assert_eq!(gw.stat(&format!("{cluster}.upstream_rq_200")), Some(20));
}
