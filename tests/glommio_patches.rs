//! The vendored glommio's changes (`vendor/glommio/EGRESSD-PATCH.md`) over real loopback
//! sockets:
//! - change 5, through `UpstreamStream::write_all_batched`: the request write that joins
//!   the shard's next io_uring submission batch (an io_uring SEND owning a copy of the
//!   bytes) instead of a `send` syscall made at once;
//! - change 7: `recvmsg` sources hold their message header and peer address in a box.
//!   egressd itself sends no datagrams, so this is the one check of that path;
//! - change 10: a stream's reads wait on one multishot readiness poll kept for its life.
//!
//! Topology per test: peers are std threads or sockets on the same executor; each glommio
//! executor runs on its own thread. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use egressd::tls::stream::UpstreamStream;
use glommio::{LocalExecutorBuilder, Placement};
use sha2::{Digest, Sha256};

const BOUND: Duration = Duration::from_secs(60);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Accepts one connection and reads it to EOF in small, slow reads (so the writer meets
/// full socket buffers); returns the sha256 of what arrived.
fn slow_reader(listener: TcpListener) -> thread::JoinHandle<(usize, [u8; 32])> {
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        let mut hash = Sha256::new();
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        let mut reads = 0u32;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return (total, hash.finalize().into());
            }
            hash.update(&buf[..n]);
            total += n;
            reads += 1;
            if reads % 64 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
    })
}

/// Runs `f` on a fresh single-thread glommio executor and returns its result.
fn on_executor<T: Send + 'static, F, Fut>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .unwrap();
        let _ = tx.send(ex.run(f()));
    });
    rx.recv_timeout(BOUND).expect("executor finished in time")
}

async fn connect(addr: SocketAddr) -> UpstreamStream {
    UpstreamStream::Plain(glommio::net::TcpStream::connect(addr).await.unwrap())
}

#[test]
fn a_batched_write_larger_than_the_socket_buffers_arrives_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = slow_reader(listener);
    let payload = pattern(8 << 20, 7);
    let expected: [u8; 32] = Sha256::digest(&payload).into();
    let written = on_executor(move || async move {
        let mut up = connect(addr).await;
        let result = up.write_all_batched(&payload).await.map(|()| payload.len());
        drop(up);
        result.unwrap()
    });
    assert_eq!(written, 8 << 20);
    assert_eq!(reader.join().unwrap(), (8 << 20, expected));
}

