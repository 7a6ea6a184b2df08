//! System limits: what a configuration needs from the machine (locked memory, file
//! descriptors, CPUs, an io_uring-capable kernel) and whether the machine has it.
//!
//! `Needs::compute` and `judge` are pure, so they are tested with made-up machines;
//! `Machine::probe` reads the real one (through `sys::limits`) and `check` raises soft
//! limits to the hard ones before judging, as a service manager or shell would let us.
//! This module must not start shards or read the configuration file: the caller passes
//! the numbers (`Demand`) and decides what to do with the `Report` (`run` exits 4 when it
//! does not fit, `check-system` prints it).

use std::fmt;

use crate::sys::limits::{self as sys, LimitValue, Resource};

/// Exit code of `run` and `check-system` when the machine's limits are too low.
pub const EXIT_LIMITS_TOO_LOW: i32 = 4;

/// glommio registers each shard's io_memory once in each of its three rings (main,
/// latency, poll), and the kernel charges every registration to RLIMIT_MEMLOCK separately
/// (measured: VmPin = 3 × io_memory per executor on 6.18; as a non-root user without the
/// room, registration fails and glommio silently falls back to unregistered buffers).
const REGISTRATIONS_PER_SHARD: u64 = 3;
/// glommio rounds io_memory up to a page and to at least 64 KiB.
const GLOMMIO_MIN_IO_MEMORY: u64 = 64 << 10;
/// Ring memory (SQ + CQ + SQE arrays) for three rings of depth 128: about 3 × 20 KiB.
/// Kernels before 5.12 charge it to RLIMIT_MEMLOCK (later ones to the memory cgroup);
/// counted always so one estimate holds for both.
const RING_BYTES_PER_SHARD: u64 = 64 << 10;
/// Descriptors per shard besides listeners: three rings, eventfds, timerfd, splice pipes
/// kept in reserve.
const FDS_PER_SHARD: u64 = 16;
/// Descriptors for the process as a whole: stdio, access log, admin server, control
/// thread's DNS sockets, config and certificate files being read.
const FDS_PROCESS: u64 = 64;
/// glommio 0.9's documented minimum kernel.
const MIN_KERNEL: (u32, u32) = (5, 8);
/// Bit of CAP_IPC_LOCK in the capability sets (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// What the configuration asks for; the caller fills it from the config and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub shards: usize,
    /// CPUs the shards will be pinned to (`--cpus`/`spec.cpus`); empty = the first
    /// `shards` CPUs of the affinity mask.
    pub cpus: Vec<usize>,
    /// glommio `io_memory` per shard, in bytes.
    pub io_memory_per_shard: u64,
    /// `limits.maxConnections`; 0 = unlimited (then nofile cannot be bounded).
    pub max_connections: u64,
    /// Listening ports (each shard binds one socket per port).
    pub listeners: usize,
    /// Descriptors one proxied connection holds: `SOCKETS_PER_CONNECTION` (downstream and
    /// upstream), plus 4 if passthrough keeps a splice pipe per direction per connection
    /// rather than per shard.
    pub fds_per_connection: u64,
}

/// A proxied connection's two sockets: downstream and upstream.
pub const SOCKETS_PER_CONNECTION: u64 = 2;

/// What the demand translates to, in the units the kernel limits use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub demand: Demand,
    pub memlock_bytes: u64,
    /// `None` when maxConnections is 0 (unlimited).
    pub nofile: Option<u64>,
}

impl Needs {
    pub fn compute(demand: Demand) -> Needs {
        let io = demand
            .io_memory_per_shard
            .max(GLOMMIO_MIN_IO_MEMORY)
            .next_multiple_of(4096);
        let shards = demand.shards as u64;
        let memlock_bytes = shards * (REGISTRATIONS_PER_SHARD * io + RING_BYTES_PER_SHARD);
        let nofile = (demand.max_connections > 0).then(|| {
            demand.fds_per_connection * demand.max_connections
                + shards * (demand.listeners as u64 + FDS_PER_SHARD)
                + FDS_PROCESS
        });
        Needs {
            demand,
            memlock_bytes,
            nofile,
        }
    }
}

