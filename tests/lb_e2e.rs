//! End to end: load balancing and upstream protection through the real binary with one
//! shard (so one shard's balancer sees every request): ROUND_ROBIN splits evenly,
//! LEAST_REQUEST avoids a busy endpoint, outlier detection ejects an endpoint answering
//! 500 until `baseEjectionTime` passes, and `connectionPool.tcp.maxConnections` answers
//! 503 UO beyond the limit.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{free_port, get, Gateway};

const HOST: &str = "lb.example";
const CLUSTER: &str = "cluster.outbound|80||lb.example.";

/// An origin answering `status` with `x-origin: name`; requests to `/hold` wait (bounded)
/// while `hold` is set, and `busy` counts the ones waiting.
fn origin(
    name: &'static str,
    status: u16,
    hold: Arc<AtomicBool>,
    busy: Arc<AtomicUsize>,
) -> Origin {
    Origin::start(Arc::new(move |req| {
        if req.path == "/hold" {
            busy.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(20);
            while hold.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            busy.fetch_sub(1, Ordering::SeqCst);
        }
        format!("HTTP/1.1 {status} X\r\nx-origin: {name}\r\ncontent-length: 2\r\n\r\nok")
            .into_bytes()
    }))
}

fn plain(name: &'static str, status: u16) -> Origin {
    origin(name, status, Arc::default(), Arc::default())
}

fn resources(ports: &[u16], traffic_policy: &str) -> String {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("{{address: 127.0.0.1, ports: {{http: {p}}}}}"))
        .collect();
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: se}}
spec:
  hosts: ["{HOST}"]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: dr}}
spec:
  host: "{HOST}"
  trafficPolicy:
{traffic_policy}
---
"#,
        endpoints.join(", ")
    ) + &common::istio::http_gateway()
        + &common::istio::virtual_service(HOST, HOST, "")
}

fn start(ports: &[u16], traffic_policy: &str) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start(
        &[(80, port)],
        &resources(ports, traffic_policy),
        &["--shards", "1"],
    );
    (gw, port)
}

/// Sends `n` requests and counts answers by `x-origin`.
fn spread(port: u16, n: usize, path: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let resp = get(port, HOST, path);
        let who = resp.header("x-origin").unwrap_or("-").to_string();
        *seen.entry(who).or_default() += 1;
    }
    seen
}

#[test]
fn round_robin_splits_requests_evenly_across_three_origins() {
    let (a, b, c) = (plain("a", 200), plain("b", 200), plain("c", 200));
    let (_gw, port) = start(
        &[a.port(), b.port(), c.port()],
        "    loadBalancer: {simple: ROUND_ROBIN}",
    );
    let seen = spread(port, 30, "/");
    for name in ["a", "b", "c"] {
        assert_eq!(seen.get(name), Some(&10), "{seen:?}");
    }
}

#[test]
fn least_request_sends_traffic_to_the_idle_endpoint_while_the_other_is_busy() {
    let hold = Arc::new(AtomicBool::new(true));
    let slow_busy = Arc::new(AtomicUsize::new(0));
    let slow = origin("slow", 200, hold.clone(), slow_busy.clone());
    let fast = plain("fast", 200);
    let (_gw, port) = start(
        &[slow.port(), fast.port()],
        "    loadBalancer: {simple: LEAST_REQUEST}",
    );
    // Park one request on `slow` (ties go either way, so retry until one lands there).
    let mut parked = None;
    for _ in 0..50 {
        let t = std::thread::spawn(move || get(port, HOST, "/hold").status);
        let deadline = Instant::now() + Duration::from_secs(5);
        while slow_busy.load(Ordering::SeqCst) == 0 && !t.is_finished() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if slow_busy.load(Ordering::SeqCst) == 1 {
            parked = Some(t);
            break;
        }
        assert_eq!(t.join().unwrap(), 200);
    }
    let parked = parked.expect("a request reached the slow endpoint");
    // `slow` has one request in flight, `fast` none: every new request picks `fast`.
    let seen = spread(port, 20, "/");
    assert_eq!(seen.get("fast"), Some(&20), "{seen:?}");
    hold.store(false, Ordering::SeqCst);
    assert_eq!(parked.join().unwrap(), 200);
}

#[test]
fn a_failing_endpoint_is_ejected_until_base_ejection_time_passes() {
    let (a, b, bad) = (plain("a", 200), plain("b", 200), plain("bad", 500));
    let (gw, port) = start(
        &[a.port(), b.port(), bad.port()],
        "    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 50}",
    );
    // Round robin reaches `bad` every third request: two 500s in a row eject it.
    let mut bad_hits = 0;
    for _ in 0..12 {
        if get(port, HOST, "/").status == 500 {
            bad_hits += 1;
            if bad_hits == 2 {
                break;
            }
        }
    }
    assert_eq!(bad_hits, 2);
    let seen = spread(port, 20, "/");
    assert_eq!(
        seen.get("bad"),
        None,
        "ejected endpoint got traffic: {seen:?}"
    );
    assert_eq!(
        seen.get("a").copied().unwrap_or(0) + seen.get("b").copied().unwrap_or(0),
        20
    );
    let enforced = format!("{CLUSTER}outlier_detection.ejections_enforced_total");
    assert_eq!(gw.stat(&enforced), Some(1));
    assert_eq!(
        gw.stat(&format!("{CLUSTER}outlier_detection.ejections_active")),
        Some(1)
    );
    // After baseEjectionTime it gets traffic again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = false;
    while Instant::now() < deadline && !back {
        back = get(port, HOST, "/").status == 500;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(back, "the ejected endpoint never came back");
}

#[test]
fn connections_beyond_max_connections_get_503_uo() {
    let hold = Arc::new(AtomicBool::new(true));
    let busy = Arc::new(AtomicUsize::new(0));
    let o = origin("o", 200, hold.clone(), busy.clone());
    let (gw, port) = start(
        &[o.port()],
        "    connectionPool: {tcp: {maxConnections: 1}}",
    );
    let parked = std::thread::spawn(move || get(port, HOST, "/hold").status);
    let deadline = Instant::now() + Duration::from_secs(10);
    while busy.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(busy.load(Ordering::SeqCst), 1);
    let resp = get(port, HOST, "/");
    assert_eq!(resp.status, 503);
    hold.store(false, Ordering::SeqCst);
    assert_eq!(parked.join().unwrap(), 200);
    let lines = gw.access_log_lines(2);
    assert!(lines.iter().any(|l| l.contains(" 503 UO ")), "{lines:?}");
    assert_eq!(gw.stat(&format!("{CLUSTER}upstream_cx_overflow")), Some(1));
    // The one connection is pooled again: the next request goes through.
    assert_eq!(get(port, HOST, "/").status, 200);
    assert_eq!(o.connection_count(), 1);
}