#[test]
fn batched_writes_from_many_tasks_in_one_turn_each_reach_their_own_peer_intact() {
    const CONNS: usize = 48;
    let mut readers = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..CONNS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.push(listener.local_addr().unwrap());
        readers.push(slow_reader(listener));
    }
    // Sizes from one byte to past a socket buffer, so some sends finish in the batch and
    // some wait in the kernel for room.
    let sizes: Vec<usize> = (0..CONNS).map(|i| 1 + i * i * 1500).collect();
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, i as u8))
        .collect();
    let expected: Vec<(usize, [u8; 32])> = payloads
        .iter()
        .map(|p| (p.len(), Sha256::digest(p).into()))
        .collect();
    on_executor(move || async move {
        let mut streams = Vec::new();
        for addr in addrs {
            streams.push(connect(addr).await);
        }
        // All tasks queue their send before the executor's next submission.
        let tasks: Vec<_> = streams
            .into_iter()
            .zip(payloads)
            .map(|(mut up, payload)| {
                glommio::spawn_local(async move { up.write_all_batched(&payload).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    for (reader, want) in readers.into_iter().zip(expected) {
        assert_eq!(reader.join().unwrap(), want);
    }
}

#[test]
fn a_batched_write_to_a_peer_that_reset_the_connection_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (reset_tx, reset_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let peer = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        // Linger 0: close sends RST; on loopback it has arrived when close returns.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        go_rx.recv_timeout(BOUND).unwrap();
        drop(s);
        reset_tx.send(()).unwrap();
    });
    let result = on_executor(move || async move {
        let mut up = connect(addr).await;
        go_tx.send(()).unwrap();
        reset_rx.recv_timeout(BOUND).unwrap();
        up.write_all_batched(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .map_err(|e| e.kind())
    });
    peer.join().unwrap();
    let err = result.expect_err("a write to a reset connection must fail");
    assert!(
        matches!(
            err,
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{err:?}"
    );
}

/// rustls server config for `localhost` with a fresh self-signed certificate; returns it
/// with the client config that trusts that certificate.
fn tls_configs() -> (
    std::sync::Arc<rustls::ServerConfig>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    use std::sync::Arc;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    // No session tickets: the writer never reads, and unread bytes would make its close a RST.
    server.send_tls13_tickets = 0;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[test]
fn a_batched_tls_write_past_the_session_buffer_limit_arrives_whole_and_decrypts() {
    let (server_cfg, client_cfg) = tls_configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server decrypts to EOF (close_notify or TCP close), slowly enough that sends wait.
    let reader = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(BOUND)).unwrap();
        let conn = rustls::ServerConnection::new(server_cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut hash = Sha256::new();
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hash.update(&buf[..n]);
                    total += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("server read: {e}"),
            }
        }
        (total, <[u8; 32]>::from(hash.finalize()))
    });
    // Several times rustls' default 64 KiB buffer limit, so the write goes round its loop.
    let payload = pattern(3 << 20, 3);
    let expected: [u8; 32] = Sha256::digest(&payload).into();
    on_executor(move || async move {
        let tcp = glommio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = futures_rustls::TlsConnector::from(client_cfg)
            .connect(name, tcp)
            .await
            .unwrap();
        let mut up = UpstreamStream::Tls(Box::new(tls));
        up.write_all_batched(&payload).await.unwrap();
        futures_lite::AsyncWriteExt::close(&mut up).await.unwrap();
    });
    assert_eq!(reader.join().unwrap(), (3 << 20, expected));
}

#[test]
fn a_datagram_received_through_the_ring_keeps_its_bytes_and_sender() {
    let (got, from, sender) = on_executor(|| async {
        let receiver = glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = glommio::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        // The receive starts first and finds nothing, so it goes to the ring as a
        // `recvmsg` source; the send then completes it.
        let pending = glommio::spawn_local(async move {
            let mut buf = [0u8; 64];
            let (n, from) = receiver.recv_from(&mut buf).await.unwrap();
            (buf[..n].to_vec(), from)
        });
        futures_lite::future::yield_now().await;
        sender.send_to(b"egressd datagram", to).await.unwrap();
        let (got, from) = pending.await;
        (got, from, sender.local_addr().unwrap())
    });
    assert_eq!(got, b"egressd datagram");
    assert_eq!(from, sender);
}

/// Reads from a glommio stream until `len` bytes came, in reads of `chunk` bytes.
async fn read_exactly(stream: &mut glommio::net::TcpStream, len: usize, chunk: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(len);
    let mut buf = vec![0u8; chunk];
    while got.len() < len {
        let n = futures_lite::AsyncReadExt::read(stream, &mut buf)
            .await
            .unwrap();
        assert!(n > 0, "EOF after {} of {len} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn reads_smaller_than_what_arrived_get_the_rest_without_waiting_for_more() {
    // A read that fills its buffer may leave bytes behind. The multishot poll, armed by the
    // earlier read that drained the socket, completes when the bulk arrives but not again
    // for the bytes left: the reads after it must not wait for a completion. The peer sends
    // nothing more until everything was read, so a read that waited would never end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bulk = pattern(200 * 1024, 7);
    let expected = bulk.clone();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        s.write_all(b"hello").unwrap();
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).unwrap();
        s.write_all(&bulk).unwrap();
        // Holds the connection open, silent, until the reader is done.
        done_rx.recv_timeout(BOUND).unwrap();
    });
    let got = on_executor(move || async move {
        let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_exactly(&mut stream, 5, 64).await, b"hello");
        futures_lite::AsyncWriteExt::write_all(&mut stream, b"k")
            .await
            .unwrap();
        // Lets the whole bulk arrive before the first small read.
        glommio::timer::sleep(Duration::from_millis(50)).await;
        read_exactly(&mut stream, 200 * 1024, 1000).await
    });
    done_tx.send(()).unwrap();
    peer.join().unwrap();
    assert!(got == expected, "bytes differ");
}

#[test]
fn each_of_many_request_and_reply_rounds_wakes_the_waiting_read() {
    // One stream, one poll armed for its life: every round's read finds the socket empty,
    // waits, and must be woken by a later completion of that same poll.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            // A pause now and then, so that some reads wait longer than a turn.
            if buf[0] % 16 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let rounds = on_executor(move || async move {
        let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
        let mut rounds = 0u32;
        for i in 0..2000u32 {
            let msg = i.to_be_bytes();
            futures_lite::AsyncWriteExt::write_all(&mut stream, &msg)
                .await
                .unwrap();
            assert_eq!(read_exactly(&mut stream, 4, 64).await, msg);
            rounds += 1;
        }
        rounds
    });
    echo.join().unwrap();
    assert_eq!(rounds, 2000);
}

#[test]
fn dropping_a_stream_whose_read_poll_is_armed_closes_its_socket() {
    // An armed poll holds a reference to the socket's file: closing the descriptor alone
    // would leave the connection open. Dropping the stream cancels the poll, and the peer
    // sees EOF.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (eof_tx, eof_rx) = mpsc::channel::<usize>();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        s.write_all(b"x").unwrap();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).unwrap();
        eof_tx.send(n).unwrap();
    });
    let saw_eof = on_executor(move || async move {
        let mut stream = glommio::net::TcpStream::connect(addr).await.unwrap();
        // Drains the socket: a poll is queued for the next read, and the sleep lets the
        // executor submit it.
        assert_eq!(read_exactly(&mut stream, 1, 64).await, b"x");
        glommio::timer::sleep(Duration::from_millis(20)).await;
        drop(stream);
        // The executor keeps turning (and so submits the cancellation) while the peer
        // waits for EOF.
        let deadline = std::time::Instant::now() + BOUND;
        while std::time::Instant::now() < deadline {
            if let Ok(n) = eof_rx.try_recv() {
                return Some(n);
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        None
    });
    peer.join().unwrap();
    assert_eq!(saw_eof, Some(0), "the peer saw EOF with nothing more sent");
}
