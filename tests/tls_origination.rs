//! TLS origination (Istio's "egress gateway with TLS origination" flow): the client speaks
//! plain HTTP to the gateway's port 80 and the gateway speaks HTTPS to the upstream's 443,
//! verifying its certificate against the DestinationRule's CA, sending the SNI, failing
//! closed on a certificate it cannot verify, and reusing one pooled TLS connection.

mod common;

use std::net::TcpStream;

use common::tls::{Pki, TlsOrigin};
use common::{exchange, free_port, get, Gateway};
use egressd::tls::demo_pki;

fn resources(upstream_port: u16, ca: &std::path::Path) -> String {
    resources_tls(
        upstream_port,
        &format!("{{mode: SIMPLE, caCertificates: {}}}", ca.display()),
    )
}

fn resources_tls(upstream_port: u16, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  - {{number: 443, name: https, protocol: HTTPS}}\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{https: {upstream_port}}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: istio-egressgateway}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [edition.cnn.com]\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: originate-tls-for-cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [istio-egressgateway]\n  http:\n  - match:\n    - port: 80\n    route:\n    - destination: {{host: edition.cnn.com, port: {{number: 443}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: originate-tls-for-edition-cnn-com}}\nspec:\n  host: edition.cnn.com\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 443}}\n      tls: {tls}\n"
    )
}

#[test]
fn plain_http_in_becomes_verified_https_out_on_one_pooled_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "web");
    let leaf = demo_pki::gateway_leaf(&pki.ca).unwrap();
    let upstream = TlsOrigin::start(&leaf.cert_pem, &leaf.key_pem, "secure hello");
    let port = free_port();
    let gw = Gateway::start(
        &[(80, port)],
        &resources(upstream.port(), &pki.root),
        &["--shards", "1"],
    );
    for i in 0..100 {
        let resp = get(port, "edition.cnn.com", "/politics");
        assert_eq!(
            resp.status,
            200,
            "request {i}: {resp:?}\n{}",
            gw.stderr_text()
        );
        assert_eq!(resp.body, b"secure hello");
    }
    assert_eq!(
        upstream.requests.load(std::sync::atomic::Ordering::SeqCst),
        100
    );
    assert_eq!(
        upstream.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the pooled TLS connection was not reused"
    );
    assert_eq!(
        gw.stat("cluster.outbound|443||edition.cnn.com.upstream_cx_total"),
        Some(1)
    );
    assert_eq!(
        gw.stat("cluster.outbound|443||edition.cnn.com.ssl.handshake"),
        Some(1)
    );
    assert_eq!(
        upstream
            .snis
            .lock()
            .unwrap()
            .first()
            .cloned()
            .flatten()
            .as_deref(),
        Some("edition.cnn.com")
    );
}

#[test]
fn an_upstream_certificate_from_another_ca_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = Pki::new(dir.path(), "trusted");
    let impostor = Pki::new(dir.path(), "impostor");
    let leaf = demo_pki::gateway_leaf(&impostor.ca).unwrap();
    let upstream = TlsOrigin::start(&leaf.cert_pem, &leaf.key_pem, "must not be seen");
    let port = free_port();
    let gw = Gateway::start_with_format(
        &[(80, port)],
        "json",
        "",
        &resources(upstream.port(), &trusted.root),
        &["--shards", "1"],
    );
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let resp = exchange(
        &mut conn,
        b"GET / HTTP/1.1\r\nHost: edition.cnn.com\r\n\r\n",
    );
    assert!(resp.status == 502 || resp.status == 503, "{resp:?}");
    assert_eq!(
        upstream.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let line = gw.access_log_lines(1).pop().expect("a log line");
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        json["response_flags"].as_str().unwrap_or("").contains("UF"),
        "{line}"
    );
    let reason = json["upstream_transport_failure_reason"]
        .as_str()
        .unwrap_or("");
    assert!(
        reason.contains("TLS error") && reason.contains("certificate"),
        "{line}"
    );
    assert!(
        gw.stat("cluster.outbound|443||edition.cnn.com.ssl.fail_verify_error")
            .unwrap_or(0)
            >= 1
    );
}

#[test]
fn mutual_origination_presents_the_configured_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "partner");
    let leaf = demo_pki::gateway_leaf(&pki.ca).unwrap();
    let root = std::fs::read_to_string(&pki.root).unwrap();
    let upstream =
        TlsOrigin::start_with(&leaf.cert_pem, &leaf.key_pem, Some(&root), "mutual hello");
    let client = pki.client();
    let (cert, key) = (
        dir.path().join("gw-client.pem"),
        dir.path().join("gw-client-key.pem"),
    );
    std::fs::write(&cert, &client.cert_pem).unwrap();
    std::fs::write(&key, &client.key_pem).unwrap();
    let port = free_port();
    // Without a client certificate the partner refuses: fail closed.
    let simple = format!("{{mode: SIMPLE, caCertificates: {}}}", pki.root.display());
    let gw = Gateway::start(
        &[(80, port)],
        &resources_tls(upstream.port(), &simple),
        &["--shards", "1"],
    );
    let resp = get(port, "edition.cnn.com", "/");
    assert!(resp.status == 502 || resp.status == 503, "{resp:?}");
    drop(gw);
    let mutual = format!(
        "{{mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: {}, sni: partner.example, subjectAltNames: [edition.cnn.com]}}",
        pki.root.display(),
        cert.display(),
        key.display()
    );
    let port = free_port();
    let gw = Gateway::start(
        &[(80, port)],
        &resources_tls(upstream.port(), &mutual),
        &["--shards", "1"],
    );
    let resp = get(port, "edition.cnn.com", "/");
    assert_eq!(resp.status, 200, "{resp:?}\n{}", gw.stderr_text());
    assert_eq!(resp.body, b"mutual hello");
    // The configured sni is sent; the certificate (which does not name it) was accepted
    // because subjectAltNames replaces the name check, as in Istio.
    assert_eq!(
        upstream
            .snis
            .lock()
            .unwrap()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("partner.example")
    );
}
