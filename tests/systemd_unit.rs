//! tuning/egressd.service is a valid, hardened unit that still lets glommio run:
//! `systemd-analyze verify` passes (on a copy whose ExecStart= is the binary cargo built,
//! since verify insists the binary exists), the system-call filter keeps io_uring, the
//! hardening score stays low, and tuning/install.sh installs into a staging root.
//!
//! systemd need not be running (it usually is not PID 1 in a build container);
//! systemd-analyze must be installed: `apt-get install -y systemd`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = include_str!("../tuning/egressd.service");
const BIN: &str = "/usr/local/bin/egressd";

fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn systemd_analyze() -> Command {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "systemd-analyze is missing: apt-get install -y systemd"
    );
    Command::new("systemd-analyze")
}

/// The unit, with ExecStart= aimed at the binary this build produced.
fn unit_copy(dir: &Path) -> PathBuf {
    let path = dir.join("egressd.service");
    std::fs::write(&path, UNIT.replace(BIN, env!("CARGO_BIN_EXE_egressd"))).unwrap();
    path
}

/// Values of `key=` lines in the [Service] section, in order.
fn values(key: &str) -> Vec<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn one(key: &str) -> &'static str {
    let v = values(key);
    assert_eq!(v.len(), 1, "{key}= must appear exactly once: {v:?}");
    v[0]
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let out = systemd_analyze()
        .arg("verify")
        .arg(unit_copy(dir.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "verify failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn syscall_filter_keeps_io_uring_and_never_denies_it() {
    let filters = values("SystemCallFilter");
    let allow: Vec<&str> = filters
        .iter()
        .filter(|f| !f.starts_with('~'))
        .flat_map(|f| f.split_whitespace())
        .collect();
    for needed in [
        "@system-service",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ] {
        assert!(allow.contains(&needed), "{needed} not allowed: {filters:?}");
    }
    // A deny list must not take back io_uring, its group, or the pinning/limit calls
    // egressd makes (sched_setaffinity, setrlimit live in @resources).
    for deny in filters.iter().filter_map(|f| f.strip_prefix('~')) {
        for name in deny.split_whitespace() {
            assert!(
                !name.starts_with("io_uring")
                    && !["@aio", "@resources", "@system-service"].contains(&name),
                "deny list removes {name}"
            );
        }
    }
    assert_eq!(one("MemoryDenyWriteExecute"), "yes");
    assert_eq!(one("SystemCallArchitectures"), "native");
}

#[test]
fn service_contract_matches_egressd() {
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("User"), "egressd");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(one("ExecStart").starts_with(&format!("{BIN} run -c /etc/egressd/egressd.yaml")));
    // Stop timeout must cover the default drain (5 s) plus the log flush.
    let stop: u64 = one("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(
        stop > 5,
        "TimeoutStopSec={stop}s does not cover timeouts.drain=5s"
    );
    // The watchdog must leave room for the heartbeat: shards beat every WatchdogSec/4.
    let wd: u64 = one("WatchdogSec").trim_end_matches('s').parse().unwrap();
    assert!(wd >= 4);
    // Restarting cannot fix a bad config (1) or low limits (4).
    assert_eq!(one("RestartPreventExitStatus"), "1 4");
    let families: Vec<&str> = one("RestrictAddressFamilies").split_whitespace().collect();
    assert_eq!(families, ["AF_INET", "AF_INET6", "AF_UNIX"]);
    // 2 shards x (3 x 1 MiB + 64 KiB) fit many times over; the doc comment gives the formula.
    assert_eq!(one("LimitMEMLOCK"), "512M");
    let nofile: u64 = one("LimitNOFILE").parse().unwrap();
    assert!(
        nofile >= 2 * 100_000 + 1000,
        "LimitNOFILE={nofile} below the default maxConnections need"
    );
}

#[test]
fn hardening_exposure_stays_low() {
    let dir = tempfile::tempdir().unwrap();
    let out = systemd_analyze()
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_copy(dir.path()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for egressd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure score in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // 0 = fully locked down, 10 = unprotected; systemd calls < 2.0 "OK". What remains is
    // inherent to a gateway: Internet sockets, host network, a low-port capability.
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

#[test]
fn install_sh_stages_binary_config_and_unit() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(top().join("tuning/install.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_egressd")])
        .arg("--config")
        .arg(top().join("tests/fixtures/1-http-plain.yaml"))
        .arg("--destdir")
        .arg(root.path())
        .arg("--sysctl")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &str| {
        std::fs::metadata(root.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/local/bin/egressd"), 0o755);
    assert_eq!(mode("etc/egressd"), 0o750);
    assert_eq!(mode("etc/egressd/egressd.yaml"), 0o640);
    assert_eq!(mode("etc/systemd/system/egressd.service"), 0o644);
    assert_eq!(mode("etc/sysctl.d/90-egressd.conf"), 0o644);
    let installed =
        std::fs::read_to_string(root.path().join("etc/systemd/system/egressd.service")).unwrap();
    assert_eq!(installed, UNIT);

    // A second run keeps the operator's configuration.
    let fixture = std::fs::read_to_string(top().join("tests/fixtures/1-http-plain.yaml")).unwrap();
    let edited = format!("# edited by the operator\n{fixture}");
    std::fs::write(root.path().join("etc/egressd/egressd.yaml"), &edited).unwrap();
    let again = Command::new(top().join("tuning/install.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_egressd")])
        .arg("--config")
        .arg(top().join("tests/fixtures/1-http-plain.yaml"))
        .arg("--destdir")
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let kept = std::fs::read_to_string(root.path().join("etc/egressd/egressd.yaml")).unwrap();
    assert_eq!(kept, edited);
}
