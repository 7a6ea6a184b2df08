//! deploy/kubernetes: the manifests validate offline against the Kubernetes schemas
//! (deploy/kubernetes/validate.sh: kubernetes-validate, strict, plus cross-references), a
//! broken copy is refused, and the seccomp profile allows every system call that egressd,
//! `egressd check-system` and the pod's preStop command make (traced with strace over a
//! run with HTTP traffic, a TLS passthrough, a DNS lookup, reloads, drain and shutdown).
//!
//! Needs python3 (validate.sh installs kubernetes-validate from PyPI when missing), strace,
//! curl and openssl; a missing tool fails loudly. Loopback only.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;

const KDIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
const DEPLOYMENT: &str = include_str!("../deploy/kubernetes/deployment.yaml");
const PROFILE: &str = include_str!("../deploy/kubernetes/seccomp/egressd.json");

fn validate(dir: &Path) -> (bool, String) {
    let out = Command::new("bash")
        .arg(Path::new(KDIR).join("validate.sh"))
        .arg(dir)
        .args(["--egressd", env!("CARGO_BIN_EXE_egressd")])
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn shipped_manifests_validate_against_the_kubernetes_schemas() {
    let (ok, text) = validate(Path::new(KDIR));
    println!("{text}");
    assert!(ok, "deploy/kubernetes does not validate:\n{text}");
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
    ] {
        assert!(text.contains(&format!(" {kind}/")), "no {kind} validated");
    }
    assert!(text.contains("ok ConfigMap egressd.yaml: egressd validate"));
}

/// Each edit breaks one thing a schema or a cross-check must catch.
#[test]
fn broken_copies_are_refused() {
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "deployment.yaml",
            "replicas: 3",
            "replicas: \"three\"",
            "spec.replicas",
        ),
        (
            "deployment.yaml",
            "runAsNonRoot: true\n        runAsUser",
            "runAsNonRot: true\n        runAsUser",
            "runAsNonRot",
        ),
        (
            "deployment.yaml",
            "terminationGracePeriodSeconds: 25",
            "terminationGracePeriodSeconds: 8",
            "terminationGracePeriodSeconds",
        ),
        (
            "service.yaml",
            "targetPort: gw-http",
            "targetPort: 80",
            "portMap",
        ),
        (
            "seccomp/egressd.json",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_ALLOW",
            "defaultAction",
        ),
    ];
    for (file, from, to, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(Path::new(KDIR), dir.path());
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} no longer contains {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = validate(dir.path());
        assert!(!ok, "{file} with {to:?} passed:\n{out}");
        assert!(
            out.contains(expect),
            "{file} with {to:?}: no mention of {expect}:\n{out}"
        );
    }
}

fn allowed_by_profile() -> BTreeSet<String> {
    let p: serde_json::Value = serde_json::from_str(PROFILE).expect("seccomp profile is JSON");
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    let mut allowed = BTreeSet::new();
    for rule in p["syscalls"].as_array().unwrap() {
        assert_eq!(rule["action"], "SCMP_ACT_ALLOW", "only allow rules: {rule}");
        for n in rule["names"].as_array().unwrap() {
            assert!(
                allowed.insert(n.as_str().unwrap().to_string()),
                "{n} listed twice"
            );
        }
    }
    allowed
}

#[test]
fn seccomp_profile_allows_io_uring_and_no_privileged_calls() {
    let allowed = allowed_by_profile();
    for need in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(allowed.contains(need), "{need}");
    }
    for never in [
        "mount",
        "umount2",
        "ptrace",
        "bpf",
        "kexec_load",
        "init_module",
        "setuid",
        "setns",
        "unshare",
        "pivot_root",
        "chroot",
        "reboot",
        "swapon",
        "process_vm_writev",
    ] {
        assert!(!allowed.contains(never), "{never} must stay denied");
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// System calls in an `strace -c` summary.
fn traced(summary: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(summary)
        .unwrap()
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<f64>().is_ok())
        })
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .filter(|s| s != "total")
        .collect()
}

fn strace(out: &Path) -> Command {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-c", "-o"]).arg(out).arg("--");
    c
}

