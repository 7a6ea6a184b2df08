//! Shared by the TLS policy tests (`tls_policy.rs`, `tls_policy_reneg.rs`): certificates of
//! both key types, a gateway with one MUTUAL HTTPS server per certificate, an empty OpenSSL
//! config, and a permissive `openssl s_server` as the control that proves a client offer the
//! gateway refuses is one a server could accept.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::origin::Origin;
use crate::common::tls::Pki;
use crate::common::{free_port, istio, Gateway};

pub const SNI: &str = "edition.cnn.com";

/// Server certificates of both key types, the client identity, the CA the gateway trusts.
pub struct Certs {
    pub ecdsa: (PathBuf, PathBuf),
    pub rsa: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
    pub client_ca: PathBuf,
}

pub fn certs(dir: &Path) -> Certs {
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
pub fn gateway(c: &Certs, origin: &Origin) -> (Gateway, u16, u16) {
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
        istio::static_service("cnn", SNI, &[origin.port()])
            + &istio::virtual_service(SNI, SNI, "")
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
pub fn openssl_conf(dir: &Path) -> PathBuf {
    let path = dir.join("openssl.cnf");
    std::fs::write(&path, "").unwrap();
    path
}

/// `openssl s_server` allowing every protocol and suite with both certificates: proof that
/// a client offer the gateway refuses is one a server can accept. Killed on drop.
pub struct Control {
    child: Child,
    pub port: u16,
}

impl Control {
    pub fn start(c: &Certs, conf: &Path) -> Control {
        Self::start_with(c, conf, &[])
    }

    pub fn start_with(c: &Certs, conf: &Path, extra: &[&str]) -> Control {
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
