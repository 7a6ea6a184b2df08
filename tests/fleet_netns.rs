//! A fleet of three egressd "nodes", each the real binary in its own network namespace,
//! behind one virtual address: the client namespace routes the VIP with an ECMP multipath
//! route hashed on L4 (`fib_multipath_hash_policy=1`), the way a cloud load balancer or
//! kube-proxy spreads connections over the egress pods. Upstream is a small Python origin in
//! a fifth namespace, reachable from every node at one address.
//!
//! Checks: connections spread over all three nodes; SIGKILL of one node fails exactly the
//! in-flight requests it held while the long requests on the other two finish; a config
//! change delivered like a ConfigMap update (new `..<timestamp>` dir, `..data` symlink
//! swapped with rename) reaches all three with no failed request.
//!
//! Every address lives inside namespaces this test creates (10.77-10.79.x.x); nothing leaves
//! them. Root only: skipped with a printed reason otherwise. Namespaces and processes are
//! removed by Drop guards; every wait is bounded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 3;
const VIP: &str = "10.77.100.1";
const CLIENT_SRC: &str = "10.77.0.1";
const UPSTREAM: &str = "10.79.0.1";
const GW_PORT: u16 = 8080;

/// The origin: answers `<peer ip>` (the node that forwarded it), `GET /slow?id=N&ms=M` after
/// M ms, logging `start N <peer>` first so the test knows which node holds which request.
const ORIGIN_PY: &str = r#"
import sys, threading, time, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
out = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        u = urllib.parse.urlparse(self.path); q = urllib.parse.parse_qs(u.query)
        peer = self.client_address[0]
        if u.path == "/slow":
            with out:
                sys.stdout.write("start %s %s\n" % (q["id"][0], peer)); sys.stdout.flush()
            time.sleep(int(q["ms"][0]) / 1000)
        body = (peer + " ").encode()
        try:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        except OSError:
            pass
ThreadingHTTPServer.daemon_threads = True
s = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("listening", flush=True)
s.serve_forever()
"#;

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn sh(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    sh(&all);
}

/// The namespaces and every process started in them; Drop kills and deletes all of it.
struct Fleet {
    prefix: String,
    client: String,
    upstream: String,
    nodes: Vec<String>,
    dir: tempfile::TempDir,
    gateways: Vec<Option<Child>>,
    origin: Option<Child>,
    origin_log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in self
            .gateways
            .iter_mut()
            .flatten()
            .chain(self.origin.as_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.all_ns() {
            let _ = run(&["ip", "netns", "del", &ns]);
        }
    }
}

impl Fleet {
    fn all_ns(&self) -> Vec<String> {
        let mut v = vec![self.client.clone(), self.upstream.clone()];
        v.extend(self.nodes.iter().cloned());
        v
    }

