//! One port, two servers split by SNI (DESIGN.md: "PASSTHROUGH and MUTUAL on 443 split by
//! SNI"): the SNI peeked once selects a SIMPLE server, whose connections egressd terminates
//! and proxies as HTTP, or a PASSTHROUGH server, whose bytes are relayed untouched to an
//! origin that presents its own certificate.

mod common;

use common::origin::Origin;
use common::tls::{client_config, tls_request, Pki};
use common::tls_origin::{tls_exchange, HelloDelivery, TlsOrigin};
use common::{free_port, Gateway};

const TERMINATED: &str = "edition.cnn.com";
const PASSED: &str = "api.example.com";

#[test]
fn the_sni_selects_termination_or_passthrough_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "gw");
    let http_origin = Origin::fixed("cnn", "terminated here");
    let tls_origin = TlsOrigin::start(&[PASSED]);
    let resources = format!(
        r#"apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {{name: istio-egressgateway}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{TERMINATED}]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{PASSED}]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: cnn}}
spec:
  hosts: [{TERMINATED}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {http_port}}}}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: api}}
spec:
  hosts: [{PASSED}]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {tls_port}}}}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: cnn}}
spec:
  hosts: [{TERMINATED}]
  gateways: [istio-egressgateway]
  http:
  - route:
    - destination: {{host: {TERMINATED}, port: {{number: 80}}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: api}}
spec:
  hosts: [{PASSED}]
  gateways: [istio-egressgateway]
  tls:
  - match: [{{port: 443, sniHosts: [{PASSED}]}}]
    route:
    - destination: {{host: {PASSED}, port: {{number: 443}}}}
"#,
        cert = pki.cert_chain.display(),
        key = pki.key.display(),
        http_port = http_origin.port(),
        tls_port = tls_origin.addr.port(),
    );
    let port = free_port();
    let gw = Gateway::start(&[(443, port)], &resources, &["--shards", "1"]);

    let root = std::fs::read_to_string(&pki.root).unwrap();
    let answer = tls_request(
        port,
        TERMINATED,
        client_config(&root, None),
        format!("GET / HTTP/1.1\r\nHost: {TERMINATED}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("terminated by egressd");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("terminated here"), "{text}");

    let seen = tls_exchange(
        port,
        PASSED,
        tls_origin.client_config(vec![]),
        HelloDelivery::Whole,
    )
    .expect("relayed to the origin");
    assert_eq!(
        seen.peer_cert, tls_origin.cert_der,
        "the origin's own certificate"
    );
    assert_eq!(seen.reply, "pong ping\n");
    assert_eq!(tls_origin.accepted(), 1);
    assert_eq!(http_origin.connection_count(), 1);
    assert_eq!(
        gw.stat("tls_inspector.sni_found"),
        Some(2),
        "one peek per connection"
    );
}
