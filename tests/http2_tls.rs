//! HTTP/2 and Istio's ALPN values on a MUTUAL HTTPS server: curl --http2 and h2load (through
//! socat adding the client certificate) are served as HTTP/2, `istio-h2` and
//! `istio-http/1.1` select their protocols, and a client offering only
//! `istio-peer-exchange` gets a `no_application_protocol` alert, counted, with nothing sent
//! upstream.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::tls::Pki;
use common::{free_port, Gateway};

fn resources(pki: &Pki, origin_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: istio-egressgateway}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: https-cnn, protocol: HTTPS}}\n    hosts: [edition.cnn.com]\n    tls: {{mode: MUTUAL, serverCertificate: {}, privateKey: {}, caCertificates: {}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {{name: cnn}}\nspec:\n  hosts: [edition.cnn.com]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {origin_port}}}}}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: cnn-through-egress}}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [istio-egressgateway]\n  http:\n  - route:\n    - destination: {{host: edition.cnn.com, port: {{number: 80}}}}\n",
        pki.cert_chain.display(),
        pki.key.display(),
        pki.root.display()
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    origin: Origin,
    gw: Gateway,
    port: u16,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "mesh");
    let client = pki.client();
    let (cert, key) = (
        dir.path().join("client.pem"),
        dir.path().join("client-key.pem"),
    );
    std::fs::write(&cert, &client.cert_pem).unwrap();
    std::fs::write(&key, &client.key_pem).unwrap();
    let origin = Origin::fixed("cnn", "politics");
    let port = free_port();
    let gw = Gateway::start(
        &[(443, port)],
        &resources(&pki, origin.port()),
        &["--shards", "1"],
    );
    Setup {
        _dir: dir,
        pki,
        cert,
        key,
        origin,
        gw,
        port,
    }
}

fn listener_stat(gw: &Gateway, prefix: &str, suffix: &str) -> u64 {
    let (_, body) = gw.admin_get("/stats");
    body.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!(".{suffix}: ")))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

/// `openssl s_client` offering `alpn`, sending `request` after the handshake.
fn s_client(s: &Setup, alpn: &str, request: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", s.port)])
        .args(["-servername", "edition.cnn.com", "-alpn", alpn, "-ign_eof"])
        .arg("-CAfile")
        .arg(&s.pki.root)
        .arg("-cert")
        .arg(&s.cert)
        .arg("-key")
        .arg(&s.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(request);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn curl_http2_through_a_mutual_server_is_logged_as_http2() {
    let s = setup();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--max-time",
            "20",
            "-w",
            " %{http_version}",
        ])
        .arg("--cacert")
        .arg(&s.pki.root)
        .arg("--cert")
        .arg(&s.cert)
        .arg("--key")
        .arg(&s.key)
        .args([
            "--resolve",
            &format!("edition.cnn.com:{}:127.0.0.1", s.port),
        ])
        .arg(format!("https://edition.cnn.com:{}/politics", s.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "politics 2");
    let line = s.gw.access_log_lines(1).pop().unwrap();
    assert!(line.contains("\"GET /politics HTTP/2\" 200"), "{line}");
    assert!(line.contains("outbound|80||edition.cnn.com"), "{line}");
    assert_eq!(
        listener_stat(&s.gw, "http.", "downstream_rq_http2_total"),
        1
    );
}

#[test]
fn istio_alpn_values_select_their_protocol_and_peer_exchange_alone_is_refused() {
    let s = setup();
    let out = s_client(&s, "istio-peer-exchange,istio-h2", b"");
    assert!(out.contains("ALPN protocol: istio-h2"), "{out}");

    let get = b"GET /politics HTTP/1.1\r\nHost: edition.cnn.com\r\nConnection: close\r\n\r\n";
    let out = s_client(&s, "istio-peer-exchange,istio-http/1.1", get);
    assert!(out.contains("ALPN protocol: istio-http/1.1"), "{out}");
    assert!(
        out.contains("HTTP/1.1 200 OK") && out.contains("politics"),
        "{out}"
    );
    assert_eq!(s.origin.seen().len(), 1);

    let out = s_client(&s, "istio-peer-exchange", get);
    assert!(out.contains("no application protocol"), "{out}");
    assert_eq!(
        s.origin.seen().len(),
        1,
        "the refused client reached nothing"
    );
    assert_eq!(
        listener_stat(&s.gw, "listener.", "ssl.no_application_protocol"),
        1
    );
}

/// socat on a free port, adding the client certificate and SNI (h2load has no client
/// certificate option); killed on drop.
struct Socat(Child, u16);

impl Socat {
    fn start(s: &Setup) -> Socat {
        let port = free_port();
        let target = format!(
            "OPENSSL:127.0.0.1:{},cert={},key={},cafile={},commonname=edition.cnn.com,snihost=edition.cnn.com",
            s.port,
            s.cert.display(),
            s.key.display(),
            s.pki.root.display()
        );
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Socat(child, port)
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &Path) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[test]
fn h2load_through_a_mutual_server_with_a_client_certificate() {
    assert!(
        have(Path::new("h2load")) && have(Path::new("socat")),
        "CI installs nghttp2-client and socat"
    );
    let s = setup();
    let socat = Socat::start(&s);
    // TLS without ALPN (socat sets none): the stream's HTTP/2 preface selects HTTP/2.
    let out = Command::new("h2load")
        .args([
            "-n",
            "400",
            "-c",
            "2",
            "-m",
            "20",
            "-H",
            ":authority: edition.cnn.com",
        ])
        .arg(format!("http://127.0.0.1:{}/politics", socat.1))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("400 succeeded, 0 failed"), "{text}");
    assert_eq!(s.origin.seen().len(), 400);
    assert_eq!(
        listener_stat(&s.gw, "http.", "downstream_rq_http2_total"),
        400
    );
    assert!(listener_stat(&s.gw, "listener.", "ssl.handshake") >= 2);
}
