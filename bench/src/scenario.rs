//! The HTTP scenarios (`http-keepalive`, `http-newconn`, `http-1mib`; see `workload`): the
//! same request sent directly to the origin and through each proxy, closed-loop peak then open loop at one shared rate, in
//! interleaved rounds (direct, egressd, haproxy, nginx; twice by default) to spread noise.
//!
//! Owns: run order, per-phase process lifetimes (a proxy runs only during its own phases,
//! so an idle one cannot steal the shared CPU), CPU accounting windows, the wrk cross-check.
//! Must not: format output (`report`) or write configs (`targets`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::loadgen::{self, Edge, LoadSpec, Mode};
use crate::machine::{round3, CpuTicks};
use crate::procs::{self, Proc};
use crate::report::{self, CrossCheck, Latency, Phase, Scenario, TargetResult};
use crate::targets::{self, Running, TargetKind, Tools};
use crate::workload::Workload;

#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    /// Open-loop rate; None = 70% of haproxy's median peak.
    pub rate: Option<f64>,
    /// Extra open-loop runs at these fractions of each target's own peak.
    pub sweep: Vec<f64>,
    pub wrk_duration: Duration,
    pub loadgen_cpu: usize,
    pub target_cpu: usize,
    pub tools: Tools,
    /// Targets to measure; the others are reported as skipped.
    pub only: Vec<TargetKind>,
}

/// What the scenario found, plus the rate basis for the layout notes.
pub struct HttpOutcome {
    pub scenario: Scenario,
    pub rate_basis: String,
}

/// A phase either measured, or the target could not serve (recorded as skipped).
pub enum PhaseOutcome {
    Measured(Phase),
    Skip(String),
}

pub fn run_http(opts: &Options, stop: &AtomicBool) -> Result<HttpOutcome, BenchError> {
    run_workload(opts, &Workload::keep_alive(), stop)
}

/// `w` against every selected target: peaks, the shared open-loop rate, the sweep; the wrk
/// cross-check for keep-alive only (its figure is the one wrk measures the same way).
pub fn run_workload(
    opts: &Options,
    w: &Workload,
    stop: &AtomicBool,
) -> Result<HttpOutcome, BenchError> {
    let origin = w.start_origin(&opts.tools.nginx, opts.target_cpu, stop)?;
    tracing::info!(addr = %origin.addr, pid = origin.proc.pid(), "origin ready");
    let mut results: Vec<TargetResult> = TargetKind::ALL
        .iter()
        .map(|k| TargetResult {
            name: k.name().into(),
            skipped: if !opts.only.contains(k) {
                Some("not selected (--only)".to_string())
            } else {
                w.skip_reason(*k).map(str::to_string)
            },
            ..Default::default()
        })
        .collect();

    for round in 0..opts.rounds {
        for (i, kind) in TargetKind::ALL.into_iter().enumerate() {
            if results[i].skipped.is_some() {
                continue;
            }
            match phase(opts, w, kind, &origin, Mode::Closed, stop)? {
                PhaseOutcome::Measured(p) => {
                    tracing::info!(target = kind.name(), round, rps = p.rps as u64, cpu_us = ?p.cpu_us_per_req, "peak");
                    results[i].rounds.peak.push(p);
                }
                PhaseOutcome::Skip(why) => {
                    tracing::warn!(target = kind.name(), %why, "skipped");
                    results[i].skipped = Some(why);
                }
            }
        }
    }
    for r in &mut results {
        r.summarize();
    }

    let (rate, rate_basis) = match (opts.rate, peak_of(&results, "haproxy")) {
        (Some(r), _) => (Some(r), format!("{r:.0} req/s set by --rate")),
        (None, Some(h)) => (Some(0.7 * h), "70% of haproxy's median peak".to_string()),
        (None, None) => {
            let lowest = results
                .iter()
                .filter_map(|t| t.peak_rps)
                .min_by(f64::total_cmp);
            (
                lowest.map(|l| 0.7 * l),
                "70% of the lowest median peak (haproxy unavailable)".to_string(),
            )
        }
    };
    if let Some(rate) = rate {
        for _round in 0..opts.rounds {
            for (i, kind) in TargetKind::ALL.into_iter().enumerate() {
                if results[i].skipped.is_some() {
                    continue;
                }
                match phase(opts, w, kind, &origin, Mode::Open { rate }, stop)? {
                    PhaseOutcome::Measured(p) => {
                        tracing::info!(
                            target = kind.name(),
                            rate = rate as u64,
                            p99_us = p.latency.p99_us,
                            "open loop"
                        );
                        results[i].rounds.open_loop.push(p);
                    }
                    PhaseOutcome::Skip(why) => results[i].skipped = Some(why),
                }
            }
        }
    }
    for (i, kind) in TargetKind::ALL.into_iter().enumerate() {
        let Some(peak) = results[i].peak_rps.filter(|_| results[i].skipped.is_none()) else {
            continue;
        };
        for f in &opts.sweep {
            if let PhaseOutcome::Measured(p) =
                phase(opts, w, kind, &origin, Mode::Open { rate: f * peak }, stop)?
            {
                results[i]
                    .sweep
                    .extend(report::open_loop_summary(std::slice::from_ref(&p)));
            }
        }
    }
    for r in &mut results {
        r.summarize();
    }

    let cross_check = (w.kind == crate::workload::Kind::KeepAlive)
        .then(|| wrk_cross_check(opts, origin.addr, peak_of(&results, "direct"), stop));
    drop(origin);
    if w.is_bulk() {
        for r in &mut results {
            r.add_throughput(w.body_bytes);
        }
    }
    let ratios = report::ratios(&results, "egressd");
    Ok(HttpOutcome {
        scenario: Scenario {
            name: w.name.into(),
            targets: results,
            ratios,
            cross_check,
        },
        rate_basis,
    })
}

