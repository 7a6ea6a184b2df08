//! The `origination` scenario: small keep-alive GETs in plain HTTP to egressd, which
//! originates TLS (DestinationRule `tls.mode: SIMPLE`, verified against the bench CA) to a
//! loopback TLS origin over pooled connections; against egressd forwarding the same requests
//! in plain HTTP to a plain origin, and direct (plain, straight to the origin), in one run.
//! Goal (issue 4): origination at least 0.8x egressd's plain requests/s. The admin's
//! `upstream_cx_total` after each egressd phase shows the pooling (connections ≪ requests).
//!
//! Owns: the two-port origin (one nginx: plain and TLS), egressd's config for both routes,
//! run order and the pooling counters. Must not: re-implement load or CPU accounting
//! (`scenario::window`) or the table (`markdown`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use crate::error::BenchError;
use crate::launch::Launch;
use crate::loadgen::{LoadSpec, Mode};
use crate::pki::Pki;
use crate::report::{self, Layout, Report, Scenario, TargetResult};
use crate::scenario::{window, Options, PhaseOutcome};
use crate::targets::{self, Running, BODY, HOST};

/// The upstream host egressd originates TLS to (on the bench server certificate).
pub const TLS_HOST: &str = "tls.bench.local";
const PLAIN_CLUSTER: &str = "outbound|80||bench.local";
const TLS_CLUSTER: &str = "outbound|443||tls.bench.local";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    EgressdPlain,
    EgressdOrigination,
}

const ALL: [Target; 3] = [
    Target::Direct,
    Target::EgressdPlain,
    Target::EgressdOrigination,
];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::EgressdPlain => "egressd-plain",
            Target::EgressdOrigination => "egressd-origination",
        }
    }

    fn request(self) -> Vec<u8> {
        let host = if self == Target::EgressdOrigination {
            TLS_HOST
        } else {
            HOST
        };
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
    }
}

/// egressd's pooling counters after one phase (whole phase: warm-up included).
#[derive(Debug, Clone, Serialize)]
pub struct Pooling {
    pub target: String,
    pub mode: String,
    pub cluster: String,
    pub upstream_cx_total: Option<u64>,
    pub upstream_rq_total: Option<u64>,
}

/// The JSON file: the common report plus the pooling counters.
#[derive(Debug, Serialize)]
pub struct OriginationReport {
    #[serde(flatten)]
    pub report: Report,
    pub pooling: Vec<Pooling>,
}

/// One nginx process: `plain` answers HTTP, `tls` answers HTTPS with the bench certificate.
fn origin_conf(dir: &Path, plain: u16, tls: u16, pki: &Pki) -> String {
    format!(
        "{}  server {{\n    listen 127.0.0.1:{plain};\n    location / {{\n      default_type text/plain;\n      return 200 {body:?};\n    }}\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{tls} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    location / {{\n      default_type text/plain;\n      return 200 {body:?};\n    }}\n  }}\n}}\n",
        targets::nginx_common(dir),
        body = BODY,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
    )
}

fn egressd_yaml(
    port: u16,
    admin: u16,
    plain: SocketAddr,
    tls_port: u16,
    pki: &Pki,
    log: &Path,
) -> String {
    format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\nspec:\n  bindAddress: 127.0.0.1\n  portMap: {{80: {port}}}\n  admin: 127.0.0.1:{admin}\n  limits: {{maxConnections: 2000}}\n  accessLog: {{path: \"{log}\", format: istio}}\n  logLevel: info\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: bench-origin}}\nspec:\n  hosts: [{HOST}]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n  - address: {ip}\n    ports: {{http: {pport}}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: tls-origin}}\nspec:\n  hosts: [{TLS_HOST}]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  - {{number: 443, name: https, protocol: HTTPS}}\n  resolution: STATIC\n  endpoints:\n  - address: {ip}\n    ports: {{https: {tls_port}}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: bench-gateway}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [{HOST}, {TLS_HOST}]\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: bench-route}}\nspec:\n  hosts: [{HOST}]\n  gateways: [bench-gateway]\n  http:\n  - match:\n    - {{port: 80}}\n    route:\n    - destination: {{host: {HOST}, port: {{number: 80}}}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: originate-tls}}\nspec:\n  hosts: [{TLS_HOST}]\n  gateways: [bench-gateway]\n  http:\n  - match:\n    - {{port: 80}}\n    route:\n    - destination: {{host: {TLS_HOST}, port: {{number: 443}}}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: originate-tls}}\nspec:\n  host: {TLS_HOST}\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 443}}\n      tls: {{mode: SIMPLE, caCertificates: {ca}}}\n",
        log = log.display(),
        ip = plain.ip(),
        pport = plain.port(),
        ca = pki.root.display(),
    )
}

/// `name` from the admin's `/stats` text (`name: value` lines).
pub fn admin_stat(admin: SocketAddr, name: &str) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    parse_stat(&text, name)
}

pub fn parse_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(": ")?
            .trim()
            .parse()
            .ok()
    })
}

