//! The `idle` scenario (issue 9): memory per idle keep-alive connection at 10,000
//! connections. For each proxy in front of the same origin (egressd, haproxy, nginx), the
//! bench opens N connections, sends one GET on each and reads its answer (so every
//! connection has been through a whole exchange and sits idle in keep-alive), and divides
//! the growth of the proxy's VmRSS by N. A warm-up of 64 connections first lets each proxy
//! allocate what every later connection reuses (pools, arenas, its upstream connection).
//!
//! Owns: holding the connections, reading VmRSS, this scenario's report.
//! Must not: change any proxy's behaviour beyond the connection limits N needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::BenchError;
use crate::framing::{parse_response, Framing};
use crate::launch::Launch;
use crate::machine::{round3, Machine};
use crate::targets::{self, Running, TargetKind, Tools};

const WARM_UP: usize = 64;
/// File descriptors beyond two per connection (listeners, logs, pools, the bench itself).
const FD_HEADROOM: u64 = 1_000;
/// Goal of issue 9 for egressd.
const GOAL_KIB: f64 = 8.0;

#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub date: String,
    pub started_utc: String,
    pub machine: Machine,
    pub connections: usize,
    pub targets: Vec<IdleResult>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub name: String,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub kib_per_connection: Option<f64>,
    /// Why there is no figure (the proxy did not start, a connection failed).
    pub note: String,
}

/// VmRSS of `pid` in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Connects, sends one GET and reads the whole answer; the connection stays open.
fn open_idle(addr: SocketAddr, request: &[u8]) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    let (mut buf, mut got) = ([0u8; 2048], 0);
    loop {
        let n = s.read(&mut buf[got..]).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the answer".into());
        }
        got += n;
        match parse_response(&buf[..got]) {
            Framing::Complete { status: 200, .. } => return Ok(s),
            Framing::Complete { status, .. } => return Err(format!("status {status}")),
            Framing::Invalid(why) => return Err(why.into()),
            Framing::Incomplete if got == buf.len() => return Err("answer over 2 KiB".into()),
            Framing::Incomplete => {}
        }
    }
}

/// Opens `n` idle connections to `addr`, holding them in `held`.
fn fill(
    held: &mut Vec<TcpStream>,
    addr: SocketAddr,
    n: usize,
    stop: &AtomicBool,
) -> Result<(), String> {
    let request = targets::request_bytes();
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..n {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return Err("stopped or over 120 s".into());
        }
        held.push(open_idle(addr, &request)?);
    }
    Ok(())
}

/// Starts `kind` with limits raised for `n` connections.
fn start(
    kind: TargetKind,
    tools: &Tools,
    origin: SocketAddr,
    n: usize,
    cpu: usize,
    stop: &AtomicBool,
) -> Result<Running, BenchError> {
    let dir = targets::tempdir(&format!("bench-idle-{}-", kind.name()))?;
    let port = targets::free_port()?;
    match kind {
        TargetKind::Egressd => {
            let yaml = targets::egressd_yaml(port, origin, &dir.path().join("access.log")).replace(
                "maxConnections: 4096",
                &format!("maxConnections: {}", n + 200),
            );
            targets::start_with_config(
                "egressd",
                &tools.egressd,
                targets::egressd_args(cpu),
                ("egressd.yaml", &yaml),
                dir,
                port,
                cpu,
                stop,
            )
        }
        TargetKind::Haproxy => {
            let cfg = targets::haproxy_cfg(port, origin)
                .replace("maxconn 4096", &format!("maxconn {}", n + 200));
            targets::start_haproxy(&cfg, tools, dir, port, cpu, stop)
        }
        TargetKind::Nginx => {
            let conf = targets::nginx_proxy_conf(dir.path(), port, origin)
                .replace(
                    "worker_connections 4096;",
                    &format!("worker_connections {};", 2 * n + 200),
                )
                .replace(
                    "worker_processes 1;",
                    &format!(
                        "worker_processes 1;\nworker_rlimit_nofile {};",
                        2 * n as u64 + FD_HEADROOM
                    ),
                );
            targets::start_nginx_proxy(&conf, tools, dir, port, cpu, stop)
        }
        TargetKind::Direct | TargetKind::Floor => Err(BenchError::Usage(
            "the idle scenario measures proxies".into(),
        )),
    }
}

fn measure(
    kind: TargetKind,
    tools: &Tools,
    origin: SocketAddr,
    n: usize,
    cpu: usize,
    stop: &AtomicBool,
) -> IdleResult {
    let mut r = IdleResult {
        name: kind.name().into(),
        rss_before_kib: None,
        rss_after_kib: None,
        kib_per_connection: None,
        note: String::new(),
    };
    let proxy = match start(kind, tools, origin, n, cpu, stop) {
        Ok(p) => p,
        Err(e) => {
            r.note = format!("not started: {e}");
            return r;
        }
    };
    let pid = proxy.proc.pid();
    let mut held = Vec::with_capacity(n + WARM_UP);
    let outcome = fill(&mut held, proxy.addr, WARM_UP, stop).and_then(|()| {
        // Let the warm-up's allocations settle before the baseline.
        std::thread::sleep(Duration::from_millis(300));
        r.rss_before_kib = vm_rss_kib(pid);
        fill(&mut held, proxy.addr, n, stop)
    });
    std::thread::sleep(Duration::from_millis(300));
    r.rss_after_kib = vm_rss_kib(pid);
    match (outcome, r.rss_before_kib, r.rss_after_kib) {
        (Ok(()), Some(b), Some(a)) => {
            r.kib_per_connection = Some(round3(a.saturating_sub(b) as f64 / n as f64))
        }
        (Err(e), ..) => r.note = format!("after {} connections: {e}", held.len()),
        _ => r.note = "VmRSS unreadable".into(),
    }
    tracing::info!(target = kind.name(), kib_per_connection = ?r.kib_per_connection, note = %r.note, "idle");
    drop(held);
    drop(proxy);
    r
}

