//! Machine notes for a result file: CPU model, cores, kernel, memory, load average, and
//! which processes used CPU during the run (a delta of /proc/*/stat between two snapshots),
//! because on a shared VM the neighbours are part of the result.
//!
//! Owns: reading /proc for those notes. Must not: pin, spawn or judge results.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::procs::{all_processes, ticks_to_duration};

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs in /proc/cpuinfo.
    pub cores: usize,
    /// CPUs this process may run on (affinity mask, cgroup limits).
    pub available_parallelism: usize,
    pub kernel: String,
    pub mem_total_kb: u64,
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Top processes by CPU used during the run (seconds), ours included and marked.
    pub top_cpu_during_run: Vec<ProcessCpu>,
    pub wall_s: f64,
}

impl Machine {
    /// The one-line machine note the short scenario reports end with.
    pub fn summary_line(&self) -> String {
        format!(
            "- CPU: {} × {}, kernel {}; load average {} at start, {} at end\n",
            self.cpu_model, self.cores, self.kernel, self.loadavg_start, self.loadavg_end
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessCpu {
    pub pid: u32,
    pub comm: String,
    pub cpu_s: f64,
    /// Share of one CPU over the run's wall time.
    pub cpu_pct: f64,
}

/// Taken at the start of a run; `finish` turns it into machine notes.
pub struct Snapshot {
    at: Instant,
    available_parallelism: usize,
    loadavg: String,
    ticks: HashMap<u32, (String, u64)>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Snapshot {
    pub fn take() -> Self {
        let ticks = all_processes()
            .into_iter()
            .map(|p| (p.pid, (p.comm, p.cpu_ticks)))
            .collect();
        Snapshot {
            at: Instant::now(),
            available_parallelism: std::thread::available_parallelism().map_or(0, |n| n.get()),
            loadavg: loadavg(),
            ticks,
        }
    }

    pub fn finish(self, top: usize) -> Machine {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let mut used: Vec<ProcessCpu> = all_processes()
            .into_iter()
            .filter_map(|p| {
                // A process that started during the run counts from zero.
                let before = self
                    .ticks
                    .get(&p.pid)
                    .filter(|(c, _)| *c == p.comm)
                    .map_or(0, |(_, t)| *t);
                let delta = p.cpu_ticks.checked_sub(before)?;
                let cpu_s = ticks_to_duration(delta).as_secs_f64();
                (cpu_s > 0.0).then(|| ProcessCpu {
                    pid: p.pid,
                    comm: p.comm,
                    cpu_s: round3(cpu_s),
                    cpu_pct: round3(100.0 * cpu_s / wall),
                })
            })
            .collect();
        used.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
        used.truncate(top);
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let mem_total_kb = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Machine {
            cpu_model,
            cores,
            available_parallelism: self.available_parallelism,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            mem_total_kb,
            loadavg_start: self.loadavg,
            loadavg_end: loadavg(),
            top_cpu_during_run: used,
            wall_s: round3(wall),
        }
    }
}

/// One CPU's counters from /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub busy: u64,
    pub steal: u64,
    pub total: u64,
}

impl CpuTicks {
    pub fn read(cpu: usize) -> Option<CpuTicks> {
        let stat = read("/proc/stat");
        let label = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(label.as_str()))?;
        parse_cpu_line(line)
    }

    /// (busy %, steal %) of the time between `self` and `later`.
    pub fn busy_steal_pct(self, later: CpuTicks) -> (f64, f64) {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let pct = |a: u64, b: u64| round3(100.0 * b.saturating_sub(a) as f64 / total);
        (pct(self.busy, later.busy), pct(self.steal, later.steal))
    }
}

/// `cpuN user nice system idle iowait irq softirq steal ...`: busy excludes idle and iowait.
fn parse_cpu_line(line: &str) -> Option<CpuTicks> {
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 8 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some(CpuTicks {
        busy: total - v[3] - v[4],
        steal: v[7],
        total,
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line_splits_busy_idle_and_steal() {
        let t = parse_cpu_line("cpu1 10 1 5 80 2 1 1 3 0 0").expect("parses");
        assert_eq!(
            t,
            CpuTicks {
                busy: 21,
                steal: 3,
                total: 103
            }
        );
        let later = CpuTicks {
            busy: 71,
            steal: 13,
            total: 203,
        };
        assert_eq!(t.busy_steal_pct(later), (50.0, 10.0));
        assert!(CpuTicks::read(0).is_some());
    }

    #[test]
    fn notes_name_this_machine_and_count_our_own_cpu() {
        let snap = Snapshot::take();
        // Burn CPU until the kernel has charged this process at least two more ticks
        // (bounded: at most 10 s of wall time on a starved machine).
        let me = || crate::procs::proc_stat(std::process::id()).map_or(0, |s| s.cpu_ticks);
        let start = me();
        let until = Instant::now() + std::time::Duration::from_secs(10);
        let mut x = 0u64;
        while me() < start + 2 && Instant::now() < until {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let m = snap.finish(1000);
        assert!(m.cores >= 1 && !m.kernel.is_empty() && m.mem_total_kb > 0);
        assert_eq!(m.loadavg_start.split_whitespace().count(), 3);
        assert!(m
            .top_cpu_during_run
            .iter()
            .any(|p| p.pid == std::process::id()));
    }
}
