//! The `passthrough` scenario: TLS-passthrough routing by SNI, measured as bulk throughput
//! (one connection, one direction) and as new-connection rate, directly and through egressd
//! (splice, and copy via `EGRESSD_SPLICE=0`) and haproxy (`mode tcp`, `req.ssl_sni`).
//!
//! Owns: the minimal ClientHello the clients send first (so every proxy routes by SNI),
//! the in-process sink/origin and clients (threads on the load generator's CPU), the
//! proxies' configs, CPU-per-GB and CPU-per-connection accounting from /proc.
//! Must not: format the report (`passthrough_report`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::BenchError;
use crate::procs::Proc;
use crate::targets::free_port;

pub const SNI: &str = "bench.local";
const READY: Duration = Duration::from_secs(10);
/// The hello's random bytes say what the connection is: short (answer one byte, close) or
/// bulk (count to EOF). Offset: record header 5 + handshake header 4 + version 2.
const RANDOM_AT: usize = 11;
const SHORT: u8 = 1;
const BULK: u8 = 2;

/// A syntactically complete TLS 1.2 ClientHello naming `sni`: enough for an SNI router,
/// never answered by a TLS server here (the origin only counts bytes).
pub fn client_hello(sni: &str, kind: u8) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes()); // server_name_list
    sni_ext.push(0); // host_name
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = Vec::new();
    exts.extend_from_slice(&0u16.to_be_bytes()); // server_name
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sni_ext);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[kind; 32]); // random: tells the origin which workload
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0xc0, 0x2f]); // one cipher suite
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// What a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Direct,
    EgressdSplice,
    EgressdCopy,
    Haproxy,
    /// `floor-relay`: the kernel's share of any relay, a reference row (see its source).
    Floor,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Direct,
        Target::EgressdSplice,
        Target::EgressdCopy,
        Target::Haproxy,
        Target::Floor,
    ];
}

/// One target's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub target: Target,
    pub bulk_bytes: u64,
    pub bulk_gbit_s: f64,
    /// Proxy utime+stime per GB moved (None for direct).
    pub bulk_cpu_s_per_gb: Option<f64>,
    pub connections: u64,
    pub conn_per_s: f64,
    pub conn_cpu_us_per_conn: Option<f64>,
    /// Failed connections or short bulk transfers; a clean run has none.
    pub errors: u64,
}

/// Settings of one run.
pub struct Plan {
    pub bulk_bytes: u64,
    pub conn_duration: Duration,
    pub conn_clients: usize,
    pub target_cpu: usize,
    pub egressd: PathBuf,
    pub haproxy: PathBuf,
    pub floor_relay: PathBuf,
}

/// The sink/origin: bulk connections are read to EOF (bytes counted); short connections
/// get one byte back after the hello and are closed by the origin (so TIME_WAIT lands on
/// the server side, not on the client's ephemeral ports).
struct Origin {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    fn start() -> Result<Origin, BenchError> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind origin", e))?;
        let addr = l
            .local_addr()
            .map_err(|e| BenchError::io("origin addr", e))?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let hello_len = client_hello(SNI, SHORT).len();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let r = r.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut hello = vec![0u8; hello_len];
                    if conn.read_exact(&mut hello).is_err() {
                        return;
                    }
                    r.fetch_add(hello_len as u64, Ordering::Relaxed);
                    if hello[RANDOM_AT] == SHORT {
                        // A short connection: answer and close first.
                        let _ = conn.write_all(b"k");
                        return;
                    }
                    let mut buf = vec![0u8; 256 * 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        r.fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        Ok(Origin {
            addr,
            received,
            stop,
        })
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn egressd_config(port: u16, origin: SocketAddr, log: &Path) -> String {
    format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\nspec:\n  bindAddress: 127.0.0.1\n  portMap: {{443: {port}}}\n  admin: \"\"\n  limits: {{maxConnections: 2000}}\n  accessLog: {{path: \"{log}\", format: istio}}\n  logLevel: info\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: bench}}\nspec:\n  hosts: [{SNI}]\n  ports:\n  - {{number: 443, name: tls, protocol: TLS}}\n  resolution: STATIC\n  endpoints:\n  - address: {ip}\n    ports: {{tls: {oport}}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 443, name: tls, protocol: TLS}}\n    hosts: [{SNI}]\n    tls: {{mode: PASSTHROUGH}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: bench}}\nspec:\n  hosts: [{SNI}]\n  gateways: [gw]\n  tls:\n  - match:\n    - {{port: 443, sniHosts: [{SNI}]}}\n    route:\n    - destination: {{host: {SNI}, port: {{number: 443}}}}\n",
        log = log.display(),
        ip = origin.ip(),
        oport = origin.port(),
    )
}

/// haproxy's documented SNI routing: wait for the hello, route on `req.ssl_sni`, splice.
fn haproxy_config(port: u16, origin: SocketAddr) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\ndefaults\n  mode tcp\n  option splice-auto\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  tcp-request inspect-delay 5s\n  tcp-request content accept if {{ req.ssl_hello_type 1 }}\n  use_backend origin if {{ req.ssl_sni -i {SNI} }}\n\n\
         backend origin\n  server o1 {origin}\n"
    )
}

