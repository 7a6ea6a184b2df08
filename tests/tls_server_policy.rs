//! A terminating Gateway server's TLS policy, seen from `openssl s_client`: TLS 1.3 session
//! tickets resume (`Reused`) and the resumed connection still carries the sidecar's SPIFFE
//! id; a certificate reload makes older tickets useless; `maxProtocolVersion` and
//! `cipherSuites` decide what a client may negotiate.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::tls::Pki;
use common::{free_port, Gateway};
use egressd::tls::demo_pki::{self, CLIENT_SPIFFE};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: edition.cnn.com\r\nConnection: close\r\n\r\n";

/// An HTTPS server for edition.cnn.com with `tls`, routing to an HTTP origin.
fn resources(tls: &str, origin_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [edition.cnn.com]\n    tls: {tls}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {origin_port}}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: edition.cnn.com, port: {{number: 80}}}}\n"
    )
}

fn simple(pki: &Pki, extra: &str) -> String {
    format!(
        "{{mode: SIMPLE, serverCertificate: {}, privateKey: {}{extra}}}",
        pki.cert_chain.display(),
        pki.key.display()
    )
}

/// What one `openssl s_client` run printed, and whether it got an HTTP 200.
struct Run {
    out: String,
    ok: bool,
}

impl Run {
    /// `New` or `Reused`, from s_client's session line (e.g. `Reused, TLSv1.3, Cipher is ...`).
    fn session(&self) -> Option<&str> {
        self.out.lines().find_map(|l| {
            l.strip_prefix("New, ")
                .map(|_| "New")
                .or_else(|| l.strip_prefix("Reused, ").map(|_| "Reused"))
        })
    }

    fn cipher(&self) -> Option<&str> {
        self.out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Cipher    : "))
    }

    fn protocol(&self) -> Option<&str> {
        self.out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Protocol  : "))
    }
}

/// `openssl s_client` to 127.0.0.1:`port` (SNI edition.cnn.com, trusting `root`) plus
/// `args`, sending GET and reading until the server closes; killed after 20 s.
fn s_client(port: u16, root: &Path, args: &[&str]) -> Run {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "edition.cnn.com", "-CAfile"])
        .arg(root)
        .args(["-ign_eof", "-verify_return_error"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (apt-get install -y openssl)");
    let _ = child.stdin.take().expect("stdin").write_all(GET);
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let mut out = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut out);
    let ok = out.contains("HTTP/1.1 200");
    Run { out, ok }
}

#[test]
fn a_mutual_server_resumes_tls13_tickets_and_keeps_the_peer_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let client = pki.client();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &client.cert_pem).unwrap();
    std::fs::write(&key, &client.key_pem).unwrap();
    let origin = Origin::fixed("cnn", "hello");
    let port = free_port();
    let tls = format!(
        "{{mode: MUTUAL, serverCertificate: {}, privateKey: {}, caCertificates: {}}}",
        pki.cert_chain.display(),
        pki.key.display(),
        pki.root.display()
    );
    let gw = Gateway::start_with_format(
        &[(443, port)],
        "json",
        "",
        &resources(&tls, origin.port()),
        &["--shards", "1"],
    );
    let sess = dir.path().join("session.pem");
    let (c, k, s) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        sess.to_str().unwrap(),
    );
    let first = s_client(port, &pki.root, &["-cert", c, "-key", k, "-sess_out", s]);
    assert!(first.ok, "{}", first.out);
    assert_eq!(first.session(), Some("New"), "{}", first.out);
    let second = s_client(port, &pki.root, &["-cert", c, "-key", k, "-sess_in", s]);
    assert!(second.ok, "{}", second.out);
    assert_eq!(second.session(), Some("Reused"), "{}", second.out);
    assert_eq!(second.protocol(), Some("TLSv1.3"), "{}", second.out);
    // The resumed connection is still the sidecar's: its identity came from the ticket.
    let lines = gw.access_log_lines(2);
    assert_eq!(lines.len(), 2, "{}", gw.stderr_text());
    for line in &lines {
        let json: serde_json::Value = serde_json::from_str(line).expect("json access log");
        assert_eq!(json["downstream_peer_uri_san"], CLIENT_SPIFFE, "{line}");
    }
}

