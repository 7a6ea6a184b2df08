//! Terminating TLS on Gateway servers: sidecars with a client certificate reach an HTTP
//! upstream through MUTUAL and ISTIO_MUTUAL HTTPS servers (rustls and curl), a TLS server
//! forwards the inner bytes by its tcp route, and every peer the policy refuses (no
//! certificate, another CA, expired, a disallowed SAN, an unknown SNI) fails its handshake
//! before anything reaches the upstream. Certificates rotate on disk without a restart.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::tls::{client_config, tls_connect, tls_request, Echo, Pki};
use common::{free_port, Gateway};
use egressd::tls::demo_pki::{LeafSpec, CLIENT_SPIFFE};

const GET: &[u8] = b"GET /politics HTTP/1.1\r\nHost: edition.cnn.com\r\nConnection: close\r\n\r\n";

fn https_server(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: istio-egressgateway}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: https-cnn, protocol: HTTPS}}\n    hosts: [edition.cnn.com]\n    tls: {tls}\n---\n"
    )
}

fn http_upstream(origin_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {origin_port}}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: cnn-through-egress}}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [istio-egressgateway]\n  http:\n  - route:\n    - destination: {{host: edition.cnn.com, port: {{number: 80}}}}\n"
    )
}

fn mutual_tls(pki: &Pki, sans: &str) -> String {
    format!(
        "{{mode: MUTUAL, serverCertificate: {}, privateKey: {}, caCertificates: {}{sans}}}",
        pki.cert_chain.display(),
        pki.key.display(),
        pki.root.display()
    )
}

fn read_root(pki: &Pki) -> String {
    std::fs::read_to_string(&pki.root).unwrap()
}

fn body_of(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn status_of(resp: &[u8]) -> u16 {
    String::from_utf8_lossy(resp)
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn stat_containing(gw: &Gateway, suffix: &str) -> u64 {
    let (_, body) = gw.admin_get("/stats");
    body.lines()
        .filter(|l| l.starts_with("listener.") && l.contains(&format!(".{suffix}: ")))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

/// Polls `f` until it is true or 20 s pass.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn curl(port: u16, pki_root: &Path, cert: &Path, key: &Path) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(pki_root)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--resolve")
        .arg(format!("edition.cnn.com:{port}:127.0.0.1"))
        .arg(format!("https://edition.cnn.com:{port}/politics"))
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn a_sidecar_with_a_client_certificate_reaches_the_upstream_through_a_mutual_https_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let origin = Origin::fixed("cnn", "hello through mtls");
    let port = free_port();
    let resources = https_server(&mutual_tls(&pki, "")) + &http_upstream(origin.port());
    let gw = Gateway::start_with_format(&[(443, port)], "json", "", &resources, &["--shards", "1"]);
    let client = pki.client();
    let resp = tls_request(
        port,
        "edition.cnn.com",
        client_config(&read_root(&pki), Some(&client)),
        GET,
    )
    .expect("request through mTLS");
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(body_of(&resp), "hello through mtls");
    let line = gw.access_log_lines(1).pop().expect("an access log line");
    let json: serde_json::Value = serde_json::from_str(&line).expect("json access log");
    assert_eq!(json["downstream_peer_uri_san"], CLIENT_SPIFFE, "{line}");
    assert_eq!(json["requested_server_name"], "edition.cnn.com", "{line}");
    assert_eq!(json["response_code"], 200, "{line}");
    // curl, as an operator would test it.
    let (cert, key) = (
        dir.path().join("client-cert.pem"),
        dir.path().join("client-key.pem"),
    );
    std::fs::write(&cert, &client.cert_pem).unwrap();
    std::fs::write(&key, &client.key_pem).unwrap();
    if let Some(body) = curl(port, &pki.root, &cert, &key) {
        assert_eq!(body, "hello through mtls");
    }
    assert!(stat_containing(&gw, "ssl.handshake") >= 1);
}

#[test]
fn an_istio_mutual_server_uses_the_bootstrap_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let origin = Origin::fixed("cnn", "istio mutual");
    let port = free_port();
    let identity = format!(
        "  identity: {{certChain: {}, privateKey: {}, rootCert: {}}}\n",
        pki.cert_chain.display(),
        pki.key.display(),
        pki.root.display()
    );
    let resources = https_server("{mode: ISTIO_MUTUAL}") + &http_upstream(origin.port());
    let _gw = Gateway::start_with_format(
        &[(443, port)],
        "json",
        &identity,
        &resources,
        &["--shards", "1"],
    );
    let config = client_config(&read_root(&pki), Some(&pki.client()));
    let resp = tls_request(port, "edition.cnn.com", config.clone(), GET)
        .expect("request through ISTIO_MUTUAL");
    assert_eq!(body_of(&resp), "istio mutual");
    // Without a client certificate the same server refuses.
    let refused = tls_request(
        port,
        "edition.cnn.com",
        client_config(&read_root(&pki), None),
        GET,
    );
    assert!(refused.map(|r| r.is_empty()).unwrap_or(true));
    assert_eq!(origin.seen().len(), 1);
}

#[test]
fn peers_the_policy_refuses_fail_the_handshake_and_reach_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let other = Pki::new(dir.path(), "other");
    let origin = Origin::fixed("cnn", "must not be seen");
    let port = free_port();
    let sans = format!(", subjectAltNames: [{CLIENT_SPIFFE}]");
    let resources = https_server(&mutual_tls(&pki, &sans)) + &http_upstream(origin.port());
    let gw = Gateway::start(&[(443, port)], &resources, &["--shards", "1"]);
    let root = read_root(&pki);
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let mut expired = LeafSpec::new("sleep").uri(CLIENT_SPIFFE);
    expired.not_before = Some(past - time::Duration::days(30));
    expired.not_after = Some(past);
    let cases = [
        (
            "no client certificate",
            client_config(&root, None),
            "ssl.fail_verify_no_cert",
        ),
        (
            "another CA",
            client_config(&root, Some(&other.client())),
            "ssl.fail_verify_error",
        ),
        (
            "expired",
            client_config(&root, Some(&pki.issue(&expired))),
            "ssl.fail_verify_error",
        ),
        (
            "disallowed SAN",
            client_config(
                &root,
                Some(&pki.issue(
                    &LeafSpec::new("other").uri("spiffe://cluster.local/ns/default/sa/other"),
                )),
            ),
            "ssl.fail_verify_san",
        ),
    ];
    for (what, config, counter) in cases {
        let before = stat_containing(&gw, counter);
        let result = tls_request(port, "edition.cnn.com", config, GET);
        assert!(
            result.as_ref().map(|r| r.is_empty()).unwrap_or(true),
            "{what}: got {result:?}"
        );
        assert!(
            eventually(|| stat_containing(&gw, counter) > before),
            "{what}: {counter} not counted"
        );
    }
    // An SNI no server on the port names.
    let before = stat_containing(&gw, "no_filter_chain_match");
    let config = client_config(&root, Some(&pki.client()));
    assert!(tls_request(port, "localhost", config.clone(), GET).is_err());
    assert!(eventually(
        || stat_containing(&gw, "no_filter_chain_match") > before
    ));
    assert_eq!(
        origin.connection_count(),
        0,
        "the upstream saw a refused peer"
    );
    assert!(gw.stderr_text().contains("tls handshake refused"));
    // The allowed client still gets through.
    let resp = tls_request(port, "edition.cnn.com", config, GET).unwrap();
    assert_eq!(status_of(&resp), 200);
}

