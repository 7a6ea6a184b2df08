//! `egressd run`: load and check the configuration, plan shards on CPUs, start the shards,
//! the admin server and the DNS thread, then serve signals until a drain ends the process.
//! Exit codes are DESIGN.md's: 1 invalid config, 3 bind/instance/runtime failure, 4 limits.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use super::control::Control;
use super::executor::{spawn_shard, ShardReport, IO_MEMORY};
use super::limits::{self, Demand, Needs, SOCKETS_PER_CONNECTION};
use super::notify;
use super::watchdog::{arm_from_env, Heartbeat};
use crate::config::model::{Config, Protocol};
use crate::config::{load, protocol_name, LoadMode};
use crate::listener::bind::InstanceLock;
use crate::obs::log_format::LogFormat;
use crate::obs::log_writer::{
    start_access_log, AccessLogWriter, STAT_REOPEN_FAILED, STAT_WRITE_FAILED, STAT_WRITTEN,
};
use crate::route::compile;

pub struct RunArgs {
    pub config: PathBuf,
    pub shards: Option<usize>,
    pub cpus: Option<Vec<usize>>,
    pub log_level: Option<String>,
}

pub const EXIT_CONFIG: u8 = 1;
pub const EXIT_RUNTIME: u8 = 3;
pub const EXIT_LIMITS: u8 = 4;

pub fn run(args: RunArgs) -> u8 {
    let loaded = match load(&args.config, LoadMode::Run) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return EXIT_CONFIG;
        }
    };
    crate::obs::logging::init(args.log_level.as_deref(), &loaded.config.gateway.log_level);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cpus = match plan_cpus(&loaded.config, args.shards, args.cpus.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return EXIT_CONFIG;
        }
    };
    let format = match LogFormat::from_config(&loaded.config.gateway.access_log.format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: accessLog.format: {e}", args.config.display());
            return EXIT_CONFIG;
        }
    };
    let log_path = loaded.config.gateway.access_log.path.clone();
    let needs = needs(&loaded.config, &cpus);
    if let Err(too_low) = limits::ensure(&needs) {
        eprintln!("{too_low}");
        return EXIT_LIMITS;
    }
    let control = Control::new(&args.config, loaded.config, cpus.len());
    let snapshot = control.snapshot();
    let heartbeat = Heartbeat::new(cpus.len());
    let addrs: Vec<_> = snapshot.listeners.iter().map(|l| l.bind).collect();
    let _lock = match InstanceLock::acquire(&addrs) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!(error = %e, "refusing to start");
            return EXIT_RUNTIME;
        }
    };
    // The admin server comes first, so `/ready` answers 503 while the access log opens
    // (a FIFO's open waits for its reader) and while the shards start.
    if let Some(addr) = snapshot.config.gateway.admin {
        match crate::admin::server::spawn(addr, control.clone()) {
            Ok(bound) => tracing::info!("admin listening bound={bound}"),
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot bind the admin server");
                return EXIT_RUNTIME;
            }
        }
    }
    let (writer, senders) = match start_access_log(&log_path, format, cpus.len(), LOG_QUEUE) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(path = %log_path, error = %e, "cannot open the access log");
            return EXIT_RUNTIME;
        }
    };
    if let Some(w) = &writer {
        register_writer_stats(&control, w);
    }
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for ((id, cpu), sender) in cpus.iter().copied().enumerate().zip(senders) {
        tracing::info!(shard = id, cpu, "starting shard");
        match spawn_shard(
            id,
            cpu,
            control.clone(),
            sender,
            heartbeat.clone(),
            tx.clone(),
        ) {
            Ok(h) => handles.push(h),
            Err(e) => {
                tracing::error!(shard = id, cpu, error = %e, "cannot start shard");
                return stop(&control, handles, EXIT_RUNTIME);
            }
        }
    }
    for _ in 0..cpus.len() {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(ShardReport::Listening(_)) => {
                control.shards_listening.fetch_add(1, Ordering::Relaxed);
            }
            Ok(ShardReport::BindFailed(id, addr, e)) => {
                tracing::error!(shard = id, %addr, error = %e, "cannot bind listener");
                return stop(&control, handles, EXIT_RUNTIME);
            }
            Err(_) => {
                tracing::error!("a shard did not report in time");
                return stop(&control, handles, EXIT_RUNTIME);
            }
        }
    }
    for l in &snapshot.listeners {
        tracing::info!(
            "listening name={} gateway_port={} bound={} protocol={} shards={}",
            l.name,
            l.gateway_port,
            l.bind,
            protocol_name(l.protocol),
            cpus.len()
        );
    }
    if let Err(e) = super::dns_thread::spawn(control.clone()) {
        tracing::error!(error = %e, "cannot start the DNS thread");
    }
    if let Err(e) = super::config_watch::spawn(control.clone(), super::config_watch::POLL_PERIOD) {
        tracing::error!(error = %e, "cannot start the config watcher; SIGHUP and POST /reload still work");
    }
    // systemd arms its watchdog at READY=1; every shard listens by now.
    let _watchdog = match arm_from_env(&heartbeat) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the watchdog thread");
            return stop(&control, handles, EXIT_RUNTIME);
        }
    };
    notify::notify_status(&format!(
        "serving {} listener(s) on {} shard(s)",
        snapshot.listeners.len(),
        cpus.len()
    ));
    notify::notify_ready();
    serve_signals(&control, writer.as_ref());
    notify::notify_stopping();
    let code = stop(&control, handles, 0);
    if let Some(w) = writer {
        w.shutdown();
    }
    code
}

