//! The `http2` scenario: h2load sending many concurrent streams over a few connections,
//! straight to an HTTP/2 origin (sidecar-direct), through egressd (HTTP/2 from the client,
//! HTTP/1.1 pooled upstream, the default), through egressd with `h2UpgradePolicy: UPGRADE`
//! (HTTP/2 both sides), and through haproxy (`proto h2` front, HTTP/1.1 back), in
//! interleaved rounds, with the proxy's CPU per request.
//!
//! Owns: the origin with an h2c and an HTTP/1.1 listener, the h2load runs and their parsing.
//! Must not: write files (`http2_report`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::BenchError;
use crate::targets::{self, Running, HOST};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Direct,
    Egressd,
    EgressdH2Upstream,
    Haproxy,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Direct,
        Target::Egressd,
        Target::EgressdH2Upstream,
        Target::Haproxy,
    ];
}

pub struct Plan {
    pub loadgen_cpu: usize,
    pub target_cpu: usize,
    pub duration: Duration,
    pub clients: usize,
    pub streams: usize,
    pub egressd: PathBuf,
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    pub h2load: PathBuf,
}

/// One measured h2load run against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub target: Target,
    pub rps: f64,
    pub succeeded: u64,
    pub failed: u64,
    /// CPU of the proxy (for direct: of the origin) per request, µs.
    pub cpu_us_per_req: f64,
    pub origin_cpu_us_per_req: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

/// nginx serving the same 13-byte body on an HTTP/1.1 listener and an h2c one.
fn origin_conf(dir: &Path, h1: u16, h2: u16) -> String {
    let server = |listen: String| {
        format!(
            "  server {{\n    listen {listen};\n    http2_max_requests 1000000;\n    location / {{\n      default_type text/plain;\n      return 200 {:?};\n    }}\n  }}\n",
            targets::BODY
        )
    };
    format!(
        "{}{}{}}}\n",
        targets::nginx_common(dir),
        server(format!("127.0.0.1:{h1}")),
        server(format!("127.0.0.1:{h2} http2"))
    )
}

fn haproxy_h2_cfg(port: u16, origin: SocketAddr) -> String {
    targets::haproxy_cfg(port, origin).replace(
        &format!("bind 127.0.0.1:{port}\n"),
        &format!("bind 127.0.0.1:{port} proto h2\n"),
    )
}

const H2_UPGRADE: &str = "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: bench-h2}\nspec:\n  host: bench.local\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n";

/// Starts the origin (two listeners) on the target CPU: (process, h1 address, h2c address).
pub fn start_origin(plan: &Plan, stop: &AtomicBool) -> Result<(Running, SocketAddr), BenchError> {
    let dir = targets::tempdir("bench-h2-origin-")?;
    let (h1, h2) = (targets::free_port()?, targets::free_port()?);
    let conf = dir.path().join("origin.conf");
    std::fs::write(&conf, origin_conf(dir.path(), h1, h2))
        .map_err(|e| BenchError::io("write origin.conf", e))?;
    let running =
        targets::start_nginx("origin", &plan.nginx, &conf, dir, h1, plan.target_cpu, stop)?;
    Ok((running, SocketAddr::from(([127, 0, 0, 1], h2))))
}

fn start_proxy(
    target: Target,
    plan: &Plan,
    h1: SocketAddr,
    h2: SocketAddr,
    stop: &AtomicBool,
) -> Result<Running, BenchError> {
    let dir = targets::tempdir("bench-h2-proxy-")?;
    let port = targets::free_port()?;
    let log = dir.path().join("access.log");
    match target {
        Target::Direct => Err(BenchError::Usage("direct has no proxy".into())),
        Target::Egressd | Target::EgressdH2Upstream => {
            let yaml = match target {
                Target::Egressd => targets::egressd_yaml(port, h1, &log),
                _ => targets::egressd_yaml(port, h2, &log) + H2_UPGRADE,
            };
            let args = targets::egressd_args(plan.target_cpu);
            let conf = ("egressd.yaml", yaml.as_str());
            targets::start_with_config(
                "egressd",
                &plan.egressd,
                args,
                conf,
                dir,
                port,
                plan.target_cpu,
                stop,
            )
        }
        Target::Haproxy => {
            let args = vec!["-db".into(), "-f".into()];
            let cfg = haproxy_h2_cfg(port, h1);
            let conf = ("haproxy.cfg", cfg.as_str());
            targets::start_with_config(
                "haproxy",
                &plan.haproxy,
                args,
                conf,
                dir,
                port,
                plan.target_cpu,
                stop,
            )
        }
    }
}