fn peak_of(results: &[TargetResult], name: &str) -> Option<f64> {
    results
        .iter()
        .find(|t| t.name == name)
        .and_then(|t| t.peak_rps)
}

/// One warm-up + measured window against `kind`, with its process started for it alone.
fn phase(
    opts: &Options,
    w: &Workload,
    kind: TargetKind,
    origin: &Running,
    mode: Mode,
    stop: &AtomicBool,
) -> Result<PhaseOutcome, BenchError> {
    let proxy = match kind {
        TargetKind::Direct => None,
        _ => match w.start_proxy(kind, &opts.tools, origin.addr, opts.target_cpu, stop) {
            Ok(r) => Some(r),
            Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
            Err(e) => return Ok(PhaseOutcome::Skip(e.to_string())),
        },
    };
    let addr = proxy.as_ref().map_or(origin.addr, |p| p.addr);
    let spec = LoadSpec {
        addr,
        request: w.request.clone(),
        connections: opts.connections,
        warmup: opts.warmup,
        duration: opts.duration,
        mode,
    };
    let measured: &Proc = proxy.as_ref().map_or(&origin.proc, |p| &p.proc);
    window(&spec, measured, &origin.proc, opts.target_cpu, stop)
}

/// Runs `spec` once and accounts CPU over its measured window: `measured` (the process
/// under test), `origin` and this process (the load generator) per completed request, and
/// how busy `target_cpu` was. Skip when no 2xx came back (with `measured`'s last log lines).
pub fn window(
    spec: &LoadSpec,
    measured: &Proc,
    origin: &Proc,
    target_cpu: usize,
    stop: &AtomicBool,
) -> Result<PhaseOutcome, BenchError> {
    // [measured, origin, load generator] at the window's start and end.
    let mut cpu = [[Duration::ZERO; 3]; 2];
    let mut core = [CpuTicks::default(); 2];
    let own = |_: ()| {
        procs::proc_stat(std::process::id())
            .map_or(Duration::ZERO, |s| procs::ticks_to_duration(s.cpu_ticks))
    };
    let result = loadgen::run(spec, stop, &mut |edge| {
        let i = usize::from(edge == Edge::End);
        cpu[i] = [measured.cpu_time(), origin.cpu_time(), own(())];
        core[i] = CpuTicks::read(target_cpu).unwrap_or_default();
    })?;
    if stop.load(Ordering::Relaxed) {
        return Err(BenchError::Interrupted);
    }
    if result.ok == 0 {
        let log = if measured.pid() == origin.pid() {
            String::new()
        } else {
            measured.log_tail(4)
        };
        return Ok(PhaseOutcome::Skip(format!(
            "no 2xx responses in the window ({} non-2xx, {} I/O errors) {log}",
            result.status_errors, result.io_errors
        )));
    }
    let (busy, steal) = core[0].busy_steal_pct(core[1]);
    let completed = (result.ok + result.status_errors) as f64;
    let per_req = |before: Duration, after: Duration| {
        Some(round3(
            after.saturating_sub(before).as_secs_f64() * 1e6 / completed,
        ))
    };
    Ok(PhaseOutcome::Measured(Phase {
        rate: match spec.mode {
            Mode::Open { rate } => Some(round3(rate)),
            Mode::Closed => None,
        },
        rps: round3(result.rps()),
        ok: result.ok,
        errors: result.errors(),
        reconnects: result.reconnects,
        latency: Latency::from_histogram_ns(&result.latency_ns),
        cpu_us_per_req: per_req(cpu[0][0], cpu[1][0]),
        origin_cpu_us_per_req: per_req(cpu[0][1], cpu[1][1]),
        loadgen_cpu_us_per_req: per_req(cpu[0][2], cpu[1][2]),
        target_cpu_busy_pct: Some(busy),
        target_cpu_steal_pct: Some(steal),
    }))
}

/// wrk against the origin, pinned like our generator, as a sanity check on our req/s.
fn wrk_cross_check(
    opts: &Options,
    origin: SocketAddr,
    ours: Option<f64>,
    stop: &AtomicBool,
) -> CrossCheck {
    let secs = opts.wrk_duration.as_secs().max(1);
    let mut check = CrossCheck {
        tool: format!("wrk -t1 -c{} -d{secs}s", opts.connections),
        target: "direct".into(),
        wrk_rps: None,
        bench_rps: ours,
        error: None,
    };
    let run = || -> Result<f64, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let args = [
            "-t1".to_string(),
            format!("-c{}", opts.connections),
            format!("-d{secs}s"),
            "-H".to_string(),
            format!("Host: {}", targets::HOST),
            format!("http://{origin}/"),
        ];
        let mut wrk =
            Proc::spawn_pinned("wrk", opts.loadgen_cpu, &opts.tools.wrk, &args, dir.path())
                .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(secs + 15);
        while wrk.exited().is_none() {
            if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                return Err("wrk did not finish in time".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(wrk.log_path()).map_err(|e| e.to_string())?;
        parse_wrk_rps(&text)
            .ok_or_else(|| format!("no Requests/sec in wrk output: {}", wrk.log_tail(3)))
    };
    match run() {
        Ok(rps) => check.wrk_rps = Some(round3(rps)),
        Err(e) => check.error = Some(e),
    }
    check
}

pub fn parse_wrk_rps(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_requests_per_second_line_is_read() {
        let out = "Running 5s test\n  1 threads and 32 connections\nRequests/sec:  41234.56\nTransfer/sec:      6.10MB\n";
        assert_eq!(parse_wrk_rps(out), Some(41234.56));
        assert_eq!(parse_wrk_rps("nothing"), None);
    }
}
