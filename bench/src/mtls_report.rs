//! Running the `mtls` scenario in interleaved rounds and writing
//! `perf-results/<date>-mtls.{json,md}`: medians per target, and the goal as a
//! ratio: egressd's new mTLS connections per CPU-second over haproxy's (goal at least 3).
//!
//! Owns: round order, medians, ratios, the report's shape and Markdown.
//! Must not: measure (`mtls`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::BenchError;
use crate::launch::Launch;
use crate::machine::{round3, Machine};
use crate::mtls::{measure, Measured, Plan, Target};
use crate::pki::Pki;
use crate::report::{median, write_pair};
use crate::scenario::Options;
use crate::targets;

#[derive(Debug, Serialize)]
pub struct MtlsReport {
    pub date: String,
    pub started_utc: String,
    pub machine: Machine,
    pub layout: Vec<String>,
    /// Field-wise medians per target over the rounds.
    pub medians: Vec<Measured>,
    /// `a/b` → a's connections per proxy CPU-second over b's (= b's CPU µs/conn over a's),
    /// and the same for handshakes/s.
    pub ratios: BTreeMap<String, Ratio>,
    /// Every round, in run order.
    pub rounds: Vec<Measured>,
    pub skipped: Vec<(Target, String)>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub conn_per_cpu_s: Option<f64>,
    pub handshakes_per_s: Option<f64>,
}

/// Sidecar client threads: enough to keep one proxy core busy while the clients' own
/// handshake work shares the load generator's core.
pub const CLIENTS: usize = 8;

