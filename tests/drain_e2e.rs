//! End to end: draining. SIGTERM lets the request in flight finish (its response closes
//! the keep-alive connection), refuses new connections and exits 0; `POST /drain_listeners`
//! closes the listeners and turns `/ready` to 503 without exiting.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{admin_request, free_port, get, Gateway};

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

fn refused(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// An origin whose `/slow` answers only once `release` is set (bounded), counting waiters.
fn holding_origin(release: Arc<AtomicBool>, waiting: Arc<AtomicU64>) -> Origin {
    Origin::start(Arc::new(move |req| {
        if req.path == "/slow" {
            waiting.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone".to_vec()
    }))
}

fn single_route(origin: u16) -> String {
    common::istio::one_route("slow.example", origin)
}

#[test]
fn sigterm_lets_the_in_flight_request_finish_refuses_new_connections_and_exits_zero() {
    let (release, waiting) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let origin = holding_origin(release.clone(), waiting.clone());
    let port = free_port();
    let mut gw = Gateway::start(
        &[(80, port)],
        &single_route(origin.port()),
        &["--shards", "2"],
    );
    // A keep-alive connection with one request in flight.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nHost: slow.example\r\n\r\n")
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the request to reach the origin",
        || waiting.load(Ordering::SeqCst) == 1,
    );
    gw.signal(15);
    wait_until(
        Duration::from_secs(10),
        "new connections to be refused",
        || refused(port),
    );
    release.store(true, Ordering::SeqCst);
    let resp = common::read_response(&mut conn);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"done");
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "keep-alive ends while draining"
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn drain_listeners_closes_the_listeners_and_turns_ready_503_without_exiting() {
    let (release, waiting) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU64::new(0)));
    let origin = holding_origin(release, waiting);
    let port = free_port();
    let mut gw = Gateway::start(
        &[(80, port)],
        &single_route(origin.port()),
        &["--shards", "2"],
    );
    assert_eq!(gw.admin_get("/ready").0, 200);
    assert_eq!(get(port, "slow.example", "/").status, 200);
    let (status, _) = admin_request(gw.admin, "POST", "/drain_listeners");
    assert_eq!(status, 200);
    assert_eq!(gw.admin_get("/ready").0, 503);
    wait_until(Duration::from_secs(10), "the listener to close", || {
        refused(port)
    });
    // Still running: the admin server answers and the process has not exited.
    assert_eq!(gw.admin_get("/healthz").0, 200);
    assert_eq!(gw.wait_exit(Duration::from_millis(300)), None);
}
