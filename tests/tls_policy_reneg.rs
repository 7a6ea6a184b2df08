//! The MUTUAL server never renegotiates and never compresses. Renegotiation: a TLS 1.2
//! `openssl s_client` sends its `R` command; the control (`openssl s_server
//! -client_renegotiation`) answers with a second ServerHello, the gateway never does.
//! Compression: OpenSSL clients are built without it, so a hand-made ClientHello offers
//! DEFLATE; the gateway must pick null, and refuse a hello offering DEFLATE alone.

mod common;
#[path = "support/tls_policy_kit.rs"]
mod kit;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;
use kit::{certs, gateway, openssl_conf, Certs, Control, SNI};

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