/// Batches (64 KiB of rendered lines each) per shard queue between the shards and the
/// access-log writer: 1 MiB, about 50 ms of one shard's lines at 70k requests/s, as the
/// 4,096 records queued before shards rendered.
const LOG_QUEUE: usize = 16;

fn register_writer_stats(control: &Control, writer: &AccessLogWriter) {
    let c = writer.counters();
    control
        .stats
        .add_global_counter(STAT_WRITTEN, move || c.written.load(Ordering::Relaxed));
    let c = writer.counters();
    control
        .stats
        .add_global_counter(STAT_WRITE_FAILED, move || {
            c.write_failed.load(Ordering::Relaxed)
        });
    let c = writer.counters();
    control
        .stats
        .add_global_counter(STAT_REOPEN_FAILED, move || {
            c.reopen_failed.load(Ordering::Relaxed)
        });
}

/// Blocks on signals until SIGTERM/SIGINT.
fn serve_signals(control: &Arc<Control>, writer: Option<&AccessLogWriter>) {
    let mut signals = match Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return;
        }
    };
    for signal in signals.forever() {
        match signal {
            SIGHUP => {
                notify::notify_reloading();
                let _ = control.reload();
                notify::notify_ready();
            }
            SIGUSR1 => match writer {
                Some(w) => {
                    tracing::info!("SIGUSR1: reopening the access log");
                    w.request_reopen();
                }
                None => tracing::info!("SIGUSR1: no access log to reopen (accessLog.path is \"\")"),
            },
            _ => {
                tracing::info!(signal, "draining and exiting");
                return;
            }
        }
    }
}

fn stop(control: &Control, handles: Vec<glommio::ExecutorJoinHandle<()>>, code: u8) -> u8 {
    control.draining.store(true, Ordering::Relaxed);
    control.exiting.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    tracing::info!(code, "stopped");
    code
}

/// The CPUs the shards run on: `--cpus` beats the file; `--shards` takes the first N. Every
/// CPU must be in the process's affinity mask (taskset, cgroups, Kubernetes' CPU manager).
pub fn plan_cpus(
    config: &Config,
    shards: Option<usize>,
    cpus: Option<&[usize]>,
) -> Result<Vec<usize>, String> {
    let mask: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if mask.is_empty() {
        return Err("cannot read the process's CPU affinity mask".into());
    }
    let chosen: Vec<usize> = match cpus {
        Some(c) => c.to_vec(),
        None if !config.gateway.cpus.is_empty() => config.gateway.cpus.clone(),
        None => mask.clone(),
    };
    if let Some(cpu) = chosen.iter().find(|c| !mask.contains(c)) {
        return Err(format!(
            "CPU {cpu} is outside this process's affinity mask {mask:?}"
        ));
    }
    let shards = shards
        .or((config.gateway.shards > 0).then_some(config.gateway.shards))
        .unwrap_or(chosen.len());
    if shards == 0 {
        return Err("shards must be at least 1".into());
    }
    if shards > chosen.len() {
        return Err(format!(
            "more shards ({shards}) than CPUs ({})",
            chosen.len()
        ));
    }
    Ok(chosen[..shards].to_vec())
}

/// What this configuration needs from the system (see `limits`).
pub fn needs(config: &Config, cpus: &[usize]) -> Needs {
    let listeners: std::collections::BTreeSet<u16> = compile::selected_gateways(config)
        .flat_map(|g| g.servers.iter().map(|s| s.port.number))
        .collect();
    let passthrough = compile::selected_gateways(config)
        .flat_map(|g| g.servers.iter())
        .any(|s| {
            matches!(
                s.port.protocol,
                Protocol::Tls | Protocol::Https | Protocol::Tcp
            )
        });
    Needs::compute(Demand {
        shards: cpus.len(),
        cpus: cpus.to_vec(),
        io_memory_per_shard: IO_MEMORY as u64,
        max_connections: config.gateway.limits.max_connections,
        listeners: listeners.len(),
        // A spliced connection also holds two dup'ed sockets and a pipe per direction.
        fds_per_connection: if passthrough {
            SOCKETS_PER_CONNECTION + 6
        } else {
            SOCKETS_PER_CONNECTION
        },
    })
}
