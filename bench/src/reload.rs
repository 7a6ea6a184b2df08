//! The `reload` scenario: keep-alive GETs through egressd while a second thread rewrites its
//! config file (a different route name each time, so every reload builds new tables) and
//! sends `POST /reload` to the admin once a second for the whole run. Every request counts
//! (no warm-up window): the goal is zero failed requests (non-2xx, resets, EOF mid-response),
//! and the admin's `server.config_reload.*` counters show the reloads were applied.
//!
//! Owns: the reloader thread, the admin calls, this scenario's report.
//! Must not: change egressd or the load generator; it drives them as an operator would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::BenchError;
use crate::launch::Launch;
use crate::loadgen::{self, LoadSpec, Mode};
use crate::machine::{round3, Machine};
use crate::origination::admin_stat;
use crate::report::Latency;
use crate::targets::{self, Tools};

const ATTEMPT: &str = "server.config_reload.update_attempt";
const SUCCESS: &str = "server.config_reload.update_success";
const REJECTED: &str = "server.config_reload.update_rejected";

#[derive(Debug, Clone)]
pub struct Plan {
    pub tools: Tools,
    pub connections: usize,
    pub duration: Duration,
    /// Open-loop rate; None = closed loop (as fast as egressd answers).
    pub rate: Option<f64>,
    pub interval: Duration,
    pub target_cpu: usize,
    /// `--quick`: said in the notes, with the machine's noise.
    pub quick: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub date: String,
    pub started_utc: String,
    pub machine: Machine,
    pub layout: Vec<String>,
    pub result: ReloadResult,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadResult {
    /// Responses and failures counted over the run (requests in flight at the end excluded).
    pub requests: u64,
    pub ok: u64,
    /// Non-2xx responses plus connection errors: must be 0.
    pub failed: u64,
    pub status_errors: u64,
    pub io_errors: u64,
    /// Keep-alive connections egressd closed cleanly between requests (not failures).
    pub reconnects: u64,
    pub rps: f64,
    pub latency: Option<Latency>,
    /// `POST /reload` sent, and answered 200.
    pub reload_posts: u64,
    pub reload_posts_ok: u64,
    /// Deltas of the admin counters over the run (the file watcher also reloads on change).
    pub update_attempt: Option<u64>,
    pub update_success: Option<u64>,
    pub update_rejected: Option<u64>,
    pub last_answer: String,
}

/// The bench's egressd config with the admin on `admin` and route `name`.
fn yaml(port: u16, admin: u16, origin: SocketAddr, log: &Path, route: &str) -> String {
    targets::egressd_yaml(port, origin, log)
        .replace("admin: \"\"", &format!("admin: 127.0.0.1:{admin}"))
        .replace("  - name: bench\n", &format!("  - name: {route}\n"))
}

/// `POST /reload`: the status code and the body's first line.
fn post_reload(admin: SocketAddr) -> Result<(u16, String), std::io::Error> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        b"POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").lines().next();
    Ok((status, body.unwrap_or("").to_string()))
}

/// Rewrites the config (write a temp file, rename over: the watcher never sees half a file)
/// and posts a reload, every `plan.interval` until `done`. Returns (posts, 200s, last answer).
fn reloader(
    plan: &Plan,
    conf: &Path,
    text: &dyn Fn(u64) -> String,
    admin: SocketAddr,
    done: &AtomicBool,
) -> (u64, u64, String) {
    let (mut posts, mut ok, mut last) = (0, 0, String::new());
    let mut next = Instant::now() + plan.interval;
    while !done.load(Ordering::Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        next += plan.interval;
        posts += 1;
        let tmp = conf.with_extension("yaml.new");
        let written = std::fs::write(&tmp, text(posts)).and_then(|()| std::fs::rename(&tmp, conf));
        if let Err(e) = written {
            last = format!("rewrite failed: {e}");
            continue;
        }
        match post_reload(admin) {
            Ok((200, body)) => {
                ok += 1;
                last = body;
            }
            Ok((status, body)) => last = format!("{status} {body}"),
            Err(e) => last = format!("POST /reload failed: {e}"),
        }
    }
    (posts, ok, last)
}

