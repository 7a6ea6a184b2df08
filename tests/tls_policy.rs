//! The MUTUAL server's TLS policy, checked from outside as an operator would with
//! `openssl s_client` (the fast, CI-sized form of the testssl.sh run recorded in
//! perf-results/2026-11-27-testssl-mutual.md): TLS 1.0 and 1.1 refused; in TLS 1.2 only
//! forward-secret AEAD suites (ECDHE with GCM or ChaCha20), static-RSA key exchange and CBC
//! suites refused, for an ECDSA and an RSA server certificate; TLS 1.3 accepted; no
//! renegotiation; no compression.
//!
//! A refusal only counts if the same client offer succeeds against a control server that
//! allows everything (`openssl s_server` at security level 0 with the same certificates):
//! Debian's OpenSSL refuses TLS 1.0 and weak suites on its own, and a test whose client
//! never made the offer would pass whatever the gateway does. Compression is checked with a
//! hand-made ClientHello offering DEFLATE, since OpenSSL clients are built without it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::tls::Pki;
use common::{free_port, Gateway};

const SNI: &str = "edition.cnn.com";

/// Server certificates of both key types, the client identity, the CA the gateway trusts.
struct Certs {
    ecdsa: (PathBuf, PathBuf),
    rsa: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    client_ca: PathBuf,
}

fn certs(dir: &Path) -> Certs {
    // The demo PKI: ECDSA P-256 gateway and client leaves, as Istio issues them.
    let pki = Pki::new(dir, "mesh");
    let client = pki.client();
    let client_paths = (dir.join("client-cert.pem"), dir.join("client-key.pem"));
    std::fs::write(&client_paths.0, &client.cert_pem).unwrap();
    std::fs::write(&client_paths.1, &client.key_pem).unwrap();
    // An RSA server certificate, for the suites with RSA key exchange or signatures.
    let rsa = (dir.join("rsa-cert.pem"), dir.join("rsa-key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={SNI}")])
        .args(["-addext", &format!("subjectAltName=DNS:{SNI}")])
        .arg("-keyout")
        .arg(&rsa.1)
        .arg("-out")
        .arg(&rsa.0)
        .stdin(Stdio::null())
        .output()
        .expect("openssl req");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    Certs {
        ecdsa: (pki.cert_chain.clone(), pki.key.clone()),
        rsa,
        client: client_paths,
        client_ca: pki.root.clone(),
    }
}

/// A gateway with one MUTUAL HTTPS server per certificate (ECDSA on 443, RSA on 8443).
fn gateway(c: &Certs, origin: &Origin) -> (Gateway, u16, u16) {
    let server = |number: u16, (cert, key): &(PathBuf, PathBuf)| {
        format!(
            "  - port: {{number: {number}, name: https-{number}, protocol: HTTPS}}\n    hosts: [{SNI}]\n    tls: {{mode: MUTUAL, serverCertificate: {}, privateKey: {}, caCertificates: {}}}\n",
            cert.display(),
            key.display(),
            c.client_ca.display()
        )
    };
    let resources = format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: egress}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n{}{}---\n{}",
        server(443, &c.ecdsa),
        server(8443, &c.rsa),
        common::istio::static_service("cnn", SNI, &[origin.port()])
            + &common::istio::virtual_service(SNI, SNI, "")
    );
    let (ecdsa_port, rsa_port) = (free_port(), free_port());
    // A short idle timeout ends the connection a refused renegotiation leaves waiting.
    let gw = Gateway::start_with(
        &[(443, ecdsa_port), (8443, rsa_port)],
        "  timeouts: {downstreamIdle: 2s}\n",
        &resources,
        &["--shards", "1"],
    );
    (gw, ecdsa_port, rsa_port)
}

/// An empty OpenSSL config: compiled-in defaults, without Debian's `MinProtocol = TLSv1.2`
/// and `SECLEVEL=2`, so the clients and the control can really offer old versions.
fn openssl_conf(dir: &Path) -> PathBuf {
    let path = dir.join("openssl.cnf");
    std::fs::write(&path, "").unwrap();
    path
}