/// Starts `target` in front of `origin`; None for direct.
fn start(
    target: Target,
    plan: &Plan,
    origin: SocketAddr,
    dir: &Path,
    stop: &AtomicBool,
) -> Result<Option<(Proc, SocketAddr)>, BenchError> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conf = dir.join("proxy.conf");
    let (program, args): (PathBuf, Vec<String>) = match target {
        Target::Direct => return Ok(None),
        Target::EgressdSplice | Target::EgressdCopy => {
            std::fs::write(&conf, egressd_config(port, origin, &dir.join("access.log")))
                .map_err(|e| BenchError::io("write egressd config", e))?;
            let splice = if target == Target::EgressdSplice {
                "EGRESSD_SPLICE=1"
            } else {
                "EGRESSD_SPLICE=0"
            };
            let args = [
                splice,
                &plan.egressd.display().to_string(),
                "run",
                "-c",
                &conf.display().to_string(),
                "--shards",
                "1",
                "--cpus",
                &plan.target_cpu.to_string(),
            ];
            (
                PathBuf::from("/usr/bin/env"),
                args.iter().map(|s| s.to_string()).collect(),
            )
        }
        Target::Haproxy => {
            std::fs::write(&conf, haproxy_config(port, origin))
                .map_err(|e| BenchError::io("write haproxy config", e))?;
            (
                plan.haproxy.clone(),
                vec!["-db".into(), "-f".into(), conf.display().to_string()],
            )
        }
        Target::Floor => (
            plan.floor_relay.clone(),
            vec![addr.to_string(), origin.to_string()],
        ),
    };
    let name = format!("{target:?}").to_lowercase();
    let mut proc = Proc::spawn_pinned(&name, plan.target_cpu, &program, &args, dir)?;
    proc.wait_listening(addr, READY, stop)?;
    Ok(Some((proc, addr)))
}

/// Measures `target`: one bulk connection, then closed-loop short connections.
pub fn measure(target: Target, plan: &Plan, stop: &AtomicBool) -> Result<Measured, BenchError> {
    let origin = Origin::start()?;
    let dir = tempfile::tempdir().map_err(|e| BenchError::io("temp dir", e))?;
    let proxy = start(target, plan, origin.addr, dir.path(), stop)?;
    let addr = proxy.as_ref().map_or(origin.addr, |p| p.1);
    let cpu = || proxy.as_ref().map(|p| p.0.cpu_time());
    let hello = client_hello(SNI, BULK);
    let mut errors = 0;

    // Bulk: hello, then `bulk_bytes` one way; done when the origin has counted them all.
    let before = origin.received.load(Ordering::Relaxed);
    let cpu0 = cpu();
    let t0 = Instant::now();
    let mut conn = TcpStream::connect(addr).map_err(|e| BenchError::io("bulk connect", e))?;
    conn.write_all(&hello)
        .map_err(|e| BenchError::io("bulk hello", e))?;
    let chunk = vec![0x5au8; 256 * 1024];
    let mut sent = 0u64;
    while sent < plan.bulk_bytes && !stop.load(Ordering::Relaxed) {
        let n = chunk.len().min((plan.bulk_bytes - sent) as usize);
        conn.write_all(&chunk[..n])
            .map_err(|e| BenchError::io("bulk write", e))?;
        sent += n as u64;
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let want = before + hello.len() as u64 + sent;
    let deadline = Instant::now() + Duration::from_secs(60);
    while origin.received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    let wall = t0.elapsed();
    let cpu1 = cpu();
    if origin.received.load(Ordering::Relaxed) != want {
        errors += 1;
    }
    drop(conn);
    let gb = sent as f64 / 1e9;
    let bulk_cpu = cpu0
        .zip(cpu1)
        .map(|(a, b)| round3(b.saturating_sub(a).as_secs_f64() / gb));

    // Connection rate: `conn_clients` threads, each connect → hello → 1 byte → EOF → close.
    let hello = client_hello(SNI, SHORT);
    let count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + plan.conn_duration;
    let cpu0 = cpu();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..plan.conn_clients)
        .map(|_| {
            let (count, failed, hello) = (count.clone(), failed.clone(), hello.clone());
            std::thread::spawn(move || {
                while Instant::now() < end {
                    match short_connection(addr, &hello) {
                        Ok(()) => count.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let wall_c = t0.elapsed();
    let cpu1 = cpu();
    let n = count.load(Ordering::Relaxed);
    errors += failed.load(Ordering::Relaxed);
    let conn_cpu = cpu0
        .zip(cpu1)
        .map(|(a, b)| round3(b.saturating_sub(a).as_secs_f64() * 1e6 / n.max(1) as f64));
    Ok(Measured {
        target,
        bulk_bytes: sent,
        bulk_gbit_s: round3(sent as f64 * 8.0 / wall.as_secs_f64() / 1e9),
        bulk_cpu_s_per_gb: bulk_cpu,
        connections: n,
        conn_per_s: round3(n as f64 / wall_c.as_secs_f64()),
        conn_cpu_us_per_conn: conn_cpu,
        errors,
    })
}

fn short_connection(addr: SocketAddr, hello: &[u8]) -> std::io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(hello)?;
    let mut b = [0u8; 8];
    let mut got = 0;
    loop {
        match c.read(&mut b)? {
            0 => break,
            n => got += n,
        }
    }
    if got == 1 {
        Ok(())
    } else {
        Err(std::io::Error::other("no answer"))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_is_one_well_framed_record() {
        let h = client_hello(SNI, SHORT);
        assert_eq!(h[RANDOM_AT], SHORT);
        assert_eq!(h[0], 0x16);
        assert_eq!(u16::from_be_bytes([h[3], h[4]]) as usize, h.len() - 5);
        assert_eq!(h[5], 0x01);
        assert!(h.windows(SNI.len()).any(|w| w == SNI.as_bytes()));
    }
}