    fn new() -> Fleet {
        let prefix = format!("egdfl{}", std::process::id());
        let fleet = Fleet {
            client: format!("{prefix}c"),
            upstream: format!("{prefix}u"),
            nodes: (1..=NODES).map(|i| format!("{prefix}n{i}")).collect(),
            prefix,
            dir: tempfile::tempdir().unwrap(),
            gateways: Vec::new(),
            origin: None,
            origin_log: Arc::default(),
        };
        for ns in fleet.all_ns() {
            let _ = run(&["ip", "netns", "del", &ns]); // left over from a killed run
            sh(&["ip", "netns", "add", &ns]);
            in_ns(&ns, &["ip", "link", "set", "lo", "up"]);
        }
        let (c, u) = (fleet.client.clone(), fleet.upstream.clone());
        in_ns(
            &c,
            &[
                "ip",
                "addr",
                "add",
                &format!("{CLIENT_SRC}/32"),
                "dev",
                "lo",
            ],
        );
        in_ns(
            &u,
            &["ip", "addr", "add", &format!("{UPSTREAM}/32"), "dev", "lo"],
        );
        // Hash on the 5-tuple: each new connection (new source port) may take another node.
        in_ns(
            &c,
            &["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"],
        );
        for (i, n) in fleet.nodes.clone().iter().enumerate() {
            let i = i + 1;
            let (cv, nv, uv, nu) = (
                format!("{}c{i}", fleet.prefix),
                format!("{}x{i}", fleet.prefix),
                format!("{}u{i}", fleet.prefix),
                format!("{}y{i}", fleet.prefix),
            );
            // client <-> node i: 10.77.i.0/24; node i <-> upstream: 10.78.i.0/24.
            sh(&[
                "ip", "link", "add", &cv, "netns", &c, "type", "veth", "peer", "name", &nv,
                "netns", n,
            ]);
            sh(&[
                "ip", "link", "add", &nu, "netns", n, "type", "veth", "peer", "name", &uv, "netns",
                &u,
            ]);
            in_ns(
                &c,
                &["ip", "addr", "add", &format!("10.77.{i}.1/24"), "dev", &cv],
            );
            in_ns(&c, &["ip", "link", "set", &cv, "up"]);
            in_ns(
                n,
                &["ip", "addr", "add", &format!("10.77.{i}.2/24"), "dev", &nv],
            );
            in_ns(n, &["ip", "link", "set", &nv, "up"]);
            in_ns(n, &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
            in_ns(
                n,
                &["ip", "addr", "add", &format!("10.78.{i}.1/24"), "dev", &nu],
            );
            in_ns(n, &["ip", "link", "set", &nu, "up"]);
            in_ns(
                n,
                &[
                    "ip",
                    "route",
                    "add",
                    &format!("{CLIENT_SRC}/32"),
                    "via",
                    &format!("10.77.{i}.1"),
                ],
            );
            in_ns(
                n,
                &[
                    "ip",
                    "route",
                    "add",
                    &format!("{UPSTREAM}/32"),
                    "via",
                    &format!("10.78.{i}.2"),
                ],
            );
            in_ns(
                &u,
                &["ip", "addr", "add", &format!("10.78.{i}.2/24"), "dev", &uv],
            );
            in_ns(&u, &["ip", "link", "set", &uv, "up"]);
        }
        fleet.route_vip(&[1, 2, 3]);
        fleet
    }

    /// The VIP route in the client namespace over the given nodes (like kube-proxy's
    /// endpoints: a killed node is taken out of it).
    fn route_vip(&self, nodes: &[usize]) {
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            &self.client,
            "ip",
            "route",
            "replace",
        ];
        let dst = format!("{VIP}/32");
        args.extend(["src", CLIENT_SRC, &dst]);
        let hops: Vec<String> = nodes.iter().map(|i| format!("10.77.{i}.2")).collect();
        for h in &hops {
            args.extend(["nexthop", "via", h.as_str()]);
        }
        sh(&args);
    }

    fn start_origin(&mut self) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.upstream,
                "python3",
                "-u",
                "-c",
                ORIGIN_PY,
            ])
            .args([UPSTREAM, "80"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let log = self.origin_log.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.origin = Some(child);
        wait_until("origin listening", Duration::from_secs(10), || {
            self.origin_log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l == "listening")
        });
    }

    /// Node i's config directory laid out as the kubelet lays out a ConfigMap volume.
    fn config_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}"))
    }

    /// Writes `content` into a new `..<stamp>` directory and swaps `..data` to it with a
    /// rename (atomic), as the kubelet's AtomicWriter does.
    fn publish_config(&self, i: usize, stamp: &str, content: &str) {
        let dir = self.config_dir(i);
        std::fs::create_dir_all(&dir).unwrap();
        let ts = dir.join(format!("..{stamp}"));
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("egressd.yaml"), content).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        let user = dir.join("egressd.yaml");
        if !user.exists() {
            std::os::unix::fs::symlink("..data/egressd.yaml", &user).unwrap();
        }
    }

    fn start_gateway(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("node{i}.stderr"))).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.nodes[i - 1],
                env!("CARGO_BIN_EXE_egressd"),
                "run",
            ])
            .arg("-c")
            .arg(self.config_dir(i).join("egressd.yaml"))
            .args(["--shards", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn egressd");
        self.gateways.push(Some(child));
        let ns = self.nodes[i - 1].clone();
        wait_until(&format!("node {i} ready"), Duration::from_secs(20), || {
            admin(&ns, "/ready").is_some_and(|b| b.contains("LIVE"))
        });
    }

    fn stderr_of(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{i}.stderr"))).unwrap_or_default()
    }

    /// Runs `requests` (each a path, Host header and new connection) from the client
    /// namespace through `target`; returns one (status, answering node) per request,
    /// status 0 when the request failed.
    fn curl(&self, target: &str, host: &str, paths: &[String]) -> Vec<(u16, String)> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client, "curl", "-s", "-m", "15"])
            .args(["-H", &format!("Host: {host}"), "-H", "Connection: close"])
            .args(["-w", "#%{http_code}#"]);
        for p in paths {
            cmd.arg(format!("http://{target}:{GW_PORT}{p}"));
        }
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let answers = parse_answers(&text);
        assert_eq!(answers.len(), paths.len(), "curl output: {text}");
        answers
    }
}

