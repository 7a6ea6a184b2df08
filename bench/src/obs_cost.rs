//! The `obs-cost` scenario: what the access log and the stats cost egressd in requests per
//! second, measured against the same binary with both turned off, in one run.
//!
//! Workload: the `http` scenario's keep-alive GETs (its load generator, origin and egressd
//! config, closed loop), through egressd with one shard pinned next to the origin. "on" is
//! the shipped setup (istio access log to a file, stats recorded); "off" is
//! `accessLog: {path: ""}` plus `EGRESSD_BENCH_NO_STATS=1` (per-request counters and
//! histograms not recorded). Rounds alternate on/off, then off/on, so drift on a shared VM
//! falls on both sides; each round's pair gives one ratio and the median ratio is the result.
//!
//! Owns: the on/off variants, their order, and this scenario's report files.
//! Must not: re-implement load generation or target configs (`loadgen`, `targets`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bench::error::BenchError;
use bench::loadgen::{self, Edge, LoadSpec, Mode};
use bench::machine::{round3, Machine, Snapshot};
use bench::procs::Proc;
use bench::report::median;
use bench::targets::{self, Running};
use serde::Serialize;

/// The check of issue #6: logging and stats cost under this share of requests/s.
const THRESHOLD_PCT: f64 = 5.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Variant {
    On,
    Off,
}