/// What the machine offers, after any raise of soft limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub memlock: sys::Rlimit,
    pub nofile: sys::Rlimit,
    /// CAP_IPC_LOCK in the effective set makes RLIMIT_MEMLOCK irrelevant.
    pub cap_ipc_lock: bool,
    pub affinity: Vec<usize>,
    pub kernel: String,
    /// `kernel.io_uring_disabled` (6.6+): 0 allowed, 1 only for a group, 2 disabled.
    pub io_uring_disabled: u32,
}

impl Machine {
    pub fn probe() -> std::io::Result<Machine> {
        Ok(Machine {
            memlock: sys::get(Resource::Memlock)?,
            nofile: sys::get(Resource::Nofile)?,
            cap_ipc_lock: effective_cap(CAP_IPC_LOCK),
            affinity: sys::affinity_cpus()?,
            kernel: sys::kernel_release()?,
            io_uring_disabled: std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        })
    }
}

fn effective_cap(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Raises the soft limits that are below what `needs` asks for up to their hard limits
/// (as far as allowed without privilege). Failures are ignored: `judge` reports them.
pub fn raise_soft_limits(needs: &Needs) {
    let wanted = [
        (Resource::Memlock, Some(needs.memlock_bytes)),
        (Resource::Nofile, needs.nofile),
    ];
    for (res, need) in wanted {
        let Some(need) = need else { continue };
        let Ok(cur) = sys::get(res) else { continue };
        if cur.soft.is_some_and(|s| s < need) {
            // An unlimited hard nofile cannot be set as soft (EPERM above fs.nr_open):
            // ask for exactly what is needed then.
            let target = cur.hard.or(Some(need));
            if let Err(e) = sys::set_soft(res, target) {
                tracing::debug!(?res, error = %e, "could not raise soft limit");
            }
        }
    }
}

/// Raises soft limits, probes the machine and judges. An unreadable limit counts as zero.
pub fn check(needs: &Needs) -> Report {
    raise_soft_limits(needs);
    let machine = Machine::probe().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not read system limits");
        Machine {
            memlock: sys::Rlimit {
                soft: Some(0),
                hard: Some(0),
            },
            nofile: sys::Rlimit {
                soft: Some(0),
                hard: Some(0),
            },
            cap_ipc_lock: false,
            affinity: Vec::new(),
            kernel: String::from("unknown"),
            io_uring_disabled: 0,
        }
    });
    judge(needs, &machine)
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: &'static str,
    pub need: String,
    pub have: String,
    /// `None` = fits; `Some(advice)` = too low, and what to set.
    pub fix: Option<String>,
}

/// The verdict for every resource; `Display` prints one line per item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    pub fn fits(&self) -> bool {
        self.items.iter().all(|i| i.fix.is_none())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.items {
            write!(f, "{}: need {}, have {}: ", i.name, i.need, i.have)?;
            match &i.fix {
                None => writeln!(f, "ok")?,
                Some(fix) => writeln!(f, "TOO LOW ({fix})")?,
            }
        }
        Ok(())
    }
}

/// `run` refuses to start with this error (exit `EXIT_LIMITS_TOO_LOW`).
#[derive(Debug, thiserror::Error)]
#[error("system limits too low for {shards} shard(s) (the machine's or service manager's settings, not egressd's):\n{report}")]
pub struct LimitsTooLow {
    pub shards: usize,
    pub report: Report,
}

/// `check`, turned into an error when the machine does not fit.
pub fn ensure(needs: &Needs) -> Result<Report, LimitsTooLow> {
    let report = check(needs);
    if report.fits() {
        Ok(report)
    } else {
        Err(LimitsTooLow {
            shards: needs.demand.shards,
            report,
        })
    }
}

/// `egressd check-system`: raises soft limits, prints the report on stdout and returns the
/// exit code (0 fits, `EXIT_LIMITS_TOO_LOW` not).
pub fn check_system(needs: &Needs) -> i32 {
    let report = check(needs);
    print!("{report}");
    if report.fits() {
        0
    } else {
        EXIT_LIMITS_TOO_LOW
    }
}