/// curl's output for requests written with `-w #%{http_code}#`: body, code, body, code...
/// (code 0: no response). Bodies may hold newlines; they never hold `#`.
fn parse_answers(text: &str) -> Vec<(u16, String)> {
    let parts: Vec<&str> = text.split('#').collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[1].parse().unwrap_or(0), c[0].trim().to_string()))
        .collect()
}

fn admin(ns: &str, path: &str) -> Option<String> {
    let out = run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "curl",
        "-sf",
        "-m",
        "2",
        &format!("http://127.0.0.1:15000{path}"),
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn stat(ns: &str, name: &str) -> u64 {
    admin(ns, &format!("/stats?filter={}", name.replace('|', "%7C")))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(hosts: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\nspec:\n  bindAddress: 0.0.0.0\n  portMap: {{80: {GW_PORT}}}\n  admin: 0.0.0.0:15000\n  limits: {{maxConnections: 1000}}\n  accessLog: {{path: \"-\"}}\n  timeouts: {{drain: 2s}}\n"
    );
    for h in hosts {
        let name = h.replace('.', "-");
        s += &format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{h}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: {UPSTREAM}, ports: {{http: 80}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw-{name}}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [{h}]}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{name}}}\nspec:\n  hosts: [{h}]\n  gateways: [gw-{name}]\n  http: [{{route: [{{destination: {{host: {h}, port: {{number: 80}}}}}}]}}]\n"
        );
    }
    s
}

fn node_of(peer: &str) -> usize {
    // Node i reaches the origin from 10.78.i.1.
    peer.trim()
        .strip_prefix("10.78.")
        .and_then(|r| r.split('.').next()?.parse().ok())
        .unwrap_or(0)
}

