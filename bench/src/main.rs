//! `bench`: run benchmark scenarios and write `perf-results/<date>-<scenario>.{json,md}`.
//!
//! Owns: options, pinning the load generator's thread, signal handling (Ctrl-C stops the
//! current phase and every spawned process is killed by its guard), the report's envelope.
//! Must not: measure or format; see the library modules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bench::error::BenchError;
use bench::report::{self, Layout, Report};
use bench::scenario::{self, Options};
use bench::targets::{self, TargetKind, Tools};
use bench::workload::Workload;
use clap::{Args, Parser, Subcommand};

mod obs_cost;

#[derive(Parser)]
#[command(about = "egressd benchmarks: direct vs egressd vs haproxy vs nginx, same run")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Small keep-alive GETs: peak req/s, CPU per request, latency at one shared rate.
    Http(Opts),
    /// TLS passthrough by SNI: bulk Gbit/s and CPU per GB, new connections per second and
    /// CPU per connection; direct, egressd (splice and copy), haproxy `mode tcp`.
    Passthrough(Opts),
    /// HTTP/2: h2load, many streams over few connections; direct (h2c origin), egressd
    /// (HTTP/1.1 pooled upstream and h2UpgradePolicy UPGRADE), haproxy `proto h2`.
    Http2(Opts),
    /// New mutual-TLS connections (the bench as the sidecar): egressd vs haproxy vs direct.
    Mtls(Opts),
    /// Plain HTTP in, TLS origination out (pooled) vs egressd plain HTTP vs direct.
    Origination(Opts),
    /// egressd's access log and stats on vs both off: req/s ratio and CPU per request.
    ObsCost(Opts),
    /// Keep-alive GETs with every proxy writing an access line per request (the job an
    /// egress gateway does): haproxy into a ring forwarded over TCP, nginx and egressd to files.
    HttpLogged(Opts),
    /// New TCP connection per request (`Connection: close`), small GET: req/s, CPU per request.
    HttpNewconn(Opts),
    /// 1 MiB response bodies over keep-alive: Gbit/s and CPU per GB.
    #[command(name = "http-1mib")]
    Http1mib(Opts),
    /// Keep-alive load through egressd while its config is rewritten and reloaded every
    /// second: failed requests (must be 0) and reloads applied.
    Reload(Opts),
    /// 10,000 idle keep-alive connections (1,000 with --quick): RSS per connection of
    /// egressd, haproxy and nginx.
    Idle(Opts),
    /// Every scenario, one after another; a failing one is reported and the rest still run.
    All(Opts),
}

