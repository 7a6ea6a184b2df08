//! The passthrough relay between real loopback sockets: bulk both ways with
//! half-close, replay first, idle timeout, upstream reset; splice and copy.
//!
//! Topology per test: client (std threads) -> relay (a glommio executor on
//! its own thread) -> upstream (std threads). Every wait is bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use egressd::proxy::{relay, PipePool, RelayEnd, RelayOptions, RelayOutcome, Side};
use glommio::{LocalExecutorBuilder, Placement};
use sha2::{Digest, Sha256};

const BOUND: Duration = Duration::from_secs(120);
const CHUNK: usize = 64 * 1024;

/// Starts a relay for one connection on a fresh executor thread: accepts on
/// the returned address, connects to `upstream`, relays, sends the outcome
/// and how many pipes the shard's pool holds afterwards.
fn start_relay(
    upstream: SocketAddr,
    replay: Vec<u8>,
    opts: RelayOptions,
) -> (SocketAddr, mpsc::Receiver<(RelayOutcome, usize)>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel();
    thread::spawn(move || {
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .unwrap();
        ex.run(async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let down = listener.accept().await.unwrap();
            let up = glommio::net::TcpStream::connect(upstream).await.unwrap();
            let pool = PipePool::new(4, None);
            let outcome = relay(down, up, &replay, &opts, &pool).await;
            let _ = out_tx.send((outcome, pool.idle()));
        });
    });
    (addr_rx.recv_timeout(BOUND).unwrap(), out_rx)
}

/// A deterministic byte stream: chunk `i` is a seeded pattern stamped with
/// `i`, so reordering or loss shows up in the hash. Cheap to generate.
fn stream_chunk(seed: u8, i: u64, buf: &mut [u8]) {
    for (j, b) in buf.iter_mut().enumerate() {
        *b = (j as u8).wrapping_mul(31).wrapping_add(seed);
    }
    buf[..8].copy_from_slice(&i.to_le_bytes());
}

/// Sends `total` bytes of the seeded stream, then shuts down the write side.
/// Returns the stream's sha256.
fn send_stream(mut s: TcpStream, seed: u8, total: usize) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0;
    let mut i = 0u64;
    while sent < total {
        let n = CHUNK.min(total - sent);
        stream_chunk(seed, i, &mut buf[..n]);
        s.write_all(&buf[..n]).unwrap();
        hash.update(&buf[..n]);
        sent += n;
        i += 1;
    }
    s.shutdown(Shutdown::Write).unwrap();
    hash.finalize().into()
}

/// Reads until EOF; returns (bytes, sha256).
fn receive_all(mut s: TcpStream) -> (usize, [u8; 32]) {
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).expect("read within the bound");
        if n == 0 {
            return (total, hash.finalize().into());
        }
        hash.update(&buf[..n]);
        total += n;
    }
}

fn bulk_both_ways(splice: bool) {
    const TOTAL: usize = 256 << 20;
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        let w = s.try_clone().unwrap();
        let sender = thread::spawn(move || send_stream(w, 2, TOTAL));
        let received = receive_all(s);
        (received, sender.join().unwrap())
    });
    let opts = RelayOptions {
        idle_timeout: Duration::from_secs(60),
        splice,
    };
    let (addr, outcome) = start_relay(up_addr, Vec::new(), opts);

    let client = TcpStream::connect(addr).unwrap();
    let r = client.try_clone().unwrap();
    let reader = thread::spawn(move || receive_all(r));
    // The client half-closes after sending and must still get everything.
    let client_sent = send_stream(client, 1, TOTAL);
    let client_received = reader.join().unwrap();
    let (server_received, server_sent) = server.join().unwrap();

    assert_eq!(
        server_received,
        (TOTAL, client_sent),
        "client -> upstream intact"
    );
    assert_eq!(
        client_received,
        (TOTAL, server_sent),
        "upstream -> client intact"
    );
    let (outcome, idle_pipes) = outcome.recv_timeout(BOUND).unwrap();
    assert!(
        matches!(outcome.end, RelayEnd::Closed { .. }),
        "{:?}",
        outcome.end
    );
    assert_eq!(outcome.bytes_from_downstream, TOTAL as u64);
    assert_eq!(outcome.bytes_from_upstream, TOTAL as u64);
    // A direction moves its first small reads through the shard's scratch
    // buffer and splices once the transfer shows it is bulk: nearly every
    // byte of these 256 MiB goes through a pipe, none in copy mode.
    if splice {
        assert!(
            outcome.bytes_spliced > 2 * TOTAL as u64 * 9 / 10,
            "{}",
            outcome.bytes_spliced
        );
    } else {
        assert_eq!(outcome.bytes_spliced, 0);
    }
    // Both pipes came back empty and were pooled for the next connection.
    assert_eq!(idle_pipes, if splice { 2 } else { 0 });
}