pub fn run(plan: &Plan, launch: Launch, out: &Path) -> Result<(PathBuf, PathBuf), BenchError> {
    let stop = &launch.stop;
    let origin = targets::start_origin(&plan.tools.nginx, plan.target_cpu, stop)?;
    let (port, admin_port) = (targets::free_port()?, targets::free_port()?);
    let dir = targets::tempdir("bench-reload-")?;
    let conf = dir.path().join("egressd.yaml");
    let log = dir.path().join("access.log");
    let text = |n: u64| yaml(port, admin_port, origin.addr, &log, &format!("bench-{n}"));
    let egressd = targets::start_with_config(
        "egressd",
        &plan.tools.egressd,
        targets::egressd_args(plan.target_cpu),
        ("egressd.yaml", &text(0)),
        dir,
        port,
        plan.target_cpu,
        stop,
    )?;
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_stat(admin, ATTEMPT).is_none() {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            return Err(BenchError::NotReady {
                what: "egressd admin".into(),
                reason: format!("no {ATTEMPT} in /stats; {}", egressd.proc.log_tail(4)),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = [ATTEMPT, SUCCESS, REJECTED].map(|n| admin_stat(admin, n));
    let spec = LoadSpec {
        addr: egressd.addr,
        request: targets::request_bytes(),
        connections: plan.connections,
        warmup: Duration::ZERO,
        duration: plan.duration,
        mode: plan.rate.map_or(Mode::Closed, |rate| Mode::Open { rate }),
    };
    let done = AtomicBool::new(false);
    let (load, (posts, posts_ok, last)) = std::thread::scope(|s| {
        let r = s.spawn(|| reloader(plan, &conf, &text, admin, &done));
        let load = loadgen::run(&spec, stop, &mut |_| {});
        done.store(true, Ordering::Relaxed);
        (load, r.join().unwrap_or((0, 0, "reloader panicked".into())))
    });
    let load = load?;
    if stop.load(Ordering::Relaxed) {
        return Err(BenchError::Interrupted);
    }
    // A watcher-triggered reload of the last rewrite may still be on its way.
    std::thread::sleep(Duration::from_millis(1500));
    let after = [ATTEMPT, SUCCESS, REJECTED].map(|n| admin_stat(admin, n));
    let delta = |i: usize| Some(after[i]?.saturating_sub(before[i]?));
    let result = ReloadResult {
        requests: load.ok + load.errors(),
        ok: load.ok,
        failed: load.errors(),
        status_errors: load.status_errors,
        io_errors: load.io_errors,
        reconnects: load.reconnects,
        rps: round3(load.rps()),
        latency: (load.ok > 0).then(|| Latency::from_histogram_ns(&load.latency_ns)),
        reload_posts: posts,
        reload_posts_ok: posts_ok,
        update_attempt: delta(0),
        update_success: delta(1),
        update_rejected: delta(2),
        last_answer: last,
    };
    drop(egressd);
    drop(origin);
    let report = ReloadReport {
        date: launch.date,
        started_utc: launch.started_utc,
        machine: launch.snapshot.finish(8),
        layout: vec![
            format!("load generator on its CPU; origin nginx and egressd (run --shards 1) on CPU {}", plan.target_cpu),
            format!("{} keep-alive connections, GET / Host bench.local, {} for {:?}, no warm-up: every request counts", plan.connections, plan.rate.map_or("closed loop".to_string(), |r| format!("open loop at {r:.0} req/s")), plan.duration),
            format!("every {:?}: the config file is replaced (temp file + rename) with the route renamed bench-N, then POST /reload to the admin", plan.interval),
        ],
        result,
        notes: [
            "egressd's file watcher (once a second) also notices each rewrite, so update_attempt can exceed the POSTs: both paths reload the same file.".to_string(),
            "Requests in flight when the run ends are not counted; reconnects are clean keep-alive closes between requests, not failures.".into(),
        ]
        .into_iter()
        .chain(plan.quick.then(|| "--quick run (5 s) on a shared, noisy 2-CPU machine: req/s and latency are smoke figures; the failed count is the result.".to_string()))
        .collect(),
    };
    let md = markdown(&report);
    print!("{md}");
    crate::report::write_pair(out, &report.date, "reload", &report, &md)
}

pub fn markdown(r: &ReloadReport) -> String {
    let x = &r.result;
    let o = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
    let l = x.latency.unwrap_or_default();
    let mut s = format!(
        "# egressd reload under load, {}\n\nGoal: no failed request across reloads. Verdict: **{}**.\n\n\
         | requests | ok | failed | non-2xx | I/O errors | clean reconnects | req/s | p50 µs | p99 µs | p99.9 µs | max µs |\n|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n\n\
         | POST /reload sent | answered 200 | update_attempt | update_success | update_rejected | last answer |\n|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} |\n\n## Layout\n\n",
        r.date,
        if x.failed == 0 && x.update_success.unwrap_or(0) > 0 { "met (0 failed)" } else if x.failed > 0 { "NOT met" } else { "no reload applied" },
        x.requests, x.ok, x.failed, x.status_errors, x.io_errors, x.reconnects, x.rps,
        l.p50_us, l.p99_us, l.p999_us, l.max_us,
        x.reload_posts, x.reload_posts_ok, o(x.update_attempt), o(x.update_success), o(x.update_rejected),
        x.last_answer.replace('|', "/"),
    );
    for line in r.layout.iter().chain(&r.notes) {
        s += &format!("- {line}\n");
    }
    s += &r.machine.summary_line();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_config_turns_the_admin_on_and_renames_the_route() {
        let origin = SocketAddr::from(([127, 0, 0, 1], 9000));
        let y = yaml(8000, 8001, origin, Path::new("/tmp/a.log"), "bench-7");
        assert!(y.contains("admin: 127.0.0.1:8001") && !y.contains("admin: \"\""));
        assert!(y.contains("  - name: bench-7\n") && !y.contains("  - name: bench\n"));
        assert_ne!(
            y,
            yaml(8000, 8001, origin, Path::new("/tmp/a.log"), "bench-8")
        );
    }
}