#[derive(Debug, Serialize)]
struct Sample {
    round: usize,
    variant: Variant,
    rps: f64,
    ok: u64,
    errors: u64,
    /// egressd's utime+stime (all threads: shard, log writer, control) per request.
    cpu_us_per_req: f64,
    origin_cpu_us_per_req: f64,
    /// Lines in the access log when egressd stopped (None when off: no file may exist).
    access_log_lines: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Summary {
    on_rps_median: Option<f64>,
    off_rps_median: Option<f64>,
    /// on / off per round, then their median: the result.
    pair_ratios: Vec<f64>,
    ratio_median: Option<f64>,
    cost_pct: Option<f64>,
    on_cpu_us_per_req_median: Option<f64>,
    off_cpu_us_per_req_median: Option<f64>,
    /// egressd CPU per request, on / off per round (less sensitive to neighbours than req/s).
    cpu_pair_ratios: Vec<f64>,
    cpu_ratio_median: Option<f64>,
    /// What on's extra CPU would cost in req/s were the target CPU saturated: (on - off)
    /// egressd µs/req over off's egressd + origin µs/req, per round, median. Unlike req/s,
    /// this does not depend on how busy the neighbours were.
    cpu_cost_pct_at_saturation: Option<f64>,
    threshold_pct: f64,
    /// Both the req/s cost and the CPU-based cost are under the threshold.
    under_threshold: bool,
}

#[derive(Debug, Serialize)]
struct ObsCostReport {
    date: String,
    started_utc: String,
    machine: Machine,
    layout: Vec<String>,
    samples: Vec<Sample>,
    summary: Summary,
    notes: Vec<String>,
}

pub fn run(o: super::Opts) -> Result<(), BenchError> {
    let snapshot = Snapshot::take();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))
            .map_err(|e| BenchError::io("install signal handler", e))?;
    }
    if o.loadgen_cpu == o.target_cpu {
        return Err(BenchError::Usage(
            "--loadgen-cpu and --target-cpu must differ".into(),
        ));
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: o.loadgen_cpu }) {
        return Err(BenchError::Machine(format!(
            "cannot pin to CPU {}",
            o.loadgen_cpu
        )));
    }
    let (dur, warm, rounds) = if o.quick {
        (2.0, 0.5, 1)
    } else {
        (10.0, 2.0, 5)
    };
    let duration = o.duration.unwrap_or(Duration::from_secs_f64(dur));
    let warmup = o.warmup.unwrap_or(Duration::from_secs_f64(warm));
    let rounds = o.rounds.unwrap_or(rounds).max(1);
    let egressd = o.egressd.clone().unwrap_or_else(super::default_egressd);
    let now = time::OffsetDateTime::now_utc();
    let date = now
        .format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default();
    let started_utc = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();

    let origin = targets::start_origin(&super::find_tool("nginx"), o.target_cpu, &stop)?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Variant::On, Variant::Off]
        } else {
            [Variant::Off, Variant::On]
        };
        for variant in order {
            let s = phase(
                &o, &egressd, &origin, variant, round, duration, warmup, &stop,
            )?;
            tracing::info!(
                round,
                ?variant,
                rps = s.rps as u64,
                cpu_us = s.cpu_us_per_req,
                "measured"
            );
            samples.push(s);
        }
    }
    drop(origin);

    let report = ObsCostReport {
        date,
        started_utc,
        machine: snapshot.finish(8),
        layout: vec![
            format!("load generator: this process on CPU {}, closed loop, {} keep-alive connections, `{}`", o.loadgen_cpu, o.connections, String::from_utf8_lossy(&targets::request_bytes()).escape_debug()),
            format!("origin: nginx (one process) on CPU {}, {}-byte body", o.target_cpu, targets::BODY.len()),
            format!("egressd: {} run --shards 1 --cpus {}, admin off; every thread on CPU {} (taskset)", egressd.display(), o.target_cpu, o.target_cpu),
            "on: accessLog {path: <temp file>, format: istio}, stats recorded".into(),
            "off: accessLog {path: \"\"} (no writer thread, records discarded) and EGRESSD_BENCH_NO_STATS=1 (counters and histograms not recorded; gauges still are)".into(),
            format!("{rounds} rounds of {:.1} s after {:.1} s warm-up; order on,off then off,on alternately", duration.as_secs_f64(), warmup.as_secs_f64()),
            "CPU: utime+stime from /proc/PID/stat over the window / completed requests (kernel ticks)".into(),
        ],
        summary: summarize(&samples),
        samples,
        notes: vec![
            "Both variants run the same binary, so the difference is logging and stats only.".into(),
            "With the log off, HTTP code still fills the access record (a few string copies) and drops it: that part of logging's cost is in both variants.".into(),
        ],
    };
    let (json, md) = write_files(&report, &o.out)?;
    print!("{}", markdown(&report));
    println!("{}\n{}", json.display(), md.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn phase(
    o: &super::Opts,
    egressd: &Path,
    origin: &Running,
    variant: Variant,
    round: usize,
    duration: Duration,
    warmup: Duration,
    stop: &AtomicBool,
) -> Result<Sample, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("bench-obs-cost-")
        .tempdir()
        .map_err(|e| BenchError::io("create temp dir", e))?;
    let port = targets::free_port()?;
    let log = dir.path().join("access.log");
    let log_arg = match variant {
        Variant::On => log.clone(),
        Variant::Off => Path::new("").to_path_buf(),
    };
    let conf = dir.path().join("egressd.yaml");
    std::fs::write(&conf, targets::egressd_yaml(port, origin.addr, &log_arg))
        .map_err(|e| BenchError::io("write egressd config", e))?;
    // `env` execs egressd, so the PID taskset started is egressd's.
    let mut args: Vec<String> = Vec::new();
    if variant == Variant::Off {
        args.push("EGRESSD_BENCH_NO_STATS=1".into());
    }
    args.push(egressd.display().to_string());
    for a in [
        "run",
        "-c",
        &conf.display().to_string(),
        "--shards",
        "1",
        "--cpus",
    ] {
        args.push(a.to_string());
    }
    args.push(o.target_cpu.to_string());
    let name = format!("egressd-{variant:?}").to_lowercase();
    let mut proc = Proc::spawn_pinned(&name, o.target_cpu, Path::new("env"), &args, dir.path())?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    proc.wait_listening(addr, Duration::from_secs(10), stop)?;
    let spec = LoadSpec {
        addr,
        request: targets::request_bytes(),
        connections: o.connections,
        warmup,
        duration,
        mode: Mode::Closed,
    };
    let mut cpu = [[Duration::ZERO; 2]; 2];
    let result = loadgen::run(&spec, stop, &mut |edge| {
        cpu[usize::from(edge == Edge::End)] = [proc.cpu_time(), origin.proc.cpu_time()];
    })?;
    if stop.load(Ordering::Relaxed) {
        return Err(BenchError::Interrupted);
    }
    let completed = (result.ok + result.status_errors).max(1) as f64;
    let per_req =
        |i: usize| round3((cpu[1][i].saturating_sub(cpu[0][i])).as_secs_f64() * 1e6 / completed);
    drop(proc);
    let lines = std::fs::read(&log)
        .ok()
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64);
    if variant == Variant::Off && lines.is_some() {
        return Err(BenchError::NotReady {
            what: "egressd with the access log off".into(),
            reason: format!("it created {}", log.display()),
        });
    }
    if result.ok == 0 {
        return Err(BenchError::NotReady {
            what: format!("egressd ({variant:?})"),
            reason: format!("no 2xx responses ({} errors)", result.errors()),
        });
    }
    Ok(Sample {
        round,
        variant,
        rps: round3(result.rps()),
        ok: result.ok,
        errors: result.errors(),
        cpu_us_per_req: per_req(0),
        origin_cpu_us_per_req: per_req(1),
        access_log_lines: lines,
    })
}