#[test]
fn bulk_both_ways_at_once_with_half_close_arrives_intact_spliced() {
    bulk_both_ways(true);
}

#[test]
fn bulk_both_ways_at_once_with_half_close_arrives_intact_copied() {
    bulk_both_ways(false);
}

fn replay_first(splice: bool) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let mut s = s;
        s.set_read_timeout(Some(BOUND)).unwrap();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let replay = b"\x16\x03\x01peeked-hello|".to_vec();
    let opts = RelayOptions {
        idle_timeout: Duration::from_secs(60),
        splice,
    };
    let (addr, outcome) = start_relay(up_addr, replay.clone(), opts);
    let client = TcpStream::connect(addr).unwrap();
    // Upstream half-closed at once: the client sees that EOF passed through,
    // then still sends on its own half, which must follow the replay.
    let (n, _) = receive_all(client.try_clone().unwrap());
    assert_eq!(n, 0);
    let mut client = client;
    client.write_all(b"after").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), b"\x16\x03\x01peeked-hello|after");
    let (outcome, idle_pipes) = outcome.recv_timeout(BOUND).unwrap();
    assert_eq!(outcome.bytes_from_downstream, (replay.len() + 5) as u64);
    // Five bytes are no bulk transfer: they went through the shard's scratch
    // buffer, and no pipe was taken.
    assert_eq!(idle_pipes, 0);
    assert!(
        matches!(
            outcome.end,
            RelayEnd::Closed {
                first: Side::Upstream
            }
        ),
        "{:?}",
        outcome.end
    );
}

#[test]
fn replayed_bytes_reach_upstream_before_anything_else_spliced() {
    replay_first(true);
}

#[test]
fn replayed_bytes_reach_upstream_before_anything_else_copied() {
    replay_first(false);
}

#[test]
fn idle_connection_is_ended_by_the_idle_timeout() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        receive_all(s)
    });
    let opts = RelayOptions {
        idle_timeout: Duration::from_millis(300),
        splice: true,
    };
    let (addr, outcome) = start_relay(up_addr, Vec::new(), opts);
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"one message, then silence").unwrap();
    let (outcome, idle_pipes) = outcome.recv_timeout(BOUND).unwrap();
    assert!(
        matches!(outcome.end, RelayEnd::IdleTimeout),
        "{:?}",
        outcome.end
    );
    assert_eq!(
        idle_pipes, 0,
        "25 bytes are no bulk transfer: they take no pipe"
    );
    // Both sides were closed by the relay.
    assert_eq!(server.join().unwrap().0, 25);
    assert_eq!(receive_all(client).0, 0);
}

fn upstream_reset(splice: bool) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"partial answer").unwrap();
        // SO_LINGER 0: close sends RST instead of FIN.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let opts = RelayOptions {
        idle_timeout: Duration::from_secs(60),
        splice,
    };
    let (addr, outcome) = start_relay(up_addr, Vec::new(), opts);
    let client = TcpStream::connect(addr).unwrap();
    let mut w = client.try_clone().unwrap();
    let writer = thread::spawn(move || {
        // Keeps sending until the relay gives up on the connection.
        let buf = vec![7u8; CHUNK];
        for _ in 0..4096 {
            if w.write_all(&buf).is_err() {
                return;
            }
        }
    });
    server.join().unwrap();
    let (outcome, _) = outcome.recv_timeout(BOUND).unwrap();
    assert!(
        matches!(
            outcome.end,
            RelayEnd::Error {
                side: Side::Upstream,
                ..
            }
        ),
        "{:?}",
        outcome.end
    );
    // The client's connection is closed (EOF or reset), not left hanging.
    let mut client = client;
    client.set_read_timeout(Some(BOUND)).unwrap();
    let mut sink = Vec::new();
    let _ = client.read_to_end(&mut sink);
    writer.join().unwrap();
}

#[test]
fn upstream_reset_mid_stream_ends_the_relay_spliced() {
    upstream_reset(true);
}

#[test]
fn upstream_reset_mid_stream_ends_the_relay_copied() {
    upstream_reset(false);
}