#[derive(Args, Clone)]
struct Opts {
    /// Measured time per phase (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Traffic before each measured window.
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Open-loop rate in req/s (default: 70% of haproxy's peak).
    #[arg(long)]
    rate: Option<f64>,
    /// Also run open loop at these fractions of each target's peak, e.g. 0.2,0.4,0.8.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Rounds of the interleaved order direct, egressd, haproxy, nginx; medians are reported.
    #[arg(long)]
    rounds: Option<usize>,
    /// egressd binary (default: beside this binary, else <workspace>/target/release/egressd).
    #[arg(long)]
    egressd: Option<PathBuf>,
    #[arg(long, default_value = "perf-results")]
    out: PathBuf,
    /// Short smoke run: 2 s phases, 0.5 s warm-up, one round.
    #[arg(long)]
    quick: bool,
    /// Targets to measure (default all): direct,egressd,haproxy,nginx.
    #[arg(long, value_delimiter = ',', value_parser = parse_target)]
    only: Vec<TargetKind>,
    #[arg(long, default_value_t = 0)]
    loadgen_cpu: usize,
    #[arg(long, default_value_t = 1)]
    target_cpu: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_target(s: &str) -> Result<TargetKind, String> {
    TargetKind::ALL
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| format!("unknown target {s:?}"))
}

/// `name` from PATH or the sbin directories (nginx and haproxy live in /usr/sbin).
fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A binary of this crate, built beside `bench`.
fn beside_bench(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn default_egressd() -> PathBuf {
    match beside_bench("egressd") {
        p if p.is_file() => p,
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/egressd"),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Http(o) => run(o),
        Cmd::HttpLogged(o) => run_workload(o, Workload::keep_alive_logged()),
        Cmd::HttpNewconn(o) => run_workload(o, Workload::new_connection()),
        Cmd::Http1mib(o) => run_workload(o, Workload::one_mib()),
        Cmd::Reload(o) => run_reload(o),
        Cmd::All(o) => run_all(o),
        Cmd::Passthrough(o) => run_passthrough(o),
        Cmd::Http2(o) => run_http2(o),
        Cmd::Mtls(o) => run_tls(o, "mtls"),
        Cmd::Origination(o) => run_tls(o, "origination"),
        Cmd::ObsCost(o) => obs_cost::run(o),
        Cmd::Idle(o) => run_idle(o),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The scenarios `all` runs, in order (each one's subcommand name).
const ALL_SCENARIOS: [&str; 11] = [
    "http",
    "http-logged",
    "http-newconn",
    "http-1mib",
    "passthrough",
    "http2",
    "mtls",
    "origination",
    "reload",
    "obs-cost",
    "idle",
];

/// Every scenario in turn, each as a child process of this binary with the same options:
/// a scenario pins its thread and installs signal flags, and a fresh process starts each
/// one from this process's full CPU mask. A scenario that fails is logged and the next one
/// runs; the result says which failed.
fn run_all(_o: Opts) -> Result<(), BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::io("find own binary", e))?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let at = args
        .iter()
        .position(|a| a == "all")
        .ok_or_else(|| BenchError::Usage("`all` not found in the arguments".into()))?;
    // The children get Ctrl-C too (same process group); this flag stops the sequence.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| BenchError::io("install signal handler", e))?;
    }
    let mut failed = Vec::new();
    for name in ALL_SCENARIOS {
        tracing::info!(scenario = name, "starting");
        let mut child_args = args.clone();
        child_args[at] = name.into();
        match std::process::Command::new(&exe).args(&child_args).status() {
            Ok(s) if s.success() => tracing::info!(scenario = name, "done"),
            Ok(s) => {
                tracing::error!(scenario = name, "failed: {s}");
                failed.push(format!("{name} ({s})"));
            }
            Err(e) => {
                tracing::error!(scenario = name, "could not start: {e}");
                failed.push(format!("{name} (not started: {e})"));
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Scenarios(failed.join(", ")))
    }
}

fn run(o: Opts) -> Result<(), BenchError> {
    run_workload(o, Workload::keep_alive())
}

/// One of the HTTP workloads through the shared scenario machinery and report.
fn run_workload(o: Opts, w: Workload) -> Result<(), BenchError> {
    let launch = bench::launch::prepare(o.loadgen_cpu, o.target_cpu)?;
    let (snapshot, stop) = (launch.snapshot, launch.stop);
    let (dur, warm, rounds, wrk) = if o.quick {
        (2.0, 0.5, 1, 2)
    } else {
        (10.0, 2.0, 2, 5)
    };
    let tools = tools(&o);
    let opts = Options {
        connections: o.connections,
        duration: o.duration.unwrap_or(Duration::from_secs_f64(dur)),
        warmup: o.warmup.unwrap_or(Duration::from_secs_f64(warm)),
        rounds: o.rounds.unwrap_or(rounds).max(1),
        rate: o.rate,
        sweep: o.sweep.clone(),
        wrk_duration: Duration::from_secs(wrk),
        loadgen_cpu: o.loadgen_cpu,
        target_cpu: o.target_cpu,
        tools: tools.clone(),
        only: if o.only.is_empty() {
            TargetKind::ALL.to_vec()
        } else {
            o.only.clone()
        },
    };
    let (date, started) = (launch.date, launch.started_utc);
    let outcome = scenario::run_workload(&opts, &w, &stop)?;

    let logged = w.kind == bench::workload::Kind::KeepAliveLogged;
    let mut versions = targets::tool_versions(&tools);
    versions.insert("egressd_path".into(), tools.egressd.display().to_string());
    let proxies = BTreeMap::from([
        ("origin".to_string(), w.origin_description()),
        ("egressd".to_string(), "run --shards 1 --cpus <target cpu>, access log ON (istio format, to a temp file), admin off".to_string()),
        ("haproxy".to_string(), format!("mode http, nbthread 1, http-reuse always, option forwardfor, keep-alive both sides, {}", if logged { "option httplog into a ring forwarded over TCP to a sink" } else { "no logging" })),
        ("nginx-proxy".to_string(), format!("one process (master_process off), upstream keepalive 64, proxy_http_version 1.1, X-Forwarded-For, {}", if logged { "access_log combined buffer=64k flush=100ms to a file" } else { "no access log" })),
        ("floor".to_string(), "floor-relay <listen> <origin>: a bare TCP relay, an upstream connection per client connection (reference row)".to_string()),
    ]);
    let report = Report {
        date,
        started_utc: started,
        machine: snapshot.finish(8),
        layout: Layout {
            loadgen_cpu: opts.loadgen_cpu,
            target_cpu: opts.target_cpu,
            connections: opts.connections,
            duration_s: opts.duration.as_secs_f64(),
            warmup_s: opts.warmup.as_secs_f64(),
            rounds: opts.rounds,
            order: TargetKind::ALL.iter().map(|k| k.name().to_string()).collect(),
            request: String::from_utf8_lossy(&w.request).into_owned(),
            response_body_bytes: w.body_bytes,
            open_loop_rate_basis: outcome.rate_basis,
            cpu_measure: "utime+stime from /proc/PID/stat (all threads, plus live children) over the measured window / completed requests; the kernel samples these at each tick, so short windows are coarse".into(),
            tool_versions: versions,
            proxies,
        },
        scenarios: vec![outcome.scenario],
        notes: [
            "Each proxy runs only during its own phases; origin and proxy share the target CPU, so peak req/s is bounded by both.".to_string(),
            if logged {
                "egressd adds x-request-id and x-envoy-upstream-service-time; haproxy and nginx add neither.".to_string()
            } else {
                "egressd writes an access log line per request and adds x-request-id and x-envoy-upstream-service-time; haproxy and nginx log nothing.".to_string()
            },
            "Open-loop requests still in flight when the window ends are not counted.".into(),
            "floor is bench/src/bin/floor-relay.rs: a bare TCP relay (one epoll thread, an upstream connection per client connection, no parsing, routing, log or timeouts), the least any proxy pays the kernel here; it is a reference, not a peer.".into(),
        ]
        .into_iter()
        .chain(w.notes())
        .chain(o.quick.then(|| "--quick run (2 s phases, one round) on a shared, noisy 2-CPU machine: a smoke figure, not a result.".to_string()))
        .collect(),
    };
    let (json, md) = report::write_files(&report, &o.out, w.tag)?;
    println!("{}\n{}", json.display(), md.display());
    print!("{}", bench::markdown::render(&report));
    Ok(())
}

fn run_passthrough(o: Opts) -> Result<(), BenchError> {
    use bench::passthrough::Plan;
    use bench::passthrough_report::{self as pr, PassthroughReport};

    // Clients and the origin run on threads of this process, which inherit this pinning.
    let launch = bench::launch::prepare(o.loadgen_cpu, o.target_cpu)?;
    let (snapshot, stop) = (launch.snapshot, launch.stop);
    let (bulk, dur, rounds) = if o.quick {
        (1u64 << 30, 2.0, 1)
    } else {
        (4u64 << 30, 5.0, 3)
    };
    let plan = Plan {
        bulk_bytes: bulk,
        conn_duration: o.duration.unwrap_or(Duration::from_secs_f64(dur)),
        conn_clients: 4,
        target_cpu: o.target_cpu,
        egressd: o.egressd.clone().unwrap_or_else(default_egressd),
        haproxy: find_tool("haproxy"),
        floor_relay: beside_bench("floor-relay"),
    };
    let (date, started) = (launch.date, launch.started_utc);
    let (all, skipped) = pr::run(&plan, o.rounds.unwrap_or(rounds).max(1), &stop)?;
    let report = PassthroughReport {
        date,
        started_utc: started,
        machine: snapshot.finish(8),
        layout: vec![
            format!("clients and origin: threads of the bench process on CPU {}; proxy under test pinned to CPU {}", o.loadgen_cpu, o.target_cpu),
            format!("bulk: one connection, a ClientHello naming bench.local then {} MiB client -> origin; time until the origin counted every byte", plan.bulk_bytes >> 20),
            format!("connections: {} client threads, closed loop for {:?}: connect, ClientHello, origin answers 1 byte and closes", plan.conn_clients, plan.conn_duration),
            "egressd: run --shards 1 --cpus <target>, TLS server with PASSTHROUGH, tls route by sniHosts, access log on (istio format, temp file); EGRESSD_SPLICE=0 for copy".into(),
            "haproxy: nbthread 1, mode tcp, option splice-auto, inspect-delay 5s, accept on req.ssl_hello_type 1, use_backend on req.ssl_sni".into(),
            "floor: bench/src/bin/floor-relay.rs, a bare TCP relay (one epoll thread, no SNI parse, routing, timeouts or log; bulk is a plain read/write copy): the least any relay pays the kernel here, a reference, not a peer".into(),
            "CPU: utime+stime of the proxy from /proc/PID/stat over the window (kernel ticks: coarse for short windows)".into(),
        ],
        medians: pr::medians(&all),
        rounds: all,
        skipped,
        notes: vec!["The ClientHello is a minimal hand-built TLS 1.2 hello; no TLS handshake completes (the origin only counts bytes), so the numbers are the proxies' cost, not TLS's.".into()],
    };
    print!("{}", pr::markdown(&report));
    if pr::is_clean(&report) {
        let (json, md) = pr::write_files(&report, &o.out)?;
        println!("{}\n{}", json.display(), md.display());
    } else {
        tracing::warn!(
            "run not clean (a target skipped or errors counted): no result files written"
        );
    }
    Ok(())
}

fn run_http2(o: Opts) -> Result<(), BenchError> {
    use bench::http2::Plan;
    use bench::http2_report::{self as hr, Http2Report};

    let launch = bench::launch::prepare(o.loadgen_cpu, o.target_cpu)?;
    let (dur, rounds) = if o.quick { (2, 1) } else { (10, 3) };
    let plan = Plan {
        loadgen_cpu: o.loadgen_cpu,
        target_cpu: o.target_cpu,
        duration: o.duration.unwrap_or(Duration::from_secs(dur)),
        clients: 4,
        streams: 100,
        egressd: o.egressd.clone().unwrap_or_else(default_egressd),
        nginx: find_tool("nginx"),
        haproxy: find_tool("haproxy"),
        h2load: find_tool("h2load"),
    };
    let rounds = hr::run(&plan, o.rounds.unwrap_or(rounds).max(1), &launch.stop)?;
    let medians = hr::medians(&rounds);
    let report = Http2Report {
        date: launch.date,
        started_utc: launch.started_utc,
        machine: launch.snapshot.finish(8),
        layout: vec![
            format!("h2load pinned to CPU {}; origin (nginx) and the proxy under test share CPU {}", plan.loadgen_cpu, plan.target_cpu),
            format!("h2load -c {} -m {} -D {:?} -H ':authority: bench.local', GET / (13-byte body), after a 2000-request warm-up", plan.clients, plan.streams, plan.duration),
            "direct: h2load to nginx's h2c listener (sidecar-direct)".into(),
            "egressd: run --shards 1, h2c from the client, HTTP/1.1 keep-alive pool to nginx's HTTP/1.1 listener; access log on (istio format, temp file)".into(),
            "egressd-h2-upstream: the same with DestinationRule h2UpgradePolicy UPGRADE: one multiplexed HTTP/2 connection to nginx's h2c listener".into(),
            "haproxy: nbthread 1, bind ... proto h2, HTTP/1.1 backend with http-reuse always, no logging".into(),
            "CPU: utime+stime from /proc/PID/stat over the measured run / succeeded requests".into(),
        ],
        ratios: hr::ratios(&medians),
        medians,
        rounds,
        notes: vec!["egressd writes an access-log line per request; haproxy and nginx log nothing.".into()],
    };
    let md = hr::markdown(&report);
    print!("{md}");
    let (json, md_path) = bench::report::write_pair(&o.out, &report.date, "http2", &report, &md)?;
    println!("{}\n{}", json.display(), md_path.display());
    Ok(())
}

/// Paths of the programs a run uses.
fn tools(o: &Opts) -> Tools {
    Tools {
        nginx: find_tool("nginx"),
        haproxy: find_tool("haproxy"),
        egressd: o.egressd.clone().unwrap_or_else(default_egressd),
        wrk: find_tool("wrk"),
        floor_relay: beside_bench("floor-relay"),
    }
}

/// The TLS scenarios (issue 4): 3 rounds of 1 s warm-up + 5 s by default.
fn run_tls(o: Opts, which: &str) -> Result<(), BenchError> {
    let launch = bench::launch::prepare(o.loadgen_cpu, o.target_cpu)?;
    let (dur, warm, rounds) = if o.quick {
        (2.0, 0.5, 1)
    } else {
        (5.0, 1.0, 3)
    };
    let tools = tools(&o);
    let opts = Options {
        connections: o.connections,
        duration: o.duration.unwrap_or(Duration::from_secs_f64(dur)),
        warmup: o.warmup.unwrap_or(Duration::from_secs_f64(warm)),
        rounds: o.rounds.unwrap_or(rounds).max(1),
        rate: o.rate,
        sweep: Vec::new(),
        wrk_duration: Duration::ZERO,
        loadgen_cpu: o.loadgen_cpu,
        target_cpu: o.target_cpu,
        tools,
        only: TargetKind::ALL.to_vec(),
    };
    let written = match which {
        "mtls" => bench::mtls_report::run(&opts, &o.out, launch)?,
        _ => bench::origination::run(&opts, &o.out, launch)?,
    };
    if let Some((json, md)) = written {
        println!("{}\n{}", json.display(), md.display());
    }
    Ok(())
}

/// Reload under load (issue 9): 20 s by default, 5 s with `--quick`.
fn run_reload(o: Opts) -> Result<(), BenchError> {
    let launch = bench::launch::prepare(o.loadgen_cpu, o.target_cpu)?;
    let secs = if o.quick { 5 } else { 20 };
    let plan = bench::reload::Plan {
        tools: tools(&o),
        connections: o.connections,
        duration: o.duration.unwrap_or(Duration::from_secs(secs)),
        rate: o.rate,
        interval: Duration::from_secs(1),
        target_cpu: o.target_cpu,
        quick: o.quick,
    };
    let (json, md) = bench::reload::run(&plan, launch, &o.out)?;
    println!("{}\n{}", json.display(), md.display());
    Ok(())
}

/// Idle connections (issue 9): 10,000 held connections, 1,000 with `--quick`.
fn run_idle(o: Opts) -> Result<(), BenchError> {
    let launch = bench::launch::prepare(o.loadgen_cpu, o.target_cpu)?;
    let n = if o.quick { 1_000 } else { 10_000 };
    let (json, md) = bench::idle::run(&tools(&o), launch, n, o.target_cpu, &o.out)?;
    println!("{}\n{}", json.display(), md.display());
    Ok(())
}