/// `openssl s_server` allowing every protocol and suite with both certificates: proof that
/// a client offer the gateway refuses is one a server can accept. Killed on drop.
struct Control {
    child: Child,
    port: u16,
}

impl Control {
    fn start(c: &Certs, conf: &Path) -> Control {
        Self::start_with(c, conf, &[])
    }

    fn start_with(c: &Certs, conf: &Path, extra: &[&str]) -> Control {
        let port = free_port();
        let mut child = Command::new("openssl")
            .arg("s_server")
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&c.rsa.0)
            .arg("-key")
            .arg(&c.rsa.1)
            .arg("-dcert")
            .arg(&c.ecdsa.0)
            .arg("-dkey")
            .arg(&c.ecdsa.1)
            .args(["-cipher", "ALL:@SECLEVEL=0", "-www"])
            .args(extra)
            .env("OPENSSL_CONF", conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("openssl s_server exited: {status}");
            }
            assert!(Instant::now() < deadline, "openssl s_server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Control { child, port }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `openssl s_client` run negotiated, with its whole output for messages.
struct Session {
    /// e.g. "TLSv1.2"; None when the handshake failed.
    protocol: Option<String>,
    cipher: Option<String>,
    output: String,
}

/// Runs `openssl s_client` against 127.0.0.1:`port` with the client certificate and
/// `args`, feeding it `input` then EOF; killed if it has not finished within 20 s.
fn s_client(port: u16, c: &Certs, conf: &Path, args: &[&str], input: &[u8]) -> Session {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &format!("127.0.0.1:{port}"), "-servername", SNI])
        .arg("-cert")
        .arg(&c.client.0)
        .arg("-key")
        .arg(&c.client.1)
        .args(args)
        .env("OPENSSL_CONF", conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let _ = out.read_to_string(&mut text);
    text.push_str(&reader.join().unwrap());
    // "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" or "New, (NONE), Cipher is (NONE)".
    let negotiated = text.lines().find_map(|l| {
        let rest = l.strip_prefix("New, ")?;
        let (protocol, cipher) = rest.split_once(", Cipher is ")?;
        (protocol != "(NONE)").then(|| (protocol.to_string(), cipher.trim().to_string()))
    });
    Session {
        protocol: negotiated.as_ref().map(|n| n.0.clone()),
        cipher: negotiated.map(|n| n.1),
        output: text,
    }
}

/// One client offer: the gateway must refuse it, the control must accept it.
fn refused_but_possible(
    what: &str,
    port: u16,
    control: &Control,
    c: &Certs,
    conf: &Path,
    args: &[&str],
) {
    let ctl = s_client(control.port, c, conf, args, b"");
    assert!(
        ctl.protocol.is_some(),
        "{what}: the control refused it too, so the client never really offered it:\n{}",
        ctl.output
    );
    let gw = s_client(port, c, conf, args, b"");
    assert_eq!(
        gw.protocol, None,
        "{what}: the gateway accepted {:?} {:?}:\n{}",
        gw.protocol, gw.cipher, gw.output
    );
}

/// Asserts the gateway negotiates `args` to `protocol` and `cipher`, with no compression.
fn accepted(what: &str, port: u16, c: &Certs, conf: &Path, args: &[&str], want: (&str, &str)) {
    let s = s_client(port, c, conf, args, b"");
    assert_eq!(
        (s.protocol.as_deref(), s.cipher.as_deref()),
        (Some(want.0), Some(want.1)),
        "{what}:\n{}",
        s.output
    );
    if want.0 != "TLSv1.3" {
        assert!(
            s.output.contains("Compression: NONE"),
            "{what}:\n{}",
            s.output
        );
    }
}

#[test]
fn the_mutual_server_speaks_only_tls12_and_13_with_forward_secret_aead_suites() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let conf = openssl_conf(dir.path());
    let origin = Origin::fixed("cnn", "ok");
    let (_gw, ecdsa, rsa) = gateway(&c, &origin);
    let control = Control::start(&c, &conf);
    let old = "DEFAULT:@SECLEVEL=0";
    for (what, args) in [
        ("TLS 1.0", &["-tls1", "-cipher", old][..]),
        ("TLS 1.1", &["-tls1_1", "-cipher", old]),
    ] {
        refused_but_possible(what, ecdsa, &control, &c, &conf, args);
        refused_but_possible(what, rsa, &control, &c, &conf, args);
    }
    // TLS 1.2 suites without forward secrecy (static RSA key exchange) or without AEAD (CBC).
    for suite in [
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-SHA",
    ] {
        let cipher = format!("{suite}:@SECLEVEL=0");
        let args = ["-tls1_2", "-cipher", &cipher];
        refused_but_possible(suite, rsa, &control, &c, &conf, &args);
    }
    for suite in ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"] {
        let cipher = format!("{suite}:@SECLEVEL=0");
        let args = ["-tls1_2", "-cipher", &cipher];
        refused_but_possible(suite, ecdsa, &control, &c, &conf, &args);
    }
    // What it does speak: ECDHE with AEAD in TLS 1.2, and TLS 1.3.
    let ecdhe = "ECDHE-ECDSA-AES128-GCM-SHA256";
    accepted(
        "TLS 1.2 ECDHE-ECDSA",
        ecdsa,
        &c,
        &conf,
        &["-tls1_2", "-cipher", ecdhe],
        ("TLSv1.2", ecdhe),
    );
    let ecdhe = "ECDHE-RSA-AES256-GCM-SHA384";
    accepted(
        "TLS 1.2 ECDHE-RSA",
        rsa,
        &c,
        &conf,
        &["-tls1_2", "-cipher", ecdhe],
        ("TLSv1.2", ecdhe),
    );
    let ecdhe = "ECDHE-RSA-CHACHA20-POLY1305";
    accepted(
        "TLS 1.2 ChaCha20",
        rsa,
        &c,
        &conf,
        &["-tls1_2", "-cipher", ecdhe],
        ("TLSv1.2", ecdhe),
    );
    accepted(
        "TLS 1.3",
        ecdsa,
        &c,
        &conf,
        &["-tls1_3"],
        ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    );
}