/// Measures `target` once: a short warm-up run, then `plan.duration` of load.
pub fn measure(
    target: Target,
    plan: &Plan,
    origin: &Running,
    h2: SocketAddr,
    stop: &AtomicBool,
) -> Result<Measured, BenchError> {
    let proxy = match target {
        Target::Direct => None,
        _ => Some(start_proxy(target, plan, origin.addr, h2, stop)?),
    };
    let addr = proxy.as_ref().map_or(h2, |p| p.addr);
    h2load(plan, addr, &["-n", "2000"])?;
    let cpu = |r: &Running| r.proc.cpu_time();
    let (proxy_before, origin_before) = (proxy.as_ref().map(cpu), cpu(origin));
    let started = Instant::now();
    let secs = format!("{}", plan.duration.as_secs().max(1));
    let out = h2load(plan, addr, &["-D", &secs])?;
    let wall = started.elapsed();
    let (proxy_cpu, origin_cpu) = (
        proxy
            .as_ref()
            .map(cpu)
            .zip(proxy_before)
            .map(|(a, b)| a - b),
        cpu(origin) - origin_before,
    );
    let parsed = parse(&out).ok_or_else(|| BenchError::NotReady {
        what: "h2load".into(),
        reason: format!(
            "unexpected output: {}",
            out.lines().take(12).collect::<Vec<_>>().join(" | ")
        ),
    })?;
    let per_req = |d: Duration| d.as_secs_f64() * 1e6 / parsed.succeeded.max(1) as f64;
    tracing::debug!(?target, ?wall, "h2load run");
    Ok(Measured {
        target,
        rps: parsed.rps,
        succeeded: parsed.succeeded,
        failed: parsed.failed,
        cpu_us_per_req: per_req(proxy_cpu.unwrap_or(origin_cpu)),
        origin_cpu_us_per_req: per_req(origin_cpu),
        mean_ms: parsed.mean_ms,
        max_ms: parsed.max_ms,
    })
}

fn h2load(plan: &Plan, addr: SocketAddr, extra: &[&str]) -> Result<String, BenchError> {
    let out = Command::new("taskset")
        .arg("-c")
        .arg(plan.loadgen_cpu.to_string())
        .arg(&plan.h2load)
        .args([
            "-c",
            &plan.clients.to_string(),
            "-m",
            &plan.streams.to_string(),
        ])
        .args(["-H", &format!(":authority: {HOST}")])
        .args(extra)
        .arg(format!("http://{addr}/"))
        .output()
        .map_err(|source| BenchError::Spawn {
            what: "h2load".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, PartialEq)]
pub struct H2loadOutput {
    pub rps: f64,
    pub succeeded: u64,
    pub failed: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

/// Reads h2load's summary: `finished in …, N req/s`, the `requests:` counts and the
/// `time for request:` min/max/mean line.
pub fn parse(out: &str) -> Option<H2loadOutput> {
    let line = |prefix: &str| out.lines().find(|l| l.trim_start().starts_with(prefix));
    let finished = line("finished in")?;
    let rps = finished
        .split(", ")
        .nth(1)?
        .strip_suffix(" req/s")?
        .parse()
        .ok()?;
    let requests = line("requests:")?;
    let count = |word: &str| -> Option<u64> {
        requests.split(", ").find_map(|p| {
            p.trim()
                .strip_suffix(word)?
                .trim()
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
    };
    let times: Vec<f64> = line("time for request:")?
        .split_whitespace()
        .skip(3)
        .take(3)
        .filter_map(millis)
        .collect();
    let [_, max_ms, mean_ms] = times[..] else {
        return None;
    };
    Some(H2loadOutput {
        rps,
        succeeded: count("succeeded")?,
        failed: count("failed")?,
        mean_ms,
        max_ms,
    })
}

fn millis(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else {
        (v.strip_suffix('s')?, 1e3)
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2loads_summary() {
        let out = "finished in 10.00s, 41234.50 req/s, 3.21MB/s\n\
                   requests: 412345 total, 412345 started, 412345 done, 412300 succeeded, 45 failed, 0 errored, 0 timeout\n\
                   time for request:   310us     21.40ms      9.61ms      2.10ms    70.00%\n";
        assert_eq!(
            parse(out),
            Some(H2loadOutput {
                rps: 41234.5,
                succeeded: 412300,
                failed: 45,
                mean_ms: 9.61,
                max_ms: 21.4
            })
        );
    }

    #[test]
    fn origin_serves_both_protocols_and_haproxy_speaks_h2_in_front() {
        let conf = origin_conf(Path::new("/tmp/x"), 8001, 8002);
        assert!(
            conf.contains("listen 127.0.0.1:8001;")
                && conf.contains("listen 127.0.0.1:8002 http2;")
        );
        let h = haproxy_h2_cfg(9000, SocketAddr::from(([127, 0, 0, 1], 9001)));
        assert!(h.contains("bind 127.0.0.1:9000 proto h2\n"), "{h}");
    }
}