struct Env {
    origin: Running,
    tls_port: u16,
    pki: Pki,
    _pki_dir: tempfile::TempDir,
}

/// One phase of `target`; for egressd also its pooling counters.
fn phase(
    o: &Options,
    env: &Env,
    target: Target,
    mode: Mode,
    stop: &AtomicBool,
) -> Result<(PhaseOutcome, Option<Pooling>), BenchError> {
    let proxy = match target {
        Target::Direct => None,
        _ => {
            let dir = targets::tempdir("bench-origination-egressd-")?;
            let (port, admin) = (targets::free_port()?, targets::free_port()?);
            let yaml = egressd_yaml(
                port,
                admin,
                env.origin.addr,
                env.tls_port,
                &env.pki,
                &dir.path().join("access.log"),
            );
            let started = targets::start_with_config(
                "egressd",
                &o.tools.egressd,
                targets::egressd_args(o.target_cpu),
                ("egressd.yaml", &yaml),
                dir,
                port,
                o.target_cpu,
                stop,
            );
            match started {
                Ok(r) => Some((r, SocketAddr::from(([127, 0, 0, 1], admin)))),
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(e) => return Ok((PhaseOutcome::Skip(e.to_string()), None)),
            }
        }
    };
    let spec = LoadSpec {
        addr: proxy.as_ref().map_or(env.origin.addr, |p| p.0.addr),
        request: target.request(),
        connections: o.connections,
        warmup: o.warmup,
        duration: o.duration,
        mode,
    };
    let measured = proxy.as_ref().map_or(&env.origin.proc, |p| &p.0.proc);
    let outcome = window(&spec, measured, &env.origin.proc, o.target_cpu, stop)?;
    let pooling = proxy.map(|(_, admin)| {
        let cluster = if target == Target::EgressdOrigination {
            TLS_CLUSTER
        } else {
            PLAIN_CLUSTER
        };
        let stat = |s: &str| admin_stat(admin, &format!("cluster.{cluster}.{s}"));
        Pooling {
            target: target.name().into(),
            mode: match mode {
                Mode::Closed => "peak".into(),
                Mode::Open { rate } => format!("open {rate:.0}/s"),
            },
            cluster: cluster.into(),
            upstream_cx_total: stat("upstream_cx_total"),
            upstream_rq_total: stat("upstream_rq_total"),
        }
    });
    Ok((outcome, pooling))
}

