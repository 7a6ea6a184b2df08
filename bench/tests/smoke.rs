//! The load generator against a tiny in-process HTTP/1.1 server on loopback: it counts
//! requests, records one latency per 2xx response, follows the open-loop schedule, and
//! reports non-2xx answers and closed connections. No timing asserts: only counts and order.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bench::loadgen::{self, Edge, LoadSpec, Mode};

/// How the test server answers.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    ServiceUnavailable,
    OkThenClose,
}

struct Server {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(answer: Answer) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&served), Arc::clone(&stop));
        // Bounded by the stop flag, and by 60 s in case the test body panics first.
        let accept = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (s, st) = (Arc::clone(&s), Arc::clone(&st));
                        conns.push(std::thread::spawn(move || serve(c, answer, &s, &st)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            st.store(true, Ordering::Relaxed);
            for c in conns {
                let _ = c.join();
            }
        });
        Server {
            addr,
            served,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

fn serve(mut c: TcpStream, answer: Answer, served: &AtomicU64, stop: &AtomicBool) {
    c.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    c.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match c.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue, // read timeout: check the stop flag
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            served.fetch_add(1, Ordering::Relaxed);
            let resp: &[u8] = match answer {
                Answer::Ok => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                Answer::ServiceUnavailable => {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                }
                Answer::OkThenClose => {
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
                }
            };
            if c.write_all(resp).is_err() {
                return;
            }
            if matches!(answer, Answer::OkThenClose) {
                return;
            }
        }
    }
}

fn spec(addr: SocketAddr, connections: usize, mode: Mode) -> LoadSpec {
    LoadSpec {
        addr,
        request: b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n".to_vec(),
        connections,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(800),
        mode,
    }
}

#[test]
fn closed_loop_counts_every_response_and_one_latency_each() {
    let server = Server::start(Answer::Ok);
    let stop = AtomicBool::new(false);
    let mut edges = Vec::new();
    let r = loadgen::run(&spec(server.addr, 4, Mode::Closed), &stop, &mut |e| {
        edges.push(e)
    })
    .expect("run");
    assert_eq!(edges, vec![Edge::Start, Edge::End]);
    assert!(r.ok > 0, "no requests completed");
    assert_eq!(r.errors(), 0);
    assert_eq!(r.latency_ns.len(), r.ok);
    // The server saw at least what we counted (warm-up requests come on top).
    assert!(server.served.load(Ordering::Relaxed) >= r.ok);
    let h = &r.latency_ns;
    assert!(h.min() >= 1 && h.value_at_quantile(0.5) <= h.value_at_quantile(0.99));
    assert!(h.value_at_quantile(0.99) <= h.max());
    assert!(r.rps() > 0.0 && r.elapsed > Duration::ZERO);
}

#[test]
fn open_loop_never_sends_faster_than_the_schedule() {
    let server = Server::start(Answer::Ok);
    let stop = AtomicBool::new(false);
    let rate = 200.0;
    let s = spec(server.addr, 4, Mode::Open { rate });
    let r = loadgen::run(&s, &stop, &mut |_| {}).expect("run");
    assert!(r.ok > 0, "no requests completed");
    assert_eq!(r.errors(), 0);
    // Upper bound only (a slow machine sends fewer, never more): the whole run's schedule
    // plus one request per connection that may have started at time zero.
    let scheduled = rate * (s.warmup + s.duration).as_secs_f64() + s.connections as f64;
    let served = server.served.load(Ordering::Relaxed) as f64;
    assert!(
        served <= scheduled * 1.05,
        "served {served} > scheduled {scheduled}"
    );
    assert_eq!(r.latency_ns.len(), r.ok);
}

#[test]
fn non_2xx_answers_are_errors_not_latencies() {
    let server = Server::start(Answer::ServiceUnavailable);
    let stop = AtomicBool::new(false);
    let r = loadgen::run(&spec(server.addr, 2, Mode::Closed), &stop, &mut |_| {}).expect("run");
    assert_eq!(r.ok, 0);
    assert!(r.status_errors > 0);
    assert_eq!(r.latency_ns.len(), 0);
}

#[test]
fn connection_close_is_followed_by_a_reconnect_not_an_error() {
    let server = Server::start(Answer::OkThenClose);
    let stop = AtomicBool::new(false);
    let r = loadgen::run(&spec(server.addr, 2, Mode::Closed), &stop, &mut |_| {}).expect("run");
    assert!(r.ok > 1, "only {} responses", r.ok);
    assert_eq!(r.io_errors, 0);
    assert!(
        r.reconnects >= r.ok - 2,
        "{} reconnects for {} responses",
        r.reconnects,
        r.ok
    );
}

#[test]
fn stop_flag_ends_the_run_early() {
    let server = Server::start(Answer::Ok);
    let stop = AtomicBool::new(true);
    let mut s = spec(server.addr, 1, Mode::Closed);
    s.duration = Duration::from_secs(3600);
    let r = loadgen::run(&s, &stop, &mut |_| {}).expect("run");
    assert_eq!(r.ok, 0);
}
