//! TLS helpers for end-to-end tests: a demo PKI written to a temp dir, a blocking rustls
//! client (with or without a client certificate), a rustls HTTP/1.1 origin that counts
//! accepted connections and remembers the SNI it was asked for, and a plain TCP echo server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egressd::tls::demo_pki::{self, Ca, Issued, LeafSpec};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA and the files of one of its leaves, in `dir`.
pub struct Pki {
    pub ca: Ca,
    pub dir: PathBuf,
    pub root: PathBuf,
    pub cert_chain: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A CA plus the gateway leaf (demo SANs), written as root-cert.pem, cert-chain.pem
    /// and key.pem in `dir/name/`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let ca = Ca::new(&format!("{name} root")).unwrap();
        let leaf = demo_pki::gateway_leaf(&ca).unwrap();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki {
            root: dir.join("root-cert.pem"),
            cert_chain: dir.join("cert-chain.pem"),
            key: dir.join("key.pem"),
            ca,
            dir,
        };
        std::fs::write(&pki.root, pki.ca.cert_pem()).unwrap();
        pki.install_leaf(&leaf);
        pki
    }

    /// Replaces cert-chain.pem and key.pem (each by a rename).
    pub fn install_leaf(&self, leaf: &Issued) {
        demo_pki::write(&self.key, &leaf.key_pem).unwrap();
        demo_pki::write(&self.cert_chain, &leaf.cert_pem).unwrap();
    }

    pub fn issue(&self, spec: &LeafSpec) -> Issued {
        self.ca.issue(spec).unwrap()
    }

    pub fn client(&self) -> Issued {
        demo_pki::client_leaf(&self.ca).unwrap()
    }
}

pub fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

pub fn der_key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .unwrap()
        .unwrap()
}

/// A client config trusting `root_pem`, presenting `client` when given.
pub fn client_config(root_pem: &str, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in der_certs(root_pem) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(c) => builder
            .with_client_auth_cert(der_certs(&c.cert_pem), der_key(&c.key_pem))
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Sends `request` over TLS to 127.0.0.1:`port` with `sni`; returns the whole answer
/// (read until close or 10 s) or the error that ended the attempt.
pub fn tls_request(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    let (mut tls, _) = tls_connect(port, sni, config)?;
    tls.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if !out.is_empty() => Err(format!("read after {} bytes: {e}", out.len())),
        Err(e) => Err(format!("read: {e}")),
    }
}

pub type ClientTls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A completed client handshake and the server's leaf certificate.
pub fn tls_connect(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(ClientTls, CertificateDer<'static>), String> {
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no server certificate")?;
    Ok((tls, leaf))
}

/// A rustls HTTP/1.1 origin answering 200 with `body` to every request, keep-alive.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    pub snis: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
}

impl TlsOrigin {
    pub fn start(cert_pem: &str, key_pem: &str, body: &'static str) -> TlsOrigin {
        Self::start_with(cert_pem, key_pem, None, body)
    }

    /// With `client_root_pem`, the origin requires a client certificate from that CA.
    pub fn start_with(
        cert_pem: &str,
        key_pem: &str,
        client_root_pem: Option<&str>,
        body: &'static str,
    ) -> TlsOrigin {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_root_pem {
            None => builder.with_no_client_auth(),
            Some(root) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in der_certs(root) {
                    roots.add(c).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = Arc::new(
            builder
                .with_single_cert(der_certs(cert_pem), der_key(key_pem))
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, requests, snis, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (a, r, s, st) = (
            accepted.clone(),
            requests.clone(),
            snis.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(sock) = sock else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (config, r, s) = (config.clone(), r.clone(), s.clone());
                std::thread::spawn(move || serve_tls(sock, config, r, s, body));
            }
        });
        TlsOrigin {
            addr,
            accepted,
            requests,
            snis,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_tls(
    sock: TcpStream,
    config: Arc<rustls::ServerConfig>,
    requests: Arc<AtomicUsize>,
    snis: Arc<Mutex<Vec<Option<String>>>>,
    body: &str,
) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return;
        }
    }
    snis.lock()
        .unwrap()
        .push(tls.conn.server_name().map(str::to_string));
    let mut reader = BufReader::new(tls);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.trim().eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut discard = vec![0; len];
        if reader.read_exact(&mut discard).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let tls = reader.get_mut();
        if tls
            .write_all(resp.as_bytes())
            .and_then(|()| tls.flush())
            .is_err()
        {
            return;
        }
    }
}

/// A plain TCP server echoing every byte back; counts connections.
pub struct Echo {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl Echo {
    pub fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(mut sock) = sock else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = sock.read(&mut buf) {
                        if n == 0 || sock.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Echo { addr, connections }
    }
}