fn skip_reason() -> Option<String> {
    if !run(&["id", "-u"]).stdout.starts_with(b"0\n") {
        return Some("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for tool in ["ip", "curl", "python3", "sysctl"] {
        assert!(
            run(&["sh", "-c", &format!("command -v {tool}")])
                .status
                .success(),
            "{tool} is missing (apt-get install -y iproute2 curl python3 procps)"
        );
    }
    None
}

#[test]
fn fleet_spreads_survives_a_node_kill_and_reloads_by_symlink_swap() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let mut fleet = Fleet::new();
    fleet.start_origin();
    for i in 1..=NODES {
        fleet.publish_config(i, "2026_01_01_00_00_00.000000001", &config(&["demo.local"]));
        fleet.start_gateway(i);
    }

    // 1. Spread: 60 new connections through the VIP land on all three nodes.
    let paths: Vec<String> = (0..60).map(|n| format!("/spread/{n}")).collect();
    let answers = fleet.curl(VIP, "demo.local", &paths);
    let mut per_node: BTreeMap<usize, usize> = BTreeMap::new();
    for (code, peer) in &answers {
        assert_eq!(*code, 200, "through the VIP: {answers:?}");
        *per_node.entry(node_of(peer)).or_default() += 1;
    }
    println!("requests per node: {per_node:?}");
    for i in 1..=NODES {
        assert!(
            per_node.get(&i).copied().unwrap_or(0) > 0,
            "node {i} got nothing: {per_node:?}"
        );
        let served = stat(
            &fleet.nodes[i - 1],
            "cluster.outbound|80||demo.local.upstream_rq_total",
        );
        assert_eq!(
            served, per_node[&i] as u64,
            "node {i}'s /stats disagrees with the origin"
        );
    }

    // 2. Config change by symlink swap while traffic flows: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::new()));
    let traffic = {
        let (stop, results, client) = (stop.clone(), results.clone(), fleet.client.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &client, "curl", "-s", "-m", "10"])
                    .args([
                        "-H",
                        "Host: demo.local",
                        "-H",
                        "Connection: close",
                        "-w",
                        "#%{http_code}#",
                    ]);
                for n in 0..20 {
                    cmd.arg(format!("http://{VIP}:{GW_PORT}/during-reload/{n}"));
                }
                let out = cmd.output().expect("curl");
                results
                    .lock()
                    .unwrap()
                    .extend(parse_answers(&String::from_utf8_lossy(&out.stdout)));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=NODES {
        fleet.publish_config(
            i,
            "2026_01_01_00_05_00.000000002",
            &config(&["demo.local", "demo2.local"]),
        );
    }
    for i in 1..=NODES {
        let node = format!("10.77.{i}.2");
        wait_until(
            &format!("node {i} serving demo2.local"),
            Duration::from_secs(15),
            || fleet.curl(&node, "demo2.local", &["/new".to_string()])[0].0 == 200,
        );
        assert!(stat(&fleet.nodes[i - 1], "server.config_reload.update_success") >= 1);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let codes = results.lock().unwrap().clone();
    assert!(
        codes.len() >= 20,
        "too little traffic during the reload: {codes:?}"
    );
    assert!(
        codes.iter().all(|(c, _)| *c == 200),
        "a request failed during the reload: {codes:?}"
    );
    println!(
        "{} requests during the symlink-swap reload, all 200",
        codes.len()
    );

    // 3. SIGKILL one node while long requests are in flight on all three.
    let slow: Vec<std::thread::JoinHandle<(usize, (u16, String))>> = (0..12)
        .map(|id| {
            let client = fleet.client.clone();
            std::thread::spawn(move || {
                let out = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &client,
                        "curl",
                        "-s",
                        "-m",
                        "20",
                        "-H",
                        "Host: demo.local",
                    ])
                    .args([
                        "-w",
                        "#%{http_code}#",
                        &format!("http://{VIP}:{GW_PORT}/slow?id={id}&ms=4000"),
                    ])
                    .output()
                    .expect("curl");
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let answer = parse_answers(&text).pop().unwrap_or((0, String::new()));
                (id, answer)
            })
        })
        .collect();
    let started = || -> BTreeMap<usize, usize> {
        fleet
            .origin_log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 3 && w[0] == "start").then(|| (w[1].parse().unwrap(), node_of(w[2])))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while started().len() < 12 {
        assert!(
            Instant::now() < deadline,
            "12 slow requests not in flight; origin saw: {:?}",
            fleet.origin_log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let holder = started();
    let mut held: BTreeMap<usize, usize> = BTreeMap::new();
    holder
        .values()
        .for_each(|n| *held.entry(*n).or_default() += 1);
    println!("slow requests per node: {held:?}");
    // Kill the node holding the most: the others must still hold some for the check to mean anything.
    let victim = *held.iter().max_by_key(|(_, c)| **c).unwrap().0;
    assert!(held.len() >= 2, "all slow requests on one node: {held:?}");
    let pid = fleet.gateways[victim - 1].as_ref().unwrap().id();
    sh(&["kill", "-KILL", &pid.to_string()]);
    fleet.gateways[victim - 1].as_mut().unwrap().wait().unwrap();
    fleet.gateways[victim - 1] = None;
    let (mut failed, mut finished) = (0, 0);
    for h in slow {
        let (id, (code, peer)) = h.join().unwrap();
        if code == 200 {
            finished += 1;
        } else {
            failed += 1;
        }
        if holder[&id] == victim {
            assert_ne!(
                code, 200,
                "request {id} held by the killed node {victim} cannot succeed"
            );
        } else {
            assert_eq!(
                code, 200,
                "request {id} on surviving node {}: {peer}",
                holder[&id]
            );
            assert_eq!(node_of(&peer), holder[&id]);
        }
    }
    println!("SIGKILL of node {victim}: {failed} of its requests failed, {finished} on the others finished");
    // Take the dead node out of the route (kube-proxy would drop the endpoint): every new
    // connection succeeds on the survivors.
    let alive: Vec<usize> = (1..=NODES).filter(|i| *i != victim).collect();
    fleet.route_vip(&alive);
    let paths: Vec<String> = (0..20).map(|n| format!("/after/{n}")).collect();
    for (code, peer) in fleet.curl(VIP, "demo.local", &paths) {
        assert_eq!(code, 200);
        assert!(alive.contains(&node_of(&peer)));
    }
    for i in &alive {
        assert!(
            !fleet.stderr_of(*i).contains("panicked"),
            "node {i}: {}",
            fleet.stderr_of(*i)
        );
    }
}
