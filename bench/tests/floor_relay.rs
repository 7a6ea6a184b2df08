//! `floor-relay`, the bench's reference relay, on loopback: bytes arrive intact both ways,
//! a half-close is passed on, and an answer that comes with the origin's FIN is not lost.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The relay process, killed when the test ends however it ends.
struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(origin: SocketAddr) -> Relay {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(env!("CARGO_BIN_EXE_floor-relay"))
        .arg(addr.to_string())
        .arg(origin.to_string())
        .spawn()
        .expect("spawn floor-relay");
    let relay = Relay { child, addr };
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < until,
            "floor-relay never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    relay
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// An origin that serves one connection, after the relay's readiness probe: reads to EOF,
/// then writes `answer` and closes. Returns what it read.
fn origin(answer: Vec<u8>, read_to_eof: bool) -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    let handle = std::thread::spawn(move || loop {
        let (mut c, _) = l.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        if read_to_eof {
            c.read_to_end(&mut got).expect("origin read");
        } else {
            let mut b = [0u8; 64];
            let n = c.read(&mut b).unwrap_or(0);
            got.extend_from_slice(&b[..n]);
        }
        // The readiness probe connects and closes without a byte: not the test's.
        if got.is_empty() {
            continue;
        }
        c.write_all(&answer).expect("origin write");
        return got;
    });
    (addr, handle)
}

#[test]
fn bulk_both_ways_with_half_close() {
    let up = pattern(5 << 20, 0x5a);
    let down = pattern(3 << 20, 0xa5);
    let (origin_addr, origin) = origin(down.clone(), true);
    let relay = start_relay(origin_addr);
    let mut c = TcpStream::connect(relay.addr).expect("connect relay");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut w = c.try_clone().unwrap();
        let up = up.clone();
        std::thread::spawn(move || {
            w.write_all(&up).expect("client write");
            w.shutdown(Shutdown::Write).expect("half-close");
        })
    };
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("client read");
    writer.join().unwrap();
    assert!(
        got == down,
        "client got {} of {} bytes",
        got.len(),
        down.len()
    );
    let at_origin = origin.join().unwrap();
    assert!(
        at_origin == up,
        "origin got {} of {}",
        at_origin.len(),
        up.len()
    );
}

#[test]
fn an_answer_sent_with_the_fin_arrives_before_eof() {
    let (origin_addr, origin) = origin(b"k".to_vec(), false);
    let relay = start_relay(origin_addr);
    let mut c = TcpStream::connect(relay.addr).expect("connect relay");
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"hello").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("EOF after the answer");
    assert_eq!(got, b"k");
    assert_eq!(origin.join().unwrap(), b"hello");
}