pub fn run(
    tools: &Tools,
    launch: Launch,
    n: usize,
    target_cpu: usize,
    out: &Path,
) -> Result<(PathBuf, PathBuf), BenchError> {
    let stop = &launch.stop;
    let limit = crate::sys::raise_nofile(2 * n as u64 + FD_HEADROOM)
        .map_err(|e| BenchError::io("raise RLIMIT_NOFILE", e))?;
    // Every proxy is started with room for N connections, and egressd refuses to start
    // without two descriptors per allowed connection: a hard limit below 2N + headroom that
    // cannot be raised (no CAP_SYS_RESOURCE) lowers N, and the report says so.
    let requested = n;
    let n = n.min((limit.saturating_sub(FD_HEADROOM) / 2) as usize);
    let origin = targets::start_origin(&tools.nginx, target_cpu, stop)?;
    let mut results = Vec::new();
    for kind in [TargetKind::Egressd, TargetKind::Haproxy, TargetKind::Nginx] {
        if stop.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
        results.push(measure(kind, tools, origin.addr, n, target_cpu, stop));
    }
    drop(origin);
    let report = IdleReport {
        date: launch.date,
        started_utc: launch.started_utc,
        machine: launch.snapshot.finish(8),
        connections: n,
        targets: results,
        notes: [
            format!("Each proxy alone on CPU {target_cpu} with the origin; {WARM_UP} warm-up connections, then {n} more, each with one `GET /` answered 200 and then left idle in keep-alive."),
            "KiB per connection = (VmRSS after − VmRSS after the warm-up) / connections. Kernel socket buffers are not in VmRSS, and are the same for every proxy.".into(),
            "egressd: `run --shards 1`, access log on; haproxy: 1 thread; nginx: 1 worker; limits raised only as far as N connections need (maxConnections, maxconn, worker_connections).".into(),
        ]
        .into_iter()
        .chain((n < requested).then(|| format!("{n} connections instead of {requested}: RLIMIT_NOFILE is {limit} and could not be raised.")))
        .collect(),
    };
    let md = markdown(&report);
    print!("{md}");
    crate::report::write_pair(out, &report.date, "idle", &report, &md)
}

pub fn markdown(r: &IdleReport) -> String {
    let per = |name: &str| {
        r.targets
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.kib_per_connection)
    };
    let ratio = |peer: &str| match (per("egressd"), per(peer)) {
        (Some(e), Some(p)) if p > 0.0 => format!("{:.2}", e / p),
        _ => "–".into(),
    };
    let verdict = match per("egressd") {
        Some(e) if e < GOAL_KIB => format!("met ({e:.1} KiB < {GOAL_KIB} KiB)"),
        Some(e) => format!("NOT met ({e:.1} KiB)"),
        None => "no figure".into(),
    };
    let mut s = format!(
        "# egressd idle connections, {}\n\nGoal: RSS per idle plain connection under {GOAL_KIB} KiB. Verdict: **{verdict}**.\n\n\
         | proxy | connections | VmRSS after warm-up KiB | VmRSS after KiB | KiB per connection | note |\n|---|---|---|---|---|---|\n",
        r.date
    );
    let o = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
    for t in &r.targets {
        let each = t
            .kib_per_connection
            .map_or("–".to_string(), |v| format!("{v:.2}"));
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            t.name,
            r.connections,
            o(t.rss_before_kib),
            o(t.rss_after_kib),
            each,
            t.note
        );
    }
    s += &format!(
        "\nRatios: egressd/haproxy {}, egressd/nginx {}.\n\n## Layout\n\n",
        ratio("haproxy"),
        ratio("nginx")
    );
    for line in &r.notes {
        s += &format!("- {line}\n");
    }
    s += &r.machine.summary_line();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `start` raises limits by rewriting these settings of the shared configs: if one is
    /// renamed there, the rewrite would silently do nothing and the proxy would refuse
    /// connections past its old limit.
    #[test]
    fn the_settings_start_rewrites_are_in_the_shared_configs() {
        let origin = SocketAddr::from(([127, 0, 0, 1], 9000));
        let dir = Path::new("/tmp/x");
        assert!(targets::haproxy_cfg(8000, origin).contains("maxconn 4096"));
        let nginx = targets::nginx_proxy_conf(dir, 8000, origin);
        assert!(
            nginx.contains("worker_connections 4096;") && nginx.contains("worker_processes 1;")
        );
        assert!(targets::egressd_yaml(8000, origin, &dir.join("a.log"))
            .contains("maxConnections: 4096"));
    }
}