fn summarize(samples: &[Sample]) -> Summary {
    let of = |v: Variant, f: fn(&Sample) -> f64| -> Vec<f64> {
        samples.iter().filter(|s| s.variant == v).map(f).collect()
    };
    let pair_ratios: Vec<f64> = of(Variant::On, |s| s.rps)
        .iter()
        .zip(of(Variant::Off, |s| s.rps))
        .map(|(on, off)| round3(on / off))
        .collect();
    let ratio = median(pair_ratios.clone()).map(round3);
    let cpu_pair_ratios: Vec<f64> = of(Variant::On, |s| s.cpu_us_per_req)
        .iter()
        .zip(of(Variant::Off, |s| s.cpu_us_per_req))
        .map(|(on, off)| round3(on / off))
        .collect();
    let cost = ratio.map(|r| round3((1.0 - r) * 100.0));
    let on: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.variant == Variant::On)
        .collect();
    let off: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.variant == Variant::Off)
        .collect();
    let saturation = median(
        on.iter()
            .zip(&off)
            .map(|(a, b)| {
                100.0 * (a.cpu_us_per_req - b.cpu_us_per_req)
                    / (b.cpu_us_per_req + b.origin_cpu_us_per_req)
            })
            .collect(),
    )
    .map(round3);
    Summary {
        on_rps_median: median(of(Variant::On, |s| s.rps)).map(round3),
        off_rps_median: median(of(Variant::Off, |s| s.rps)).map(round3),
        pair_ratios,
        ratio_median: ratio,
        cost_pct: cost,
        on_cpu_us_per_req_median: median(of(Variant::On, |s| s.cpu_us_per_req)).map(round3),
        off_cpu_us_per_req_median: median(of(Variant::Off, |s| s.cpu_us_per_req)).map(round3),
        cpu_ratio_median: median(cpu_pair_ratios.clone()).map(round3),
        cpu_pair_ratios,
        threshold_pct: THRESHOLD_PCT,
        cpu_cost_pct_at_saturation: saturation,
        under_threshold: cost.is_some_and(|c| c < THRESHOLD_PCT)
            && saturation.is_some_and(|c| c < THRESHOLD_PCT),
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v}"))
}

fn markdown(r: &ObsCostReport) -> String {
    let s = &r.summary;
    let mut md = format!(
        "# obs-cost: access log and stats on vs off ({})\n\n",
        r.date
    );
    md += &format!(
        "**req/s with / without: {} (cost {} %); CPU-based cost at saturation {} %; threshold {} %: {}**\n\n",
        opt(s.ratio_median),
        opt(s.cost_pct),
        opt(s.cpu_cost_pct_at_saturation),
        s.threshold_pct,
        if s.under_threshold {
            "under"
        } else {
            "NOT under"
        }
    );
    md += "| | req/s (median) | egressd CPU µs/req (median) |\n|---|---|---|\n";
    md += &format!(
        "| on | {} | {} |\n",
        opt(s.on_rps_median),
        opt(s.on_cpu_us_per_req_median)
    );
    md += &format!(
        "| off | {} | {} |\n\n",
        opt(s.off_rps_median),
        opt(s.off_cpu_us_per_req_median)
    );
    md += &format!(
        "Per-round on/off req/s ratios: {:?}\n\nPer-round on/off egressd CPU-per-request ratios: {:?} (median {})\n\n",
        s.pair_ratios,
        s.cpu_pair_ratios,
        opt(s.cpu_ratio_median)
    );
    md += "| round | variant | req/s | errors | egressd µs/req | origin µs/req | log lines |\n|---|---|---|---|---|---|---|\n";
    for x in &r.samples {
        md += &format!(
            "| {} | {:?} | {} | {} | {} | {} | {} |\n",
            x.round,
            x.variant,
            x.rps,
            x.errors,
            x.cpu_us_per_req,
            x.origin_cpu_us_per_req,
            x.access_log_lines.map_or("-".into(), |n| n.to_string())
        );
    }
    md += "\n## Layout\n\n";
    for l in &r.layout {
        md += &format!("- {l}\n");
    }
    md += &format!(
        "\n## Machine\n\n{} ({} CPUs, {} available), kernel {}, load {} → {}\n\n## Notes\n\n",
        r.machine.cpu_model,
        r.machine.cores,
        r.machine.available_parallelism,
        r.machine.kernel,
        r.machine.loadavg_start,
        r.machine.loadavg_end
    );
    for n in &r.notes {
        md += &format!("- {n}\n");
    }
    md
}

fn write_files(
    r: &ObsCostReport,
    out: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf), BenchError> {
    std::fs::create_dir_all(out)
        .map_err(|e| BenchError::io(format!("create {}", out.display()), e))?;
    let json_path = out.join(format!("{}-obs-cost.json", r.date));
    let md_path = out.join(format!("{}-obs-cost.md", r.date));
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| BenchError::io("serialize report", e.into()))?;
    std::fs::write(&json_path, json + "\n")
        .map_err(|e| BenchError::io(format!("write {}", json_path.display()), e))?;
    std::fs::write(&md_path, markdown(r))
        .map_err(|e| BenchError::io(format!("write {}", md_path.display()), e))?;
    Ok((json_path, md_path))
}
