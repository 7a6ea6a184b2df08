//! End to end: live reconfiguration under load. Routes, endpoints and listeners change
//! across 20 reloads (SIGHUP, `POST /reload`, and the file watcher after a ConfigMap-style
//! symlink swap) while keep-alive clients keep requesting a route present in every
//! version; an invalid file in between is rejected with its position and changes nothing.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{admin_request, bootstrap, exchange, free_port, get, Gateway};

const SIGHUP: i32 = 1;

/// Resources of version `v`: `stable.example` always (its endpoint alternates between two
/// origins), `extra-<v>.example` only in this version, and in even versions a second
/// listener (Gateway port 81) serving `stable.example` too.
fn resources(v: usize, stable: [u16; 2], extra: u16) -> String {
    let stable_port = stable[v % 2];
    let servers = if v % 2 == 0 {
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 81, name: http-alt, protocol: HTTP}\n    hosts: [\"*\"]\n"
    } else {
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n"
    };
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: stable}}
spec:
  hosts: ["stable.example"]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {stable_port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: extra}}
spec:
  hosts: ["extra-{v}.example"]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {extra}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: egress}}
spec:
  servers:
{servers}---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: vs}}
spec:
  hosts: ["stable.example", "extra-{v}.example"]
  gateways: [egress]
  http:
  - match: [{{authority: {{exact: "extra-{v}.example"}}}}]
    route:
    - destination: {{host: "extra-{v}.example", port: {{number: 80}}}}
  - route:
    - destination: {{host: stable.example, port: {{number: 80}}}}
"#
    )
}

/// A file that does not validate: a misspelt field in the VirtualService.
const INVALID: &str = r#"apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ["stable.example"]
  gateways: [egress]
  htttp: []
"#;

struct Setup {
    gw: Gateway,
    port: u16,
    alt: u16,
    stable: [u16; 2],
    extra: u16,
    _origins: Vec<Origin>,
}

impl Setup {
    fn start() -> Setup {
        let origins = vec![
            Origin::fixed("s1", "stable"),
            Origin::fixed("s2", "stable"),
            Origin::fixed("x", "extra"),
        ];
        let stable = [origins[0].port(), origins[1].port()];
        let extra = origins[2].port();
        let (port, alt) = (free_port(), free_port());
        let gw = Gateway::start(
            &[(80, port), (81, alt)],
            &resources(0, stable, extra),
            &["--shards", "2"],
        );
        Setup {
            gw,
            port,
            alt,
            stable,
            extra,
            _origins: origins,
        }
    }

    /// The whole file for `resources`, with the same bootstrap the gateway started with.
    fn file(&self, resources: &str) -> String {
        bootstrap(
            &[(80, self.port), (81, self.alt)],
            self.gw.admin.port(),
            &self.gw.access_log,
            "",
        ) + resources
    }

    fn version(&self, v: usize) -> String {
        self.file(&resources(v, self.stable, self.extra))
    }
}

/// Replaces `path` atomically (write a sibling, rename over), as config tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn bootstrap_lines(s: &Setup) -> usize {
    s.file("").lines().count()
}

