//! The `mtls` scenario: new mutual-TLS connections from a sidecar, each one handshake (client
//! certificate, ECDSA P-256), one small GET with `Connection: close`, then the server closes.
//! Targets: egressd (HTTPS server, tls MUTUAL, http route to the origin), haproxy terminating
//! the same mTLS (`bind ... ssl crt ... ca-file ... verify required`, `mode http`), and direct
//! (the same request over plain TCP straight to the origin: the floor without TLS). The
//! `-resumed` targets keep the clients' TLS session store, so servers that issue tickets
//! resume instead of doing a full handshake.
//!
//! Owns: the targets' configs, the sidecar client threads (on the load generator's CPU), and
//! the CPU-per-connection accounting. Must not: format the report (`mtls_report`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};
use serde::Serialize;

use crate::error::BenchError;
use crate::framing::{parse_response, Framing};
use crate::machine::{round3, CpuTicks};
use crate::pki::Pki;
use crate::procs::{self, Proc};
use crate::targets::{self, Running, HOST};

/// What a connection is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Direct,
    Egressd,
    Haproxy,
    EgressdResumed,
    HaproxyResumed,
}

impl Target {
    /// Run order within a round.
    pub const ALL: [Target; 5] = [
        Target::Direct,
        Target::Egressd,
        Target::Haproxy,
        Target::EgressdResumed,
        Target::HaproxyResumed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Egressd => "egressd",
            Target::Haproxy => "haproxy",
            Target::EgressdResumed => "egressd-resumed",
            Target::HaproxyResumed => "haproxy-resumed",
        }
    }

    fn resumes(self) -> bool {
        matches!(self, Target::EgressdResumed | Target::HaproxyResumed)
    }
}

/// One target's numbers over one measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub target: Target,
    pub connections: u64,
    /// Completed connections (handshake + request + response) per second.
    pub handshakes_per_s: f64,
    /// Of those, how many resumed a TLS session instead of a full handshake.
    pub resumed: u64,
    /// utime+stime of the proxy per connection (None for direct).
    pub proxy_cpu_us_per_conn: Option<f64>,
    pub origin_cpu_us_per_conn: f64,
    /// The clients' own CPU (TLS client side included): near one CPU means they limited.
    pub loadgen_cpu_us_per_conn: f64,
    pub target_cpu_busy_pct: f64,
    pub target_cpu_steal_pct: f64,
    /// Failed connections (handshake refused, reset, non-200); a clean run has none.
    pub errors: u64,
}

/// Settings of one run.
pub struct Plan {
    pub duration: Duration,
    pub warmup: Duration,
    pub clients: usize,
    pub target_cpu: usize,
    pub egressd: PathBuf,
    pub haproxy: PathBuf,
}

const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn request_bytes() -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").into_bytes()
}

fn egressd_yaml(port: u16, origin: SocketAddr, pki: &Pki, log: &Path) -> String {
    format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\nspec:\n  bindAddress: 127.0.0.1\n  portMap: {{443: {port}}}\n  admin: \"\"\n  limits: {{maxConnections: 2000}}\n  accessLog: {{path: \"{log}\", format: istio}}\n  logLevel: info\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: bench-origin}}\nspec:\n  hosts: [{HOST}]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n  - address: {ip}\n    ports: {{http: {oport}}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: bench-gateway}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [{HOST}]\n    tls:\n      mode: MUTUAL\n      serverCertificate: {cert}\n      privateKey: {key}\n      caCertificates: {ca}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: bench-route}}\nspec:\n  hosts: [{HOST}]\n  gateways: [bench-gateway]\n  http:\n  - name: bench\n    match:\n    - {{gateways: [bench-gateway], port: 443}}\n    route:\n    - destination: {{host: {HOST}, port: {{number: 80}}}}\n",
        log = log.display(),
        ip = origin.ip(),
        oport = origin.port(),
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.root.display(),
    )
}

