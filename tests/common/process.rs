//! What memory and descriptor tests need to know about processes: a process's resident
//! memory, and room for many sockets in the test process itself.

/// VmRSS of a process in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Raises this test process's own soft RLIMIT_NOFILE to its hard limit (through
/// prlimit(1), keeping the tests free of unsafe). Returns the new soft limit.
pub fn raise_own_nofile() -> Option<u64> {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid,
            "--nofile",
            "--raw",
            "--noheadings",
            "-o",
            "HARD",
        ])
        .output()
        .ok()?;
    let hard: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let set = format!("--nofile={hard}:{hard}");
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &set])
        .status()
        .ok()?
        .success();
    ok.then_some(hard)
}