#[test]
fn a_certificate_reload_makes_older_tickets_useless() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "web");
    let origin = Origin::fixed("cnn", "hello");
    let port = free_port();
    let _gw = Gateway::start(
        &[(443, port)],
        &resources(&simple(&pki, ""), origin.port()),
        &["--shards", "1"],
    );
    let sess = dir.path().join("session.pem");
    let s = sess.to_str().unwrap();
    let first = s_client(port, &pki.root, &["-sess_out", s]);
    assert!(first.ok && first.session() == Some("New"), "{}", first.out);
    let again = s_client(port, &pki.root, &["-sess_in", s]);
    assert_eq!(again.session(), Some("Reused"), "{}", again.out);
    // Rotate the server certificate; once new handshakes see it, the old ticket is refused.
    let before = cert_block(&first.out);
    assert!(!before.is_empty(), "{}", first.out);
    pki.install_leaf(&demo_pki::gateway_leaf(&pki.ca).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rotated = false;
    while Instant::now() < deadline && !rotated {
        std::thread::sleep(Duration::from_millis(200));
        let probe = s_client(port, &pki.root, &[]);
        rotated = probe.ok && cert_block(&probe.out) != before;
    }
    assert!(rotated, "the rotated certificate was never served");
    let stale = s_client(port, &pki.root, &["-sess_in", s]);
    assert!(stale.ok, "{}", stale.out);
    assert_eq!(
        stale.session(),
        Some("New"),
        "a ticket from before the reload resumed: {}",
        stale.out
    );
}

/// The server certificate PEM block s_client printed.
fn cert_block(out: &str) -> String {
    let start = out.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
    let end = out.find("-----END CERTIFICATE-----").unwrap_or(0);
    out.get(start..end).unwrap_or("").to_string()
}

#[test]
fn max_protocol_version_tls12_refuses_tls13_only_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "web");
    let origin = Origin::fixed("cnn", "hello");
    let port = free_port();
    let tls = simple(&pki, ", maxProtocolVersion: TLSV1_2");
    let _gw = Gateway::start(
        &[(443, port)],
        &resources(&tls, origin.port()),
        &["--shards", "1"],
    );
    let refused = s_client(port, &pki.root, &["-tls1_3"]);
    assert!(
        !refused.ok,
        "a TLS 1.3-only client got through: {}",
        refused.out
    );
    let any = s_client(port, &pki.root, &[]);
    assert!(any.ok, "{}", any.out);
    assert_eq!(any.protocol(), Some("TLSv1.2"), "{}", any.out);
}

#[test]
fn cipher_suites_restrict_tls12_and_leave_tls13_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "web");
    let origin = Origin::fixed("cnn", "hello");
    let port = free_port();
    let tls = simple(&pki, ", cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]");
    let _gw = Gateway::start(
        &[(443, port)],
        &resources(&tls, origin.port()),
        &["--shards", "1"],
    );
    let other = s_client(
        port,
        &pki.root,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    );
    assert!(
        !other.ok,
        "a suite outside cipherSuites was negotiated: {}",
        other.out
    );
    let listed = s_client(
        port,
        &pki.root,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    );
    assert!(listed.ok, "{}", listed.out);
    assert_eq!(
        listed.cipher(),
        Some("ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{}",
        listed.out
    );
    let tls13 = s_client(port, &pki.root, &["-tls1_3"]);
    assert!(tls13.ok, "{}", tls13.out);
    assert_eq!(tls13.protocol(), Some("TLSv1.3"), "{}", tls13.out);
}
