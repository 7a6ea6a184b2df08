//! tuning/nftables.sh really stops bypass: in a pair of network namespaces made here (a
//! "node" and an "outside" joined by a veth), a process of another user cannot open a
//! connection to the outside address while the egressd user can; internal networks stay
//! reachable; the drop counter moves; removing the table restores reachability.
//!
//! Needs root (network namespaces, nftables). Not root: skipped with a printed reason.
//! Root without a capability it needs (e.g. in a restricted container): fails loudly.
//! Clients and the listener are perl one-liners (perl-base is essential on Debian).

use std::borrow::BorrowMut;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TEST_USER: &str = "egressd-test";
const NODE_ADDR: &str = "198.51.100.1/24"; // TEST-NET-2: "outside" for the rules
const OUT_ADDR: &str = "198.51.100.2";
const NODE_INTERNAL: &str = "10.254.77.1/24"; // declared internal below
const OUT_INTERNAL: &str = "10.254.77.2";

fn run(mut cmd: impl BorrowMut<Command>) -> Output {
    let cmd = cmd.borrow_mut();
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn must(mut cmd: impl BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// Namespaces and processes of one test run; removed on drop, pass or fail.
struct Lab {
    node: String,
    out: String,
    /// Every namespace created so far (deleted on drop).
    created: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    fn new(node: String, out: String) -> Lab {
        Lab {
            node,
            out,
            created: Vec::new(),
            children: Vec::new(),
        }
    }

    fn add_ns(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.created.push(name.to_string());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace deletes the veth end inside it, and its peer with it.
        for ns in &self.created {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:05x}", std::process::id() & 0xfff, nanos & 0xfffff)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_user(name: &str) -> (u32, u32) {
    if !run(Command::new("id").arg("-u").arg(name)).status.success() {
        let out = run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ]));
        // 9 = already exists (a parallel run created it first).
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let uid = must(Command::new("id").arg("-u").arg(name))
        .trim()
        .parse()
        .unwrap();
    let gid = must(Command::new("id").arg("-g").arg(name))
        .trim()
        .parse()
        .unwrap();
    (uid, gid)
}

/// Connects from the node namespace as `uid:gid` and sends one line naming the uid.
/// Returns whether the connection was made (perl exits 7 when connect fails/times out).
fn connect_as(lab: &Lab, uid: u32, gid: u32, addr: &str, port: u16) -> bool {
    let script = r#"use IO::Socket::INET; my $c = IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => $ARGV[1], Timeout => 3) or exit 7; print $c "hello from uid $<\n"; close $c; exit 0"#;
    let out = run(in_ns(
        &lab.node,
        &[
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "--",
            "perl",
            "-e",
            script,
            addr,
            &port.to_string(),
        ],
    ));
    match out.status.code() {
        Some(0) => true,
        Some(7) => false,
        other => panic!(
            "client failed to run ({other:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn counter(lab: &Lab, name: &str) -> u64 {
    let text = must(in_ns(
        &lab.node,
        &["nft", "list", "counter", "inet", "egressd_egress", name],
    ));
    let packets = text
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .unwrap_or_else(|| panic!("no packets in {text}"));
    packets.parse().unwrap()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tuning/nftables.sh")
}

#[test]
fn only_the_egressd_user_can_open_connections_outside_the_node() {
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!("SKIPPED only_the_egressd_user_can_open_connections_outside_the_node: needs root (network namespaces and nftables)");
        return;
    }
    for tool in ["ip", "nft", "setpriv", "perl", "useradd"] {
        assert!(
            have(tool),
            "{tool} is missing (apt-get install -y nftables iproute2 util-linux perl-base passwd)"
        );
    }
    let (test_uid, test_gid) = ensure_user(TEST_USER);
    let (nobody_uid, nobody_gid) = (65534, 65534);

    let id = unique_id();
    let mut lab = Lab::new(format!("egd-test-{id}-node"), format!("egd-test-{id}-out"));
    let (node, out) = (lab.node.clone(), lab.out.clone());
    lab.add_ns(&node);
    lab.add_ns(&out);
    let (vn, vo) = (format!("egdn{id}"), format!("egdo{id}"));
    ip(&[
        "link", "add", &vn, "netns", &lab.node, "type", "veth", "peer", "name", &vo, "netns",
        &lab.out,
    ]);
    for (ns, dev, addrs) in [
        (
            &lab.node,
            &vn,
            [NODE_ADDR.to_string(), NODE_INTERNAL.to_string()],
        ),
        (
            &lab.out,
            &vo,
            [format!("{OUT_ADDR}/24"), format!("{OUT_INTERNAL}/24")],
        ),
    ] {
        for a in addrs {
            ip(&["-n", ns, "addr", "add", &a, "dev", dev]);
        }
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }

    // Listener in the outside namespace: prints its port, then one line per connection.
    let listen = r#"use IO::Socket::INET; $| = 1; my $s = IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => 0, Listen => 16, ReuseAddr => 1) or die "listen: $!"; print $s->sockport, "\n"; while (my $c = $s->accept) { my $l = <$c>; print(defined $l ? $l : "empty\n"); close $c }"#;
    let mut child = in_ns(&lab.out, &["perl", "-e", listen])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    lab.children.push(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait = Duration::from_secs(10);
    let port: u16 = lines
        .recv_timeout(wait)
        .expect("listener did not start")
        .parse()
        .unwrap();

    // Before the rules: everyone reaches the outside (so a later failure is the rules').
    assert!(
        connect_as(&lab, nobody_uid, nobody_gid, OUT_ADDR, port),
        "no route to outside even without rules"
    );
    assert_eq!(
        lines.recv_timeout(wait).unwrap(),
        format!("hello from uid {nobody_uid}")
    );

    let applied = run(in_ns(
        &lab.node,
        &[
            script().to_str().unwrap(),
            "--user",
            TEST_USER,
            "--internal",
            "10.254.77.0/24",
        ],
    ));
    assert!(
        applied.status.success(),
        "nftables.sh failed: {}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let dropped = counter(&lab, "bypass_output_dropped");
    let allowed = counter(&lab, "egressd_allowed");
    assert!(
        !connect_as(&lab, nobody_uid, nobody_gid, OUT_ADDR, port),
        "nobody reached the outside"
    );
    assert!(
        !connect_as(&lab, 0, 0, OUT_ADDR, port),
        "root reached the outside"
    );
    assert!(
        counter(&lab, "bypass_output_dropped") >= dropped + 2,
        "drops were not counted"
    );

    assert!(
        connect_as(&lab, test_uid, test_gid, OUT_ADDR, port),
        "the egressd user was blocked"
    );
    assert_eq!(
        lines.recv_timeout(wait).unwrap(),
        format!("hello from uid {test_uid}")
    );
    assert_eq!(counter(&lab, "egressd_allowed"), allowed + 1);

    // Internal networks stay reachable for everyone (DNS, the API server, other pods).
    assert!(
        connect_as(&lab, nobody_uid, nobody_gid, OUT_INTERNAL, port),
        "internal network blocked"
    );
    assert_eq!(
        lines.recv_timeout(wait).unwrap(),
        format!("hello from uid {nobody_uid}")
    );

    // Removing the table restores the node as it was.
    must(in_ns(&lab.node, &[script().to_str().unwrap(), "--remove"]));
    assert!(
        connect_as(&lab, nobody_uid, nobody_gid, OUT_ADDR, port),
        "still blocked after --remove"
    );
    assert_eq!(
        lines.recv_timeout(wait).unwrap(),
        format!("hello from uid {nobody_uid}")
    );
}

#[test]
fn dry_run_checks_the_rules_and_changes_nothing() {
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!("SKIPPED dry_run_checks_the_rules_and_changes_nothing: nft -c needs root");
        return;
    }
    assert!(have("nft"), "nft is missing (apt-get install -y nftables)");
    // Its own namespace, so a table left by a parallel test cannot confuse it.
    let id = unique_id();
    let mut lab = Lab::new(format!("egd-test-{id}-dry"), String::new());
    let node = lab.node.clone();
    lab.add_ns(&node);
    let out = must(in_ns(
        &lab.node,
        &[
            script().to_str().unwrap(),
            "--user",
            "nobody",
            "--internal",
            "10.1.0.0/16,fd00::/8",
            "--dry-run",
        ],
    ));
    assert!(out.contains("define egressd_user = \"nobody\""), "{out}");
    assert!(
        out.contains("define internal_v4 = { 127.0.0.0/8, 10.1.0.0/16 }"),
        "{out}"
    );
    assert!(
        out.contains("define internal_v6 = { ::1/128, fd00::/8 }"),
        "{out}"
    );
    let tables = must(in_ns(&lab.node, &["nft", "list", "tables"]));
    assert!(
        !tables.contains("egressd_egress"),
        "dry run applied the rules: {tables}"
    );
    let bad = run(in_ns(
        &lab.node,
        &[
            script().to_str().unwrap(),
            "--user",
            "no-such-user-egd",
            "--dry-run",
        ],
    ));
    assert!(!bad.status.success(), "a missing user must be an error");
}