/// Runs every round of `o` (durations, rounds, CPUs, tools; `connections` and `rate` are
/// not used), prints the Markdown, and writes `<out>/<date>-mtls.*` when the run was clean
/// (every target measured, no failed connection). Returns the paths written, if any.
pub fn run(
    o: &Options,
    out: &Path,
    launch: Launch,
) -> Result<Option<(PathBuf, PathBuf)>, BenchError> {
    let stop: &AtomicBool = &launch.stop;
    let plan = Plan {
        duration: o.duration,
        warmup: o.warmup,
        clients: CLIENTS,
        target_cpu: o.target_cpu,
        egressd: o.tools.egressd.clone(),
        haproxy: o.tools.haproxy.clone(),
    };
    let dir = targets::tempdir("bench-mtls-pki-")?;
    let pki = Pki::write(dir.path())?;
    let origin = targets::start_origin(&o.tools.nginx, plan.target_cpu, stop)?;
    let mut all = Vec::new();
    let mut skipped: Vec<(Target, String)> = Vec::new();
    for round in 0..o.rounds {
        for target in Target::ALL {
            if skipped.iter().any(|(t, _)| *t == target) {
                continue;
            }
            match measure(target, &plan, &origin, &pki, stop) {
                Ok(m) => {
                    tracing::info!(target = target.name(), round, conn_s = m.handshakes_per_s, cpu_us_per_conn = ?m.proxy_cpu_us_per_conn, resumed = m.resumed, errors = m.errors, "measured");
                    all.push(m);
                }
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(e) => {
                    tracing::warn!(target = target.name(), error = %e, "skipped");
                    skipped.push((target, e.to_string()));
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Err(BenchError::Interrupted);
            }
        }
    }
    drop(origin);
    let medians = medians(&all);
    let report = MtlsReport {
        date: launch.date,
        started_utc: launch.started_utc,
        machine: launch.snapshot.finish(8),
        layout: vec![
            format!("sidecar clients: {} threads of the bench process on CPU {}, closed loop, {:?} warm-up then {:?} measured per target", plan.clients, o.loadgen_cpu, plan.warmup, plan.duration),
            format!("origin: nginx (plain HTTP, one process, master_process off) and the proxy under test, both pinned to CPU {}", plan.target_cpu),
            "each connection: TCP connect, TLS handshake with a client certificate (rustls 0.23 client, aws-lc-rs; ECDSA P-256 CA, server and client certificates made by rcgen), GET / with Connection: close, response read until the server closes".into(),
            "egressd: run --shards 1 --cpus <target>, Gateway HTTPS server with tls MUTUAL (serverCertificate, privateKey, caCertificates), http route to the origin, access log on (istio format, temp file)".into(),
            "haproxy: nbthread 1, bind ... ssl crt <cert+key> ca-file <root> verify required, mode http, http-reuse always, option forwardfor, no logging".into(),
            "direct: the same request over plain TCP straight to the origin (no TLS): the per-connection floor of TCP + HTTP".into(),
            "*-resumed: the client keeps rustls' session store (TLS 1.3 tickets), so a server that issues tickets resumes instead of a full handshake; the others disable resumption".into(),
            "CPU: utime+stime from /proc/PID/stat over the window / completed connections (kernel ticks; proxy = its process only, origin separately)".into(),
        ],
        ratios: ratios(&medians),
        medians,
        rounds: all,
        skipped,
        notes: vec![
            "Goal (issue 4): egressd's new mTLS connections per CPU-second at least 3x haproxy's; ratio `egressd/haproxy` conn_per_cpu_s.".into(),
            "The clients share one CPU; when loadgen CPU µs/conn × handshakes/s nears 1 s/s they, not the proxy, set the rate, and CPU per connection is the figure to compare.".into(),
            "A load average well above the 2 CPUs (see Machine) means other jobs shared the cores: rates (direct's above all) move between rounds; CPU per connection moves much less. Every round is in the JSON.".into(),
            "egressd issues 2 TLS 1.3 tickets per full handshake (haproxy/OpenSSL issues 2 as well); their cost is inside the full-handshake figures.".into(),
        ],
    };
    print!("{}", markdown(&report));
    let clean = report.skipped.is_empty() && report.rounds.iter().all(|m| m.errors == 0);
    if !clean {
        tracing::warn!(
            "run not clean (a target skipped or connections failed): no result files written"
        );
        return Ok(None);
    }
    let md = markdown(&report);
    write_pair(out, &report.date, "mtls", &report, &md).map(Some)
}

/// Field-wise medians of each target's rounds.
pub fn medians(rounds: &[Measured]) -> Vec<Measured> {
    Target::ALL
        .iter()
        .filter_map(|t| {
            let mine: Vec<&Measured> = rounds.iter().filter(|m| m.target == *t).collect();
            let first = *mine.first()?;
            let med = |f: &dyn Fn(&Measured) -> f64| {
                median(mine.iter().map(|m| f(m)).collect()).map_or(0.0, round3)
            };
            Some(Measured {
                target: *t,
                connections: med(&|m| m.connections as f64) as u64,
                handshakes_per_s: med(&|m| m.handshakes_per_s),
                resumed: med(&|m| m.resumed as f64) as u64,
                proxy_cpu_us_per_conn: first
                    .proxy_cpu_us_per_conn
                    .map(|_| med(&|m| m.proxy_cpu_us_per_conn.unwrap_or(f64::NAN))),
                origin_cpu_us_per_conn: med(&|m| m.origin_cpu_us_per_conn),
                loadgen_cpu_us_per_conn: med(&|m| m.loadgen_cpu_us_per_conn),
                target_cpu_busy_pct: med(&|m| m.target_cpu_busy_pct),
                target_cpu_steal_pct: med(&|m| m.target_cpu_steal_pct),
                errors: mine.iter().map(|m| m.errors).sum(),
            })
        })
        .collect()
}

/// egressd over haproxy, full and resumed handshakes.
pub fn ratios(medians: &[Measured]) -> BTreeMap<String, Ratio> {
    let find = |t: Target| medians.iter().find(|m| m.target == t);
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some(round3(a / b)),
        _ => None,
    };
    [
        (Target::Egressd, Target::Haproxy),
        (Target::EgressdResumed, Target::HaproxyResumed),
        (Target::EgressdResumed, Target::Egressd),
    ]
    .into_iter()
    .map(|(a, b)| {
        let (ma, mb) = (find(a), find(b));
        let cpu = |m: Option<&Measured>| m.and_then(|m| m.proxy_cpu_us_per_conn);
        let rate = |m: Option<&Measured>| m.map(|m| m.handshakes_per_s);
        (
            format!("{}/{}", a.name(), b.name()),
            Ratio {
                // Connections per CPU-second are 1e6 / (CPU µs per connection).
                conn_per_cpu_s: div(cpu(mb), cpu(ma)),
                handshakes_per_s: div(rate(ma), rate(mb)),
            },
        )
    })
    .collect()
}