#[test]
fn a_host_other_than_the_sni_servers_hosts_is_misdirected() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let origin = Origin::fixed("cnn", "x");
    let port = free_port();
    let resources = https_server(&mutual_tls(&pki, "")) + &http_upstream(origin.port());
    let _gw = Gateway::start(&[(443, port)], &resources, &["--shards", "1"]);
    let config = client_config(&read_root(&pki), Some(&pki.client()));
    let fronted = b"GET / HTTP/1.1\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n";
    let resp = tls_request(port, "edition.cnn.com", config, fronted).unwrap();
    assert_eq!(status_of(&resp), 421, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(origin.connection_count(), 0);
}

#[test]
fn a_tls_server_forwards_the_decrypted_bytes_by_its_tcp_route() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let echo = Echo::start();
    let port = free_port();
    let resources = format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: istio-egressgateway}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: tls-cnn, protocol: TLS}}\n    hosts: [edition.cnn.com]\n    tls: {}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  ports:\n  - {{number: 443, name: tls, protocol: TLS}}\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{tls: {}}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [mesh, istio-egressgateway]\n  tcp:\n  - match:\n    - {{gateways: [istio-egressgateway], port: 443}}\n    route:\n    - destination: {{host: edition.cnn.com, port: {{number: 443}}}}\n",
        mutual_tls(&pki, ""),
        echo.addr.port()
    );
    let gw = Gateway::start_with_format(&[(443, port)], "json", "", &resources, &["--shards", "1"]);
    let config = client_config(&read_root(&pki), Some(&pki.client()));
    let (mut tls, _) = tls_connect(port, "edition.cnn.com", config).expect("handshake");
    let inner = b"\x16\x03\x01 the application's own TLS bytes";
    tls.write_all(inner).unwrap();
    tls.flush().unwrap();
    let mut back = vec![0u8; inner.len()];
    tls.read_exact(&mut back)
        .expect("echo through the tcp route");
    assert_eq!(&back[..], &inner[..]);
    tls.conn.send_close_notify();
    let _ = tls.flush();
    drop(tls);
    let line = gw
        .access_log_lines(1)
        .pop()
        .expect("one line per connection");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["downstream_peer_uri_san"], CLIENT_SPIFFE, "{line}");
    assert_eq!(
        json["upstream_cluster"], "outbound|443||edition.cnn.com",
        "{line}"
    );
    assert_eq!(json["bytes_received"], inner.len() as u64, "{line}");
    assert_eq!(
        echo.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[test]
fn rotated_server_certificates_are_used_by_new_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let origin = Origin::fixed("cnn", "rotated");
    let port = free_port();
    let simple = format!(
        "{{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}",
        pki.cert_chain.display(),
        pki.key.display()
    );
    let resources = https_server(&simple) + &http_upstream(origin.port());
    let gw = Gateway::start(&[(443, port)], &resources, &["--shards", "1"]);
    let config = client_config(&read_root(&pki), None);
    let (first, old_leaf) =
        tls_connect(port, "edition.cnn.com", config.clone()).expect("first handshake");
    let new = pki.issue(&LeafSpec::new("rotated").dns("edition.cnn.com"));
    pki.install_leaf(&new);
    let new_der = common::tls::der_certs(&new.cert_pem).remove(0);
    assert_ne!(old_leaf, new_der);
    assert!(
        eventually(|| tls_connect(port, "edition.cnn.com", config.clone())
            .is_ok_and(|(_, leaf)| leaf == new_der)),
        "the new certificate was never served; stderr:\n{}",
        gw.stderr_text()
    );
    gw.wait_for_log("tls certificates reloaded", Duration::from_secs(5));
    // The connection made before the rotation still works.
    let mut first = first;
    first.write_all(GET).unwrap();
    let mut resp = Vec::new();
    let _ = first.read_to_end(&mut resp);
    assert_eq!(body_of(&resp), "rotated");
}