fn wait_for(path: &Path, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn seccomp_profile_allows_every_syscall_egressd_makes() {
    for tool in ["strace", "curl", "openssl", "sh"] {
        assert!(
            have(tool),
            "{tool} is missing (apt-get install -y strace curl openssl)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::fixed("o", "hello");
    let tls_origin = Origin::fixed("t", "not tls");
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap(); // receives the lookups, never answers
    let (http, tls, admin) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let resources = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: demo}}\nspec:\n  hosts: [demo.local]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: dns}}\nspec:\n  hosts: [dns.example]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: DNS\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: tls}}\nspec:\n  hosts: [tls.local]\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tls: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - {{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [demo.local, dns.example]}}\n  - {{port: {{number: 443, name: tls, protocol: TLS}}, hosts: [tls.local], tls: {{mode: PASSTHROUGH}}}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: demo}}\nspec:\n  hosts: [demo.local]\n  gateways: [gw]\n  http: [{{route: [{{destination: {{host: demo.local, port: {{number: 80}}}}}}]}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: dns}}\nspec:\n  hosts: [dns.example]\n  gateways: [gw]\n  http: [{{route: [{{destination: {{host: dns.example, port: {{number: 80}}}}}}]}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: tls}}\nspec:\n  hosts: [tls.local]\n  gateways: [gw]\n  tls:\n  - match: [{{port: 443, sniHosts: [tls.local]}}]\n    route: [{{destination: {{host: tls.local, port: {{number: 443}}}}}}]\n",
        origin.port(),
        tls_origin.port()
    );
    let extra = format!(
        "  resolver: {{nameservers: [\"127.0.0.1:{}\"]}}\n  timeouts: {{drain: 1s, connect: 2s}}\n",
        dns.local_addr().unwrap().port()
    );
    let access_log = dir.path().join("access.log");
    let config = dir.path().join("egressd.yaml");
    let body =
        common::bootstrap(&[(80, http), (443, tls)], admin, &access_log, &extra) + &resources;
    std::fs::write(&config, &body).unwrap();

    // check-system, as an operator runs it with `kubectl exec` (same seccomp profile).
    let check_trace = dir.path().join("check.strace");
    let out = strace(&check_trace)
        .arg(env!("CARGO_BIN_EXE_egressd"))
        .args(["check-system", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.code().is_some(), "check-system died: {out:?}");

    let run_trace = dir.path().join("run.strace");
    let stderr = dir.path().join("stderr.log");
    let mut child = strace(&run_trace)
        .arg(env!("CARGO_BIN_EXE_egressd"))
        .args(["run", "--shards", "2", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            // SIGKILL of strace would leave the traced egressd running: kill it first.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &self.0.id().to_string()])
                .status();
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    wait_for(&stderr, "admin listening", Duration::from_secs(30));
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    // The admin server starts before the shards bind: traffic waits until every one listens.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !common::admin_ready(admin_addr) {
        assert!(
            std::time::Instant::now() < deadline,
            "egressd never became ready under strace"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    for _ in 0..3 {
        assert_eq!(common::get(http, "demo.local", "/").status, 200);
    }
    let _ = common::get(http, "dns.example", "/"); // 503 until resolved: the lookup is what counts
    let tls_out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{tls}"),
            "-servername",
            "tls.local",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!tls_out.stdout.is_empty() || !tls_out.stderr.is_empty());
    for path in [
        "/ready",
        "/healthz",
        "/stats",
        "/stats/prometheus",
        "/server_info",
        "/config_dump",
        "/clusters",
    ] {
        assert_eq!(
            common::admin_request(admin_addr, "GET", path).0,
            200,
            "{path}"
        );
    }
    assert_eq!(common::admin_request(admin_addr, "POST", "/reload").0, 200);
    let pid = guard.0.id();
    // strace's PID is the parent; egressd is its child.
    let egressd_pid = String::from_utf8(
        Command::new("pgrep")
            .args(["-P", &pid.to_string()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(!egressd_pid.is_empty(), "egressd under strace not found");
    Command::new("kill")
        .args(["-HUP", &egressd_pid])
        .status()
        .unwrap();
    Command::new("kill")
        .args(["-USR1", &egressd_pid])
        .status()
        .unwrap();
    // The SIGHUP reload stamps the file it reads: change it only after that.
    wait_for(&stderr, "generation=3", Duration::from_secs(10));
    std::fs::write(&config, body + "\n# touched: the watcher reloads\n").unwrap();
    wait_for(
        &stderr,
        "config file changed; reloading",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(1500));

    // The manifest's preStop command, with short sleeps, traced like the gateway: it runs in
    // the container under the same profile.
    let pre_stop = DEPLOYMENT
        .lines()
        .find(|l| l.contains("/drain_listeners") && l.contains("curl"))
        .expect("preStop command in deployment.yaml")
        .trim()
        .trim_start_matches("- ")
        .replace("sleep 5", "sleep 0.2")
        .replace(":15000", &format!(":{admin}"));
    let hook_trace = dir.path().join("prestop.strace");
    let hook = strace(&hook_trace)
        .args(["sh", "-c", &pre_stop])
        .output()
        .unwrap();
    assert!(hook.status.success(), "preStop {pre_stop:?}: {hook:?}");
    assert_eq!(common::admin_request(admin_addr, "GET", "/ready").0, 503);

    Command::new("kill")
        .args(["-TERM", &egressd_pid])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "egressd did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(guard);
    assert!(
        status.success(),
        "egressd exit: {status}; {}",
        std::fs::read_to_string(&stderr).unwrap()
    );

    let allowed = allowed_by_profile();
    let mut missing = Vec::new();
    for (what, trace) in [
        ("run", &run_trace),
        ("check-system", &check_trace),
        ("preStop", &hook_trace),
    ] {
        let used = traced(trace);
        assert!(
            used.contains("io_uring_enter") || what != "run",
            "run made no io_uring call?"
        );
        println!(
            "{what}: {} syscalls: {}",
            used.len(),
            used.iter().cloned().collect::<Vec<_>>().join(" ")
        );
        missing.extend(used.difference(&allowed).map(|s| format!("{what}: {s}")));
    }
    assert!(
        missing.is_empty(),
        "seccomp/egressd.json denies: {missing:?}"
    );
}
