//! `peek_sni` on real loopback sockets: hellos arriving in pieces, slow or
//! silent clients, non-TLS clients, early close, oversized hellos. The bytes
//! left in the buffer must be exactly what the client sent (replay).

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use egressd::detect::{peek_sni, Peek, PeekError, DEFAULT_PEEK_CAP};
use glommio::{LocalExecutorBuilder, Placement};

const PADDED: &[u8] = include_bytes!("../src/detect/testdata/rustls_padded.bin");
const PQ: &[u8] = include_bytes!("../src/detect/testdata/rustls_x25519mlkem768.bin");
const BOUND: Duration = Duration::from_secs(60);

/// Runs `client` against a one-connection peek server; returns the peek's
/// result and the buffered bytes.
fn peek_with(
    cap: usize,
    deadline: Duration,
    client: impl FnOnce(TcpStream) + Send + 'static,
) -> (Result<Peek, PeekError>, Vec<u8>) {
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
            let mut stream = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let verdict = peek_sni(&mut stream, &mut buf, cap, deadline).await;
            let _ = out_tx.send((verdict, buf));
        });
    });
    let addr = addr_rx.recv_timeout(BOUND).unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let client = thread::spawn(move || client(stream));
    let out = out_rx.recv_timeout(BOUND).unwrap();
    client.join().unwrap();
    out
}

/// Sends `bytes` cut at `cuts`, pausing between pieces so they arrive as
/// separate segments and separate reads.
fn send_in_pieces(mut s: &TcpStream, bytes: &[u8], cuts: &[usize]) {
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        s.write_all(&bytes[start..end]).unwrap();
        start = end;
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hello_in_pieces_gives_sni_and_keeps_every_byte() {
    let (verdict, buf) = peek_with(DEFAULT_PEEK_CAP, BOUND, |s| {
        send_in_pieces(&s, PQ, &[1, 5, 6, 700, 1400]);
        thread::sleep(Duration::from_millis(50));
    });
    assert_eq!(verdict.unwrap(), Peek::Sni("pq.example.net".into()));
    assert_eq!(buf, PQ);
}

#[test]
fn bytes_after_the_hello_are_kept_for_replay() {
    let mut sent = PADDED.to_vec();
    sent.extend_from_slice(b"\x17\x03\x03\x00\x03abc");
    let expect = sent.clone();
    let (verdict, buf) = peek_with(DEFAULT_PEEK_CAP, BOUND, move |mut s| {
        s.write_all(&sent).unwrap();
        thread::sleep(Duration::from_millis(50));
    });
    assert_eq!(verdict.unwrap(), Peek::Sni("big.example.org".into()));
    // The hello and what came with it in the same read: all of it replays.
    assert!(expect.starts_with(&buf) && buf.len() >= PADDED.len());
}

#[test]
fn silent_client_times_out_with_what_it_sent_buffered() {
    let (verdict, buf) = peek_with(DEFAULT_PEEK_CAP, Duration::from_millis(200), |mut s| {
        s.write_all(&PQ[..300]).unwrap();
        // Hold the connection open past the deadline.
        thread::sleep(Duration::from_millis(600));
    });
    assert!(
        matches!(verdict, Err(PeekError::TimedOut(_))),
        "{verdict:?}"
    );
    assert_eq!(buf, &PQ[..300]);
}

#[test]
fn plain_http_client_is_not_tls() {
    let (verdict, buf) = peek_with(DEFAULT_PEEK_CAP, BOUND, |mut s| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(50));
    });
    assert_eq!(verdict.unwrap(), Peek::NotTls);
    assert!(buf.starts_with(b"GET"));
}

#[test]
fn client_closing_mid_hello_is_reported_with_the_byte_count() {
    let (verdict, buf) = peek_with(DEFAULT_PEEK_CAP, BOUND, |s| {
        send_in_pieces(&s, &PQ[..100], &[10]);
        s.shutdown(Shutdown::Write).unwrap();
        thread::sleep(Duration::from_millis(50));
    });
    assert!(
        matches!(verdict, Err(PeekError::Closed(100))),
        "{verdict:?}"
    );
    assert_eq!(buf, &PQ[..100]);
}

#[test]
fn hello_over_the_cap_is_too_large() {
    let (verdict, buf) = peek_with(1024, BOUND, |s| {
        send_in_pieces(&s, PADDED, &[3, 600]);
        thread::sleep(Duration::from_millis(50));
    });
    assert_eq!(verdict.unwrap(), Peek::TooLarge);
    assert!(buf.len() <= 1024);
}