/// Pure verdict of `needs` against `m`.
pub fn judge(needs: &Needs, m: &Machine) -> Report {
    let mut items = Vec::new();
    let mem_need = needs.memlock_bytes;
    let d = &needs.demand;
    items.push(Item {
        name: "memlock",
        need: format!(
            "{} ({} shard(s) x (3 x {} io_memory + {} rings))",
            bytes(mem_need),
            d.shards,
            bytes(d.io_memory_per_shard.max(GLOMMIO_MIN_IO_MEMORY)),
            bytes(RING_BYTES_PER_SHARD)
        ),
        have: if m.cap_ipc_lock {
            format!(
                "{} (CAP_IPC_LOCK: not enforced)",
                limit(m.memlock.soft, bytes)
            )
        } else {
            limit(m.memlock.soft, bytes)
        },
        fix: (!m.cap_ipc_lock && below(m.memlock.soft, mem_need)).then(|| {
            let mib = mem_need.div_ceil(1 << 20);
            format!(
                "set LimitMEMLOCK={mib}M in the unit / ulimit -l {}",
                mib * 1024
            )
        }),
    });
    items.push(match needs.nofile {
        Some(n) => Item {
            name: "nofile",
            need: format!(
                "{n} ({} x {} maxConnections + {} shard(s) x ({} listener(s) + {FDS_PER_SHARD}) + {FDS_PROCESS})",
                d.fds_per_connection, d.max_connections, d.shards, d.listeners
            ),
            have: limit(m.nofile.soft, |v| v.to_string()),
            fix: below(m.nofile.soft, n)
                .then(|| format!("set LimitNOFILE={n} in the unit / ulimit -n {n}")),
        },
        None => Item {
            name: "nofile",
            need: String::from("unbounded (maxConnections: 0)"),
            have: limit(m.nofile.soft, |v| v.to_string()),
            fix: None,
        },
    });
    items.push(cpu_item(d, &m.affinity));
    items.push(kernel_item(m));
    Report { items }
}

fn cpu_item(d: &Demand, affinity: &[usize]) -> Item {
    let outside: Vec<usize> = d
        .cpus
        .iter()
        .copied()
        .filter(|c| !affinity.contains(c))
        .collect();
    let enough = if d.cpus.is_empty() {
        d.shards <= affinity.len()
    } else {
        d.shards <= d.cpus.len()
    };
    let fix = if !outside.is_empty() {
        Some(format!(
            "CPUs {outside:?} are outside the affinity mask; pick --cpus from {affinity:?}"
        ))
    } else if !enough {
        Some(format!(
            "use --shards {} or fewer, or widen the affinity mask (taskset, CPUAffinity=)",
            affinity.len()
        ))
    } else {
        None
    };
    Item {
        name: "cpus",
        need: if d.cpus.is_empty() {
            format!("{} shard(s), one CPU each", d.shards)
        } else {
            format!("{} shard(s) on CPUs {:?}", d.shards, d.cpus)
        },
        have: format!("{} CPU(s) in affinity mask {:?}", affinity.len(), affinity),
        fix,
    }
}

fn kernel_item(m: &Machine) -> Item {
    let version = parse_release(&m.kernel);
    let old = version.is_none_or(|v| v < MIN_KERNEL);
    let fix = if old {
        Some(format!(
            "glommio needs Linux {}.{} or newer",
            MIN_KERNEL.0, MIN_KERNEL.1
        ))
    } else if m.io_uring_disabled != 0 {
        Some(String::from("set sysctl kernel.io_uring_disabled=0"))
    } else {
        None
    };
    Item {
        name: "kernel",
        need: format!("Linux >= {}.{} with io_uring", MIN_KERNEL.0, MIN_KERNEL.1),
        have: format!(
            "{} (kernel.io_uring_disabled={})",
            m.kernel, m.io_uring_disabled
        ),
        fix,
    }
}

/// `6.1.0-18-amd64` → (6, 1).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn below(have: LimitValue, need: u64) -> bool {
    have.is_some_and(|h| h < need)
}

fn limit(v: LimitValue, show: impl Fn(u64) -> String) -> String {
    v.map_or_else(|| String::from("unlimited"), show)
}

fn bytes(v: u64) -> String {
    if v >= 1 << 20 && v % (1 << 20) == 0 {
        format!("{} MiB", v >> 20)
    } else if v >= 1 << 20 {
        format!("{:.1} MiB", v as f64 / (1 << 20) as f64)
    } else {
        format!("{} KiB", v.div_ceil(1024))
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