/// A TLS 1.2 `openssl s_client -msg` session asked to renegotiate (its `R` command), its
/// output read live. Ended (and reaped) on drop.
struct Renegotiation {
    child: Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Renegotiation {
    fn start(port: u16, c: &Certs, conf: &Path) -> Renegotiation {
        // stdbuf: s_client's stdout is a stdio stream, block-buffered into a pipe.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "openssl", "s_client", "-msg", "-tls1_2"])
            .args(["-connect", &format!("127.0.0.1:{port}"), "-servername", SNI])
            .arg("-cert")
            .arg(&c.client.0)
            .arg("-key")
            .arg(&c.client.1)
            .env("OPENSSL_CONF", conf)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stdbuf openssl s_client");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for mut pipe in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut s = Renegotiation { child, output };
        s.wait_until(
            |out| out.contains("Secure Renegotiation"),
            "the first handshake",
        );
        s.child.stdin.as_mut().unwrap().write_all(b"R\n").unwrap();
        s
    }

    /// Handshake messages of `kind` the client sent (">>>") or received ("<<<").
    fn count(&self, dir: &str, kind: &str) -> usize {
        let out = self.output.lock().unwrap();
        out.lines()
            .filter(|l| l.starts_with(dir) && l.ends_with(&format!(", {kind}")))
            .count()
    }

    /// Waits (at most 20 s) until the output satisfies `done`.
    fn wait_until(&mut self, done: impl Fn(&str) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.output.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "no {what}:\n{}",
                self.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most 20 s) until s_client has exited, and returns whether it did.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Renegotiation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_mutual_server_refuses_client_initiated_renegotiation() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let conf = openssl_conf(dir.path());
    // The control allows it: the client's `R` really renegotiates (a second ServerHello).
    let control = Control::start_with(&c, &conf, &["-client_renegotiation"]);
    let mut ctl = Renegotiation::start(control.port, &c, &conf);
    ctl.wait_until(
        |out| {
            out.matches("RENEGOTIATING").count() == 1 && out.matches(", ServerHello\n").count() >= 2
        },
        "renegotiation with the control server",
    );
    let origin = Origin::fixed("cnn", "ok");
    let (_gw, ecdsa, rsa) = gateway(&c, &origin);
    for port in [ecdsa, rsa] {
        let mut s = Renegotiation::start(port, &c, &conf);
        // rustls answers a renegotiating ClientHello with a no_renegotiation warning and
        // stays in its first session; the client keeps waiting until the gateway's idle
        // timeout closes the connection. Once it is closed no ServerHello can follow.
        assert!(s.wait_exit(), "the idle connection was never closed");
        assert_eq!(
            s.count(">>>", "ClientHello"),
            2,
            "the client asked to renegotiate"
        );
        assert_eq!(s.count("<<<", "ServerHello"), 1, "the gateway renegotiated");
    }
}

/// A TLS 1.2 ClientHello for SNI offering two ECDHE AEAD suites and the given compression
/// methods (0 = null, 1 = DEFLATE), with what a server needs to pick an ECDHE suite.
fn client_hello(compression: &[u8]) -> Vec<u8> {
    fn ext(id: u16, body: &[u8]) -> Vec<u8> {
        let mut e = id.to_be_bytes().to_vec();
        e.extend((body.len() as u16).to_be_bytes());
        e.extend(body);
        e
    }
    fn vec16(items: &[u8]) -> Vec<u8> {
        let mut v = (items.len() as u16).to_be_bytes().to_vec();
        v.extend(items);
        v
    }
    let mut sni = vec![0u8];
    sni.extend(vec16(SNI.as_bytes()));
    let mut exts = ext(0x0000, &vec16(&sni));
    exts.extend(ext(0x000a, &vec16(&[0x00, 0x1d, 0x00, 0x17]))); // x25519, secp256r1
    exts.extend(ext(0x000b, &[1, 0])); // uncompressed points
    exts.extend(ext(0x000d, &vec16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01]))); // ecdsa, pss, pkcs1
    exts.extend(ext(0x0017, &[])); // extended master secret
    exts.extend(ext(0xff01, &[0])); // renegotiation_info, initial handshake
    let mut body = vec![0x03, 0x03];
    body.extend([0x5a; 32]); // client random
    body.push(0); // no session id
    body.extend(vec16(&[0xc0, 0x2b, 0xc0, 0x2f])); // ECDHE-ECDSA/RSA-AES128-GCM-SHA256
    body.push(compression.len() as u8);
    body.extend(compression);
    body.extend(vec16(&exts));
    let mut hs = vec![1u8];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((hs.len() as u16).to_be_bytes());
    record.extend(hs);
    record
}