pub fn markdown(r: &MtlsReport) -> String {
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    let mut s = String::new();
    let _ = writeln!(s, "# mtls, {}\n\nStarted {} UTC on {} ({} logical CPUs). Medians of the rounds; compare targets within this file.\n", r.date, r.started_utc, r.machine.cpu_model, r.machine.cores);
    let _ = writeln!(s, "| target | handshakes/s | proxy CPU µs/conn | conn per proxy CPU-s | origin CPU µs/conn | load generator CPU µs/conn | resumed | target CPU busy % | errors |\n|---|---|---|---|---|---|---|---|---|");
    for m in &r.medians {
        let per_cpu_s = m
            .proxy_cpu_us_per_conn
            .filter(|c| *c > 0.0)
            .map(|c| 1e6 / c);
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {} | {:.1} | {:.1} | {} of {} | {:.0} | {} |",
            m.target.name(),
            m.handshakes_per_s,
            opt(m.proxy_cpu_us_per_conn),
            per_cpu_s.map_or("–".into(), |v| format!("{v:.0}")),
            m.origin_cpu_us_per_conn,
            m.loadgen_cpu_us_per_conn,
            m.resumed,
            m.connections,
            m.target_cpu_busy_pct,
            m.errors
        );
    }
    let _ = writeln!(
        s,
        "\n| ratio | conn per CPU-second | handshakes/s |\n|---|---|---|"
    );
    for (k, v) in &r.ratios {
        let _ = writeln!(
            s,
            "| {k} | {} | {} |",
            opt_ratio(v.conn_per_cpu_s),
            opt_ratio(v.handshakes_per_s)
        );
    }
    for (t, why) in &r.skipped {
        let _ = writeln!(s, "\nSkipped {}: {why}", t.name());
    }
    let _ = writeln!(s, "\n## Layout\n");
    for l in &r.layout {
        let _ = writeln!(s, "- {l}");
    }
    let m = &r.machine;
    let _ = writeln!(s, "\n## Machine\n\n- {} × {} ({} usable), kernel {}, {} MiB RAM\n- load average {} at start, {} at end; run took {:.0} s", m.cpu_model, m.cores, m.available_parallelism, m.kernel, m.mem_total_kb / 1024, m.loadavg_start, m.loadavg_end, m.wall_s);
    let top: Vec<String> = m
        .top_cpu_during_run
        .iter()
        .map(|p| format!("{} {:.0}%", p.comm, p.cpu_pct))
        .collect();
    let _ = writeln!(
        s,
        "- CPU used during the run (share of one CPU): {}",
        top.join(", ")
    );
    let _ = writeln!(s, "\n## Notes\n");
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

fn opt_ratio(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(target: Target, rate: f64, cpu: Option<f64>) -> Measured {
        Measured {
            target,
            connections: 10,
            handshakes_per_s: rate,
            resumed: 0,
            proxy_cpu_us_per_conn: cpu,
            origin_cpu_us_per_conn: 1.0,
            loadgen_cpu_us_per_conn: 1.0,
            target_cpu_busy_pct: 99.0,
            target_cpu_steal_pct: 0.0,
            errors: 0,
        }
    }

    #[test]
    fn ratio_is_connections_per_cpu_second_of_egressd_over_haproxy() {
        let rounds = vec![
            m(Target::Egressd, 2000.0, Some(400.0)),
            m(Target::Haproxy, 700.0, Some(1300.0)),
            m(Target::Egressd, 2200.0, Some(440.0)),
            m(Target::Haproxy, 800.0, Some(1300.0)),
            m(Target::Direct, 9000.0, None),
        ];
        let med = medians(&rounds);
        assert_eq!(med.len(), 3);
        let e = med
            .iter()
            .find(|x| x.target == Target::Egressd)
            .expect("egressd");
        assert_eq!(
            (e.handshakes_per_s, e.proxy_cpu_us_per_conn),
            (2100.0, Some(420.0))
        );
        let r = ratios(&med);
        assert_eq!(r["egressd/haproxy"].conn_per_cpu_s, Some(3.095));
        assert_eq!(r["egressd/haproxy"].handshakes_per_s, Some(2.8));
        assert_eq!(r["egressd-resumed/haproxy-resumed"].conn_per_cpu_s, None);
    }
}
