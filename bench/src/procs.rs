//! Processes the bench starts (origin, proxies, wrk): spawn pinned to a CPU, wait until they
//! accept connections, read their CPU time from /proc, and kill them by PID.
//!
//! Owns: the `Proc` guard, whose Drop kills the process and its descendants, so every exit
//! path (error, panic unwind, Ctrl-C turned into an error) leaves nothing running.
//! Must not: write configs or decide what to run; see `targets`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::sys;

pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args` under `taskset -c <cpu>` (taskset execs, so the PID is the
    /// program's), stdout and stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn_pinned(
        name: &str,
        cpu: usize,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Proc, BenchError> {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log)
            .map_err(|e| BenchError::io(format!("create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| BenchError::io("dup log file", e))?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                what: format!("taskset {}", program.display()),
                source,
            })?;
        tracing::debug!(name, pid = child.id(), cpu, "spawned");
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `addr` accepts a TCP connection, the process exits, or `timeout` passes.
    pub fn wait_listening(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(BenchError::NotReady {
                    what: self.name.clone(),
                    reason: format!("exited with {status}: {}", self.log_summary(6)),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if stop.load(Ordering::Relaxed) {
                return Err(BenchError::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(BenchError::NotReady {
                    what: self.name.clone(),
                    reason: format!(
                        "not accepting on {addr} after {timeout:?}: {}",
                        self.log_summary(6)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// utime + stime of the process (all its threads) and of its live children.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.pid();
        let mut ticks = proc_stat(pid).map_or(0, |s| s.cpu_ticks);
        ticks += children_of(pid)
            .iter()
            .filter_map(|c| proc_stat(*c))
            .map(|s| s.cpu_ticks)
            .sum::<u64>();
        ticks_to_duration(ticks)
    }

    /// The last `lines` lines of the process's output, joined with " | ".
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// A panic's message if the output holds one (the tail would be its backtrace), else
    /// the last `lines` lines.
    pub fn log_summary(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let mut it = text.lines().skip_while(|l| !l.contains("panicked at"));
        match it.next() {
            Some(head) => {
                let msg: Vec<&str> = it.take_while(|l| !l.trim().is_empty()).take(3).collect();
                format!("{} {}", head.trim(), msg.join(" "))
                    .trim()
                    .to_string()
            }
            None => self.log_tail(lines),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        for c in children_of(pid) {
            let _ = sys::kill_pid(c);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::debug!(name = %self.name, pid, "stopped");
    }
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / sys::clock_ticks_per_sec() as f64)
}

/// The fields of /proc/PID/stat the bench needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses one /proc/PID/stat line. `comm` may contain spaces and parentheses, so the fixed
/// fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// Every process visible in /proc.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_stat)
        .collect()
}

fn children_of(pid: u32) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
        // The cut may fall inside a UTF-8 sequence: read bytes, decode lossily.
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let text = read().unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm_parses() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 3 0 100 0 0";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_ticks, 42);
    }

    #[test]
    fn own_process_is_visible_with_its_parent() {
        let me = proc_stat(std::process::id()).expect("own stat");
        assert_eq!(me.pid, std::process::id());
        assert!(me.ppid > 0);
    }

    #[test]
    fn spawned_child_is_killed_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Proc::spawn_pinned("sleeper", 0, Path::new("sleep"), &["30".into()], dir.path())
            .expect("spawn");
        let pid = p.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(p);
        // Reaped by Drop's wait, so the PID is gone (or reused by an unrelated process).
        let gone = proc_stat(pid).is_none_or(|s| s.comm != "sleep");
        assert!(gone, "sleep {pid} still running");
    }
}