fn generation(gw: &Gateway) -> u64 {
    let (_, body) = gw.admin_get("/server_info");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["config_generation"].as_u64().unwrap()
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Keep-alive clients requesting `stable.example` until `stop`; counts ok and failed.
fn load(port: u16, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>, failed: Arc<AtomicU64>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(TcpStream::connect(("127.0.0.1", port)).unwrap()),
        };
        let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exchange(c, b"GET /load HTTP/1.1\r\nHost: stable.example\r\n\r\n")
        }));
        match resp {
            Ok(r) if r.status == 200 && r.body == b"stable" => {
                ok.fetch_add(1, Ordering::Relaxed);
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    conn = None;
                }
            }
            Ok(r) => {
                eprintln!(
                    "load: unexpected {} {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[test]
fn twenty_reloads_under_keep_alive_load_fail_no_request_on_a_stable_route() {
    let s = Setup::start();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), s.port);
            std::thread::spawn(move || load(port, stop, ok, failed))
        })
        .collect();
    let mut last_good = 0;
    for v in 1..=20 {
        if v == 10 {
            replace(&s.gw.config, &s.file(INVALID));
            let before = generation(&s.gw);
            let (status, body) = admin_request(s.gw.admin, "POST", "/reload");
            assert_eq!(status, 400, "{body}");
            // file:line:column, where `htttp` is (line 7 of the document after the bootstrap).
            let line = bootstrap_lines(&s) + 7;
            let at = format!("{}:{line}:3: unknown field 'htttp'", s.gw.config.display());
            assert!(body.contains(&at), "{body}");
            s.gw.wait_for_log(&format!("reload rejected: {at}"), Duration::from_secs(5));
            assert_eq!(generation(&s.gw), before, "nothing was published");
            // The previous version still serves, extra route and second listener included.
            let resp = get(s.port, &format!("extra-{last_good}.example"), "/");
            assert_eq!(resp.status, 200);
            assert_eq!(resp.body, b"extra");
            continue;
        }
        replace(&s.gw.config, &s.version(v));
        if v % 3 == 0 {
            let before = generation(&s.gw);
            s.gw.signal(SIGHUP);
            wait_until(Duration::from_secs(10), "the SIGHUP reload", || {
                generation(&s.gw) > before
            });
        } else {
            let (status, body) = admin_request(s.gw.admin, "POST", "/reload");
            assert_eq!(status, 200, "{body}");
        }
        // The new route answers at once (HTTP takes the current snapshot per request) ...
        let resp = get(s.port, &format!("extra-{v}.example"), "/");
        assert_eq!(resp.status, 200, "extra-{v} after reload");
        // ... and the previous version's is gone (502 NR, the policy for unknown hosts).
        let resp = get(s.port, &format!("extra-{last_good}.example"), "/");
        assert_eq!(resp.status, 502, "extra-{last_good} removed by reload {v}");
        // The second listener follows the version: bound in even ones, closed in odd ones.
        if v % 2 == 0 {
            wait_until(Duration::from_secs(10), "listener 81 to be bound", || {
                TcpStream::connect(("127.0.0.1", s.alt)).is_ok()
            });
            assert_eq!(get(s.alt, "stable.example", "/").status, 200);
        } else {
            wait_until(Duration::from_secs(10), "listener 81 to close", || {
                refused(s.alt)
            });
        }
        last_good = v;
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("load: {ok} ok, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok >= 100, "the load ran ({ok} requests)");
    let success = s.gw.stat("server.config_reload.update_success").unwrap();
    let rejected = s.gw.stat("server.config_reload.update_rejected").unwrap();
    // The watcher may also notice a file before the explicit trigger does.
    assert!(success >= 19, "{success}");
    assert!(rejected >= 1, "{rejected}");
}

#[test]
fn a_configmap_symlink_swap_is_picked_up_by_the_watcher() {
    let s = Setup::start();
    let dir = s.gw.dir.path();
    // The kubelet's layout: egressd.yaml -> ..data/egressd.yaml, ..data -> ..<timestamp>.
    for (name, v) in [("..v1", 1), ("..v2", 2)] {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("egressd.yaml"), s.version(v)).unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/egressd.yaml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), &s.gw.config).unwrap();
    wait_until(
        Duration::from_secs(10),
        "version 1 through the symlink",
        || get(s.port, "extra-1.example", "/").status == 200,
    );
    // The atomic swap: a new `..data` symlink renamed over the old one.
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    wait_until(
        Duration::from_secs(10),
        "version 2 after the ..data swap",
        || get(s.port, "extra-2.example", "/").status == 200,
    );
    assert_eq!(get(s.port, "extra-1.example", "/").status, 502);
    s.gw.wait_for_log("config file changed; reloading", Duration::from_secs(1));
}

#[test]
fn an_invalid_file_seen_by_the_watcher_is_counted_and_changes_nothing() {
    let s = Setup::start();
    let before = generation(&s.gw);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.gw.config)
        .unwrap();
    f.write_all(b"---\nkind: NoSuchKind\n").unwrap();
    drop(f);
    wait_until(Duration::from_secs(10), "the rejected reload", || {
        s.gw.stat("server.config_reload.update_rejected") == Some(1)
    });
    assert_eq!(generation(&s.gw), before);
    assert_eq!(get(s.port, "extra-0.example", "/").status, 200);
    assert!(s.gw.stderr_text().contains("reload rejected:"));
}

#[test]
fn a_keep_alive_connection_on_a_removed_listener_is_served_with_its_old_routes() {
    let s = Setup::start();
    let mut conn = TcpStream::connect(("127.0.0.1", s.alt)).unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: extra-0.example\r\n\r\n";
    assert_eq!(exchange(&mut conn, req).status, 200);
    // Version 1 has neither the second listener nor `extra-0.example`.
    replace(&s.gw.config, &s.version(1));
    assert_eq!(admin_request(s.gw.admin, "POST", "/reload").0, 200);
    wait_until(Duration::from_secs(10), "listener 81 to close", || {
        refused(s.alt)
    });
    assert_eq!(
        get(s.port, "extra-0.example", "/").status,
        502,
        "gone for new requests"
    );
    let resp = exchange(&mut conn, req);
    assert_eq!(
        resp.status, 200,
        "the open connection keeps the routes it was opened with"
    );
    assert_eq!(resp.body, b"extra");
}
