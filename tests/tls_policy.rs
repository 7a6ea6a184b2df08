//! The MUTUAL server's TLS versions and suites, checked from outside as an operator would
//! with `openssl s_client` (the fast, CI-sized form of the testssl.sh run recorded in
//! perf-results/2026-11-27-testssl-mutual.md): TLS 1.0 and 1.1 refused; in TLS 1.2 only
//! forward-secret AEAD suites (ECDHE with GCM or ChaCha20), static-RSA key exchange and CBC
//! suites refused, for an ECDSA and an RSA server certificate; TLS 1.3 accepted; TLS 1.2
//! sessions uncompressed. Renegotiation and compression offers: `tls_policy_reneg.rs`.
//!
//! A refusal only counts if the same client offer succeeds against a control server that
//! allows everything (`openssl s_server` at security level 0 with the same certificates):
//! Debian's OpenSSL refuses TLS 1.0 and weak suites on its own, and a test whose client
//! never made the offer would pass whatever the gateway does.

mod common;
#[path = "support/tls_policy_kit.rs"]
mod kit;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;
use kit::{certs, gateway, openssl_conf, Certs, Control, SNI};

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