/// haproxy's documented mTLS termination, then the http scenario's routing to the origin.
fn haproxy_cfg(port: u16, origin: SocketAddr, pki: &Pki) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\n\
         defaults\n  mode http\n  option http-keep-alive\n  option forwardfor\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
         frontend fe\n  bind 127.0.0.1:{port} ssl crt {crt} ca-file {ca} verify required\n  acl bench hdr(host) -i {HOST}\n  http-request deny deny_status 502 unless bench\n  use_backend origin if bench\n\n\
         backend origin\n  http-reuse always\n  server o1 {origin}\n",
        crt = pki.server_combined.display(),
        ca = pki.root.display(),
    )
}

/// The sidecar's rustls client: trusts the bench CA, presents the client certificate.
/// `resume` keeps rustls' in-memory session store (tickets); otherwise every connection
/// is a full handshake.
pub fn client_config(pki: &Pki, resume: bool) -> Result<Arc<ClientConfig>, BenchError> {
    let bad = |what: &str, e: String| BenchError::Machine(format!("bench PKI {what}: {e}"));
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| BenchError::io(format!("read {}", p.display()), e))
    };
    let certs = |p: &PathBuf| -> Result<Vec<_>, BenchError> {
        rustls::pki_types::pem::PemObject::pem_slice_iter(&read(p)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate", e.to_string()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&pki.root)? {
        roots.add(c).map_err(|e| bad("root", e.to_string()))?;
    }
    let key = rustls::pki_types::pem::PemObject::from_pem_slice(&read(&pki.client_key)?)
        .map_err(|e| bad("client key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("versions", e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(&pki.client_cert)?, key)
        .map_err(|e| bad("client certificate", e.to_string()))?;
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// One connection: connect, (handshake,) request, read the response until the server
/// closes. Ok(true) when the TLS session was resumed.
fn one_connection(
    addr: SocketAddr,
    tls: Option<&Arc<ClientConfig>>,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    buf.clear();
    let resumed = match tls {
        None => {
            sock.write_all(request)?;
            read_response(&mut sock, buf)?;
            false
        }
        Some(config) => {
            let name = ServerName::try_from(HOST).map_err(std::io::Error::other)?;
            let mut conn =
                ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
            let mut stream = rustls::Stream::new(&mut conn, &mut sock);
            stream.write_all(request)?;
            read_response(&mut stream, buf)?;
            conn.handshake_kind() == Some(HandshakeKind::Resumed)
        }
    };
    match parse_response(buf) {
        Framing::Complete { status: 200, .. } => Ok(resumed),
        other => Err(std::io::Error::other(format!("bad response: {other:?}"))),
    }
}

/// Reads until EOF; a TLS peer that closes without close_notify still counts when the
/// response is complete (the framing check decides).
fn read_response(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Starts the proxy for `target` in front of `origin`; None for direct.
fn start(
    target: Target,
    plan: &Plan,
    origin: SocketAddr,
    pki: &Pki,
    stop: &AtomicBool,
) -> Result<Option<Running>, BenchError> {
    let dir = targets::tempdir(&format!("bench-mtls-{}-", target.name()))?;
    let port = targets::free_port()?;
    let (program, args, conf_text, conf_name) = match target {
        Target::Direct => return Ok(None),
        Target::Egressd | Target::EgressdResumed => {
            let yaml = egressd_yaml(port, origin, pki, &dir.path().join("access.log"));
            (
                plan.egressd.clone(),
                targets::egressd_args(plan.target_cpu),
                yaml,
                "egressd.yaml",
            )
        }
        Target::Haproxy | Target::HaproxyResumed => (
            plan.haproxy.clone(),
            vec!["-db".into(), "-f".into()],
            haproxy_cfg(port, origin, pki),
            "haproxy.cfg",
        ),
    };
    let name = target.name().split('-').next().unwrap_or("proxy");
    targets::start_with_config(
        name,
        &program,
        args,
        (conf_name, &conf_text),
        dir,
        port,
        plan.target_cpu,
        stop,
    )
    .map(Some)
}

/// Measures `target`: `clients` threads, closed loop, for warm-up then the window.
pub fn measure(
    target: Target,
    plan: &Plan,
    origin: &Running,
    pki: &Pki,
    stop: &AtomicBool,
) -> Result<Measured, BenchError> {
    let proxy = start(target, plan, origin.addr, pki, stop)?;
    let addr = proxy.as_ref().map_or(origin.addr, |p| p.addr);
    let tls = match target {
        Target::Direct => None,
        t => Some(client_config(pki, t.resumes())?),
    };
    let ok = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let request = request_bytes();
    let workers: Vec<_> = (0..plan.clients)
        .map(|_| {
            let (ok, resumed, failed) = (ok.clone(), resumed.clone(), failed.clone());
            let (counting, done, tls, request) =
                (counting.clone(), done.clone(), tls.clone(), request.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::with_capacity(4096);
                while !done.load(Ordering::Relaxed) {
                    let r = one_connection(addr, tls.as_ref(), &request, &mut buf);
                    if !counting.load(Ordering::Relaxed) {
                        continue;
                    }
                    match r {
                        Ok(res) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            resumed.fetch_add(u64::from(res), Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let cpu = |p: &Proc| p.cpu_time();
    let own = || {
        procs::proc_stat(std::process::id())
            .map_or(Duration::ZERO, |s| procs::ticks_to_duration(s.cpu_ticks))
    };
    let wait = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(plan.warmup);
    let p0 = proxy.as_ref().map(|p| cpu(&p.proc));
    let (o0, l0, c0) = (cpu(&origin.proc), own(), CpuTicks::read(plan.target_cpu));
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    wait(plan.duration);
    counting.store(false, Ordering::Relaxed);
    let wall = t0.elapsed();
    let p1 = proxy.as_ref().map(|p| cpu(&p.proc));
    let (o1, l1, c1) = (cpu(&origin.proc), own(), CpuTicks::read(plan.target_cpu));
    done.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    if stop.load(Ordering::Relaxed) {
        return Err(BenchError::Interrupted);
    }
    let n = ok.load(Ordering::Relaxed);
    if n == 0 {
        let log = proxy
            .as_ref()
            .map_or(String::new(), |p| p.proc.log_summary(4));
        return Err(BenchError::NotReady {
            what: target.name().into(),
            reason: format!(
                "no connection completed ({} failed) {log}",
                failed.load(Ordering::Relaxed)
            ),
        });
    }
    let per_conn =
        |a: Duration, b: Duration| round3(b.saturating_sub(a).as_secs_f64() * 1e6 / n as f64);
    let (busy, steal) = c0.zip(c1).map_or((0.0, 0.0), |(a, b)| a.busy_steal_pct(b));
    Ok(Measured {
        target,
        connections: n,
        handshakes_per_s: round3(n as f64 / wall.as_secs_f64()),
        resumed: resumed.load(Ordering::Relaxed),
        proxy_cpu_us_per_conn: p0.zip(p1).map(|(a, b)| per_conn(a, b)),
        origin_cpu_us_per_conn: per_conn(o0, o1),
        loadgen_cpu_us_per_conn: per_conn(l0, l1),
        target_cpu_busy_pct: busy,
        target_cpu_steal_pct: steal,
        errors: failed.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_terminate_mutual_tls_and_route_to_the_origin() {
        let pki = Pki::at(Path::new("/p"));
        let origin: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let h = haproxy_cfg(8443, origin, &pki);
        assert!(h.contains(
            "bind 127.0.0.1:8443 ssl crt /p/server-combined.pem ca-file /p/root-cert.pem verify required"
        ));
        assert!(h.contains("server o1 127.0.0.1:9000"));
        let e = egressd_yaml(8443, origin, &pki, Path::new("/l"));
        assert!(e.contains("mode: MUTUAL") && e.contains("caCertificates: /p/root-cert.pem"));
        assert!(e.contains("portMap: {443: 8443}") && e.contains("ports: {http: 9000}"));
        assert_eq!(e.matches("\n---\n").count(), 3);
    }
}
