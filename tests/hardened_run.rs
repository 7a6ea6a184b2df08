//! Shards run under the unit's hardening, as far as a machine without systemd as PID 1
//! allows: the unit's user (a test user), only CAP_NET_BIND_SERVICE, no_new_privs, and the
//! unit's LimitMEMLOCK/LimitNOFILE (setpriv + prlimit). Inside, two glommio shards register
//! their io_memory (proving LimitMEMLOCK suffices for a non-root user), accept on loopback,
//! heartbeat, and the watchdog pings a fake NOTIFY_SOCKET. strace records every system
//! call made, and each must pass the unit's SystemCallFilter= as systemd expands it.
//!
//! Needs root (to switch user); not root: skipped with a printed reason. Missing tools or
//! capabilities: fails loudly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use egressd::runtime::limits::{ensure, Demand, Needs};
use egressd::runtime::notify::Notifier;
use egressd::runtime::watchdog::{heartbeat_task, Heartbeat, Watchdog};
use egressd::sys::limits::Resource;

const UNIT: &str = include_str!("../tuning/egressd.service");
const TEST_USER: &str = "egressd-test";
const HELPER_ENV: &str = "EGD_HARDENED_HELPER_DIR";

fn unit_value(key: &str) -> Vec<String> {
    UNIT.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

fn bytes(v: &str) -> u64 {
    let (n, mul) = match v.chars().last() {
        Some('K') => (&v[..v.len() - 1], 1 << 10),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    n.parse::<u64>().unwrap() * mul
}

fn status_field(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_user(name: &str) -> (String, String) {
    if !Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
    {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let id = |flag: &str| {
        String::from_utf8(
            Command::new("id")
                .arg(flag)
                .arg(name)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    };
    (id("-u"), id("-g"))
}

/// systemd's groups (`systemd-analyze syscall-filter`), each expanded recursively.
fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .expect("systemd-analyze (apt-get install -y systemd)");
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t = line.trim();
        if line.starts_with('@') {
            current = Some(t.to_string());
            groups.insert(t.to_string(), Vec::new());
        } else if t.is_empty() {
            current = None;
        } else if !t.starts_with('#') {
            if let Some(g) = &current {
                groups.get_mut(g).unwrap().push(t.to_string());
            }
        }
    }
    groups
}

fn expand(name: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
    match groups.get(name) {
        Some(members) => members.iter().for_each(|m| expand(m, groups, out)),
        None => {
            assert!(!name.starts_with('@'), "unknown syscall group {name}");
            out.insert(name.to_string());
        }
    }
}

/// What the unit's SystemCallFilter= lines allow, in systemd's order: allow lists add,
/// `~` lists take away.
fn unit_allowed() -> BTreeSet<String> {
    let groups = syscall_groups();
    let mut allowed = BTreeSet::new();
    for f in unit_value("SystemCallFilter") {
        let (deny, list) = match f.strip_prefix('~') {
            Some(rest) => (true, rest.to_string()),
            None => (false, f),
        };
        let mut set = BTreeSet::new();
        list.split_whitespace()
            .for_each(|n| expand(n, &groups, &mut set));
        if deny {
            allowed.retain(|s| !set.contains(s));
        } else {
            allowed.extend(set);
        }
    }
    allowed
}

#[test]
fn shards_run_as_the_unit_would_run_them() {
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!("SKIPPED shards_run_as_the_unit_would_run_them: needs root to switch to the service user");
        return;
    }
    for tool in ["setpriv", "prlimit", "strace", "systemd-analyze", "useradd"] {
        assert!(
            have(tool),
            "{tool} is missing (apt-get install -y util-linux strace systemd passwd)"
        );
    }
    let (uid, gid) = ensure_user(TEST_USER);
    // The unit's limits, capped by this machine's hard limits when raising them is not
    // allowed here (a container without CAP_SYS_RESOURCE): the helper needs far less.
    let hard = |r| {
        egressd::sys::limits::get(r)
            .unwrap()
            .hard
            .unwrap_or(u64::MAX)
    };
    let unit_memlock = bytes(&unit_value("LimitMEMLOCK")[0]);
    let unit_nofile: u64 = unit_value("LimitNOFILE")[0].parse().unwrap();
    let memlock = unit_memlock.min(hard(Resource::Memlock));
    let nofile = unit_nofile.min(hard(Resource::Nofile));
    if (memlock, nofile) != (unit_memlock, unit_nofile) {
        eprintln!("note: running with LimitMEMLOCK={memlock} LimitNOFILE={nofile} (this machine's hard limits) instead of the unit's {unit_memlock} / {unit_nofile}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let trace = dir.path().join("strace.txt");

    let out = Command::new("prlimit")
        .arg(format!("--memlock={memlock}:{memlock}"))
        .arg(format!("--nofile={nofile}:{nofile}"))
        .args([
            "--",
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .args([
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
        ])
        .args(["--bounding-set=-all,+net_bind_service", "--no-new-privs"])
        .args(["--", "strace", "-f", "-qq", "-c", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "helper_hardened_shards",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "helper under hardening failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let summary = std::fs::read_to_string(&trace).unwrap();
    let used: BTreeSet<String> = summary
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<f64>().is_ok())
        })
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .filter(|s| s != "total")
        .collect();
    assert!(
        used.contains("io_uring_setup") && used.contains("io_uring_enter"),
        "no io_uring in trace:\n{summary}"
    );
    let allowed = unit_allowed();
    let refused: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        refused.is_empty(),
        "SystemCallFilter= would refuse {refused:?} (used: {used:?})"
    );
}

#[test]
#[ignore = "helper: run by shards_run_as_the_unit_would_run_them under setpriv and strace"]
fn helper_hardened_shards() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        eprintln!("helper only: run by shards_run_as_the_unit_would_run_them");
        return;
    };
    let dir = Path::new(&dir);
    assert_ne!(
        status_field("Uid:").split_whitespace().next(),
        Some("0"),
        "still root"
    );
    assert_eq!(status_field("NoNewPrivs:"), "1");
    assert_eq!(
        u64::from_str_radix(&status_field("CapEff:"), 16).unwrap(),
        1 << 10,
        "only CAP_NET_BIND_SERVICE"
    );

    let shards = 2;
    let io_memory = 1 << 20;
    let needs = Needs::compute(Demand {
        shards,
        cpus: Vec::new(),
        io_memory_per_shard: io_memory,
        max_connections: 1000,
        fds_per_connection: egressd::runtime::limits::SOCKETS_PER_CONNECTION,
        listeners: 1,
    });
    let report = ensure(&needs).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");

    let notify_path = dir.join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let hb = Heartbeat::new(shards);
    let watchdog = Watchdog::spawn(
        hb.clone(),
        Duration::from_millis(400),
        Notifier::to_path(&notify_path).unwrap(),
    )
    .unwrap();

    let (ports_tx, ports_rx) = std::sync::mpsc::channel();
    let executors: Vec<_> = (0..shards)
        .map(|id| {
            let (hb, ports_tx) = (hb.clone(), ports_tx.clone());
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(io_memory as usize)
                .spawn(move || async move {
                    glommio::spawn_local(heartbeat_task(hb, id, Duration::from_millis(100)))
                        .detach();
                    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    ports_tx
                        .send(listener.local_addr().unwrap().port())
                        .unwrap();
                    let mut conn = listener.accept().await.unwrap();
                    let mut buf = [0u8; 64];
                    let n = futures_lite::AsyncReadExt::read(&mut conn, &mut buf)
                        .await
                        .unwrap();
                    futures_lite::AsyncWriteExt::write_all(&mut conn, &buf[..n])
                        .await
                        .unwrap();
                    // Keep beating until the main thread saw a ping.
                    glommio::timer::sleep(Duration::from_secs(1)).await;
                })
                .unwrap()
        })
        .collect();

    for _ in 0..shards {
        let port = ports_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"ping\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert_eq!(line, "ping\n");
    }
    // Registration succeeded for every ring of every shard (a failed one only warns):
    // VmPin counts the pinned pages of the whole process.
    let pinned_kb: u64 = status_field("VmPin:")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        pinned_kb * 1024 >= 3 * io_memory * shards as u64,
        "VmPin {pinned_kb} kB: registration failed"
    );
    assert!(
        pinned_kb * 1024 <= needs.memlock_bytes,
        "VmPin {pinned_kb} kB above the estimate {}",
        needs.memlock_bytes
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 256];
    loop {
        assert!(
            Instant::now() < deadline,
            "no WATCHDOG=1 from healthy shards"
        );
        let n = manager.recv(&mut buf).unwrap();
        if buf[..n].starts_with(b"WATCHDOG=1") {
            break;
        }
    }
    watchdog.stop();
    for ex in executors {
        ex.join().unwrap();
    }
}