/// Runs the scenario and writes `<out>/<date>-origination.{json,md}` when every target ran.
pub fn run(
    o: &Options,
    out: &Path,
    launch: Launch,
) -> Result<Option<(PathBuf, PathBuf)>, BenchError> {
    let stop: &AtomicBool = &launch.stop;
    let pki_dir = targets::tempdir("bench-origination-pki-")?;
    let pki = Pki::write(pki_dir.path())?;
    let dir = targets::tempdir("bench-origin-")?;
    let (plain, tls_port) = (targets::free_port()?, targets::free_port()?);
    let conf = dir.path().join("origin.conf");
    std::fs::write(&conf, origin_conf(dir.path(), plain, tls_port, &pki))
        .map_err(|e| BenchError::io("write origin.conf", e))?;
    let origin = targets::start_nginx(
        "origin",
        &o.tools.nginx,
        &conf,
        dir,
        plain,
        o.target_cpu,
        stop,
    )?;
    let env = Env {
        origin,
        tls_port,
        pki,
        _pki_dir: pki_dir,
    };
    let mut results: Vec<TargetResult> = ALL
        .iter()
        .map(|t| TargetResult {
            name: t.name().into(),
            ..Default::default()
        })
        .collect();
    let mut pooling = Vec::new();
    let mut run_mode = |mode: Mode, results: &mut Vec<TargetResult>| -> Result<(), BenchError> {
        for _round in 0..o.rounds {
            for (i, t) in ALL.into_iter().enumerate() {
                if results[i].skipped.is_some() {
                    continue;
                }
                let (outcome, pool) = phase(o, &env, t, mode, stop)?;
                pooling.extend(pool);
                match outcome {
                    PhaseOutcome::Measured(p) => {
                        tracing::info!(target = t.name(), rps = p.rps as u64, cpu_us = ?p.cpu_us_per_req, "measured");
                        match mode {
                            Mode::Closed => results[i].rounds.peak.push(p),
                            Mode::Open { .. } => results[i].rounds.open_loop.push(p),
                        }
                    }
                    PhaseOutcome::Skip(why) => results[i].skipped = Some(why),
                }
            }
        }
        results.iter_mut().for_each(TargetResult::summarize);
        Ok(())
    };
    run_mode(Mode::Closed, &mut results)?;
    let plain_peak = results[1].peak_rps;
    let rate = o.rate.or(plain_peak.map(|p| 0.7 * p));
    if let Some(rate) = rate {
        run_mode(Mode::Open { rate }, &mut results)?;
    }
    drop(env);
    let ratios = report::ratios(&results, "egressd-origination");
    let report = Report {
        date: launch.date,
        started_utc: launch.started_utc,
        machine: launch.snapshot.finish(8),
        layout: Layout {
            loadgen_cpu: o.loadgen_cpu,
            target_cpu: o.target_cpu,
            connections: o.connections,
            duration_s: o.duration.as_secs_f64(),
            warmup_s: o.warmup.as_secs_f64(),
            rounds: o.rounds,
            order: ALL.iter().map(|t| t.name().to_string()).collect(),
            request: String::from_utf8_lossy(&Target::EgressdOrigination.request()).into_owned(),
            response_body_bytes: BODY.len(),
            open_loop_rate_basis: match o.rate {
                Some(r) => format!("{r:.0} req/s set by --rate"),
                None => "70% of egressd-plain's median peak".into(),
            },
            cpu_measure: "utime+stime from /proc/PID/stat over the measured window / completed requests (kernel ticks)".into(),
            tool_versions: targets::tool_versions(&o.tools),
            proxies: BTreeMap::from([
                ("origin".into(), format!("one nginx process (master_process off) with two servers: plain HTTP, and HTTPS (TLSv1.2/1.3, ECDSA P-256 certificate from the bench CA, OpenSSL); both return 200 with a {}-byte body; keepalive_requests 1000000", BODY.len())),
                ("egressd-plain".into(), format!("run --shards 1 --cpus <target>, HTTP server on 80, http route Host {HOST} -> plain origin, pooled keep-alive upstream, access log on (istio format, temp file), admin on for /stats")),
                ("egressd-origination".into(), format!("same process config; Host {TLS_HOST} -> destination port 443, DestinationRule portLevelSettings tls SIMPLE with caCertificates = bench root (SNI defaults to the host), pooled TLS upstream connections")),
                ("direct".into(), format!("the load generator straight to the plain origin (Host {HOST})")),
            ]),
        },
        scenarios: vec![Scenario { name: "origination".into(), targets: results, ratios, cross_check: None }],
        notes: vec![
            "Goal (issue 4): egressd-origination at least 0.8x egressd-plain req/s (ratio egressd-origination/egressd-plain, req/s column).".into(),
            "Pooling: upstream_cx_total and upstream_rq_total from egressd's admin /stats after each egressd phase (whole phase, warm-up included): connections opened vs requests sent upstream.".into(),
            "direct is plain HTTP; its CPU µs/req is the origin's own.".into(),
            "A load average well above the 2 CPUs means other jobs shared the cores: compare within this file; every window is listed with its target-CPU busy share.".into(),
        ],
    };
    let mut md = crate::markdown::render(&report);
    md += "\n## Pooling (egressd admin /stats after each phase)\n\n| target | mode | cluster | upstream_cx_total | upstream_rq_total |\n|---|---|---|---|---|\n";
    let show = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
    for p in &pooling {
        // A `|` inside a table cell must be escaped, code span or not.
        let cluster = p.cluster.replace('|', "\\|");
        md += &format!(
            "| {} | {} | `{cluster}` | {} | {} |\n",
            p.target,
            p.mode,
            show(p.upstream_cx_total),
            show(p.upstream_rq_total)
        );
    }
    print!("{md}");
    let sc = &report.scenarios[0];
    let clean = sc.targets.iter().all(|t| {
        t.skipped.is_none()
            && t.rounds
                .peak
                .iter()
                .chain(&t.rounds.open_loop)
                .all(|p| p.errors == 0)
    });
    if !clean {
        tracing::warn!(
            "run not clean (a target skipped or requests failed): no result files written"
        );
        return Ok(None);
    }
    let full = OriginationReport { report, pooling };
    report::write_pair(out, &full.report.date, "origination", &full, &md).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_lines_are_read_by_exact_name() {
        let text = "cluster.outbound|443||tls.bench.local.upstream_cx_total: 3\ncluster.outbound|443||tls.bench.local.upstream_cx_total_x: 9\n";
        assert_eq!(
            parse_stat(
                text,
                "cluster.outbound|443||tls.bench.local.upstream_cx_total"
            ),
            Some(3)
        );
        assert_eq!(
            parse_stat(text, "cluster.outbound|80||bench.local.upstream_cx_total"),
            None
        );
    }

    #[test]
    fn egressd_originates_tls_only_for_the_tls_host() {
        let pki = Pki::at(Path::new("/p"));
        let y = egressd_yaml(
            8080,
            15000,
            "127.0.0.1:9000".parse().expect("addr"),
            9443,
            &pki,
            Path::new("/l"),
        );
        assert!(y.contains("ports: {https: 9443}") && y.contains("ports: {http: 9000}"));
        assert!(
            y.contains("host: tls.bench.local\n  trafficPolicy")
                && y.contains("mode: SIMPLE, caCertificates: /p/root-cert.pem")
        );
        assert_eq!(y.matches("\n---\n").count(), 6);
        let o = origin_conf(Path::new("/d"), 9000, 9443, &pki);
        assert!(
            o.contains("listen 127.0.0.1:9443 ssl;")
                && o.contains("ssl_certificate /p/server-cert.pem;")
        );
    }
}
