//! Origins for passthrough tests: a real TLS server (rustls, rcgen certificate) that answers
//! one line per connection, and a raw TCP bulk peer that streams and hashes. Each counts
//! the connections it accepted so tests can prove what reached (or never reached) the
//! upstream. Threads on 127.0.0.1:0; stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::{Digest, Sha256};

/// A TLS origin whose certificate names `names` (CN = the first, SAN = all). Answers the
/// first line a client sends with `pong <line>` and closes.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    stop: Arc<AtomicBool>,
}

impl TlsOrigin {
    pub fn start(names: &[&str]) -> TlsOrigin {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let cert = params.self_signed(&key).unwrap();
        let cert_der = cert.der().clone();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let config = config.clone();
                std::thread::spawn(move || serve_line(conn, config));
            }
        });
        TlsOrigin {
            addr,
            accepts,
            cert_der,
            cert_pem: cert.pem(),
            stop,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// A client config trusting only this origin's certificate, offering `alpn`.
    pub fn client_config(&self, alpn: Vec<Vec<u8>>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        Arc::new(config)
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn serve_line(conn: TcpStream, config: Arc<rustls::ServerConfig>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
    let Ok(tls) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(tls, conn);
    let mut line = String::new();
    if BufReader::new(&mut stream).read_line(&mut line).is_err() {
        return;
    }
    let _ = write!(stream, "pong {}", line);
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// How a client puts its ClientHello on the wire.
#[derive(Clone, Copy, Debug)]
pub enum HelloDelivery {
    /// One write.
    Whole,
    /// One byte per write, with a pause between writes.
    ByteAtATime,
    /// The handshake message re-framed into two TLS records.
    TwoRecords,
}

/// What a TLS client saw through the gateway.
pub struct TlsExchange {
    pub hello_len: usize,
    pub peer_cert: CertificateDer<'static>,
    pub reply: String,
}

/// Connects to `port`, handshakes as `sni` (sending the hello as `delivery` says), sends
/// `ping\n` and reads the reply to EOF.
pub fn tls_exchange(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    delivery: HelloDelivery,
) -> std::io::Result<TlsExchange> {
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello)?;
    }
    match delivery {
        HelloDelivery::Whole => sock.write_all(&hello)?,
        HelloDelivery::ByteAtATime => {
            for b in &hello {
                sock.write_all(std::slice::from_ref(b))?;
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        HelloDelivery::TwoRecords => sock.write_all(&two_records(&hello))?,
    }
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"ping\n")?;
    let mut reply = String::new();
    match tls.read_to_string(&mut reply) {
        Ok(_) => {}
        // Some peers close without close_notify after answering; the answer still counts.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => {}
        Err(e) => return Err(e),
    }
    let peer_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .expect("server certificate");
    Ok(TlsExchange {
        hello_len: hello.len(),
        peer_cert,
        reply,
    })
}

/// Splits a single-record ClientHello into two handshake records of about half each.
fn two_records(hello: &[u8]) -> Vec<u8> {
    assert_eq!(hello[0], 0x16, "a handshake record");
    let len = u16::from_be_bytes([hello[3], hello[4]]) as usize;
    assert_eq!(hello.len(), 5 + len, "one record");
    let body = &hello[5..];
    let (a, b) = body.split_at(len / 2);
    let mut out = Vec::with_capacity(hello.len() + 5);
    for part in [a, b] {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Deterministic bytes: chunk `i` of stream `seed` (xorshift64, so nothing repeats early).
pub fn pattern_chunk(seed: u64, i: u64, buf: &mut [u8]) {
    let mut x = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (i + 1).wrapping_mul(0xd1b5_4a32_d192_ed03))
        | 1;
    for word in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

pub const CHUNK: usize = 256 * 1024;

/// Writes `total` bytes of pattern `seed` to `w`; returns their sha256.
pub fn send_pattern(w: &mut impl Write, seed: u64, total: u64) -> std::io::Result<[u8; 32]> {
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    let mut i = 0;
    while sent < total {
        let n = (total - sent).min(CHUNK as u64) as usize;
        pattern_chunk(seed, i, &mut buf[..n]);
        w.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        sent += n as u64;
        i += 1;
    }
    Ok(hash.finalize().into())
}

/// Reads `r` to EOF; returns (bytes, sha256).
pub fn drain_hash(r: &mut impl Read) -> std::io::Result<(u64, [u8; 32])> {
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hash.finalize().into()));
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

/// What the bulk peer saw on its one connection.
pub struct BulkReport {
    /// Bytes and hash of what it received, to EOF.
    pub received: (u64, [u8; 32]),
    /// Hash of what it sent.
    pub sent: [u8; 32],
}

/// A raw TCP peer for one connection: streams `total` bytes of pattern `seed` while
/// reading everything the client sends; the last chunk goes out only after the client's
/// half-close arrived, so data must still flow downstream after the upstream saw EOF.
pub struct BulkPeer {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    pub report: mpsc::Receiver<std::io::Result<BulkReport>>,
}

impl BulkPeer {
    pub fn start(seed: u64, total: u64) -> BulkPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let a = accepts.clone();
        let (tx, report) = mpsc::channel();
        std::thread::spawn(move || {
            let Ok((conn, _)) = listener.accept() else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(bulk_serve(conn, seed, total));
        });
        BulkPeer {
            addr,
            accepts,
            report,
        }
    }
}

fn bulk_serve(conn: TcpStream, seed: u64, total: u64) -> std::io::Result<BulkReport> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = conn.try_clone()?;
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    let read = std::thread::spawn(move || {
        let r = drain_hash(&mut reader);
        let _ = eof_tx.send(());
        r
    });
    let tail = CHUNK as u64;
    let head = total.saturating_sub(tail);
    let mut w = &conn;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut i = 0u64;
    let mut sent = 0u64;
    while sent < total {
        if sent == head {
            // The client's half-close must reach us while this direction is still open.
            eof_rx
                .recv_timeout(Duration::from_secs(120))
                .map_err(std::io::Error::other)?;
        }
        let n =
            (total - sent)
                .min(CHUNK as u64)
                .min(if sent < head { head - sent } else { u64::MAX }) as usize;
        pattern_chunk(seed, i, &mut buf[..n]);
        w.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        sent += n as u64;
        i += 1;
    }
    conn.shutdown(Shutdown::Write)?;
    let received = read
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))??;
    Ok(BulkReport {
        received,
        sent: hash.finalize().into(),
    })
}