/// What the server answered a raw ClientHello with: its ServerHello's compression method,
/// or None for an alert or a close.
fn server_hello_compression(port: u16, hello: &[u8]) -> Option<u8> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(hello).unwrap();
    let mut header = [0u8; 5];
    conn.read_exact(&mut header).ok()?;
    if header[0] != 0x16 {
        return None; // an alert (0x15)
    }
    let mut record = vec![0u8; u16::from_be_bytes([header[3], header[4]]) as usize];
    conn.read_exact(&mut record).ok()?;
    // type(1) length(3) version(2) random(32) session_id(1 + n) suite(2) compression(1)
    assert_eq!(record[0], 2, "not a ServerHello: {record:?}");
    let sid = record[38] as usize;
    Some(record[39 + sid + 2])
}

#[test]
fn the_mutual_server_never_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let origin = Origin::fixed("cnn", "ok");
    let (_gw, ecdsa, rsa) = gateway(&c, &origin);
    for port in [ecdsa, rsa] {
        // DEFLATE preferred, null allowed: the server must pick null.
        assert_eq!(
            server_hello_compression(port, &client_hello(&[1, 0])),
            Some(0)
        );
        // DEFLATE only: no ServerHello at all.
        assert_eq!(server_hello_compression(port, &client_hello(&[1])), None);
    }
}
