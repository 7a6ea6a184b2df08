//! Relay cost, measured: 2 GiB through one relay connection, client ->
//! upstream, with splice (default and 256 KiB pipes) and with copy. Prints
//! the relay thread's CPU seconds per GB (getrusage RUSAGE_THREAD around the
//! relay) and Gbit/s. Ignored by default; run in release:
//!
//!   cargo test --release --test passthrough_bench -- --ignored --nocapture
//!
//! The client and the sink are plain threads on the same 2-core machine, so
//! Gbit/s is bounded by them as much as by the relay; CPU/GB is the number
//! to compare.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use egressd::proxy::{relay, PipePool, RelayEnd, RelayOptions};
use egressd::sys::cpu::thread_cpu_time;
use glommio::{LocalExecutorBuilder, Placement};

const TOTAL: u64 = 2 << 30;
const BOUND: Duration = Duration::from_secs(300);

struct Run {
    cpu: Duration,
    wall: Duration,
    bytes: u64,
}

fn one_run(splice: bool, pipe_size: Option<usize>) -> Run {
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let sink = thread::spawn(move || {
        let (mut s, _) = sink.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n as u64,
            }
        }
    });
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let (out_tx, out_rx) = mpsc::channel();
    let relay_thread = thread::Builder::new().name("relay".into());
    relay_thread
        .spawn(move || {
            let ex = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .unwrap();
            ex.run(async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let down = listener.accept().await.unwrap();
                let up = glommio::net::TcpStream::connect(sink_addr).await.unwrap();
                let pool = PipePool::new(4, pipe_size);
                let opts = RelayOptions {
                    idle_timeout: Duration::from_secs(60),
                    splice,
                };
                let (cpu0, t0) = (thread_cpu_time().unwrap(), Instant::now());
                let outcome = relay(down, up, &[], &opts, &pool).await;
                let run = Run {
                    cpu: thread_cpu_time().unwrap() - cpu0,
                    wall: t0.elapsed(),
                    bytes: outcome.bytes_from_downstream,
                };
                assert!(
                    matches!(outcome.end, RelayEnd::Closed { .. }),
                    "{:?}",
                    outcome.end
                );
                let _ = out_tx.send(run);
            });
        })
        .unwrap();
    let mut client = TcpStream::connect(addr_rx.recv_timeout(BOUND).unwrap()).unwrap();
    let buf = vec![0x5au8; 256 * 1024];
    let mut sent = 0u64;
    while sent < TOTAL {
        client.write_all(&buf).unwrap();
        sent += buf.len() as u64;
    }
    client.shutdown(Shutdown::Write).unwrap();
    let run = out_rx.recv_timeout(BOUND).unwrap();
    assert_eq!(sink.join().unwrap(), TOTAL);
    run
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn relay_cpu_per_gigabyte() {
    let modes = [
        ("splice 64K pipe", true, None),
        ("splice 256K pipe", true, Some(256 * 1024)),
        ("copy 64K buffer", false, None),
    ];
    // EGRESSD_BENCH_ONLY=splice (a substring of the names) runs one mode,
    // e.g. under `perf record`.
    let only = std::env::var("EGRESSD_BENCH_ONLY").unwrap_or_default();
    for round in 0..3 {
        for (name, splice, pipe) in modes.into_iter().filter(|m| m.0.contains(&only)) {
            let r = one_run(splice, pipe);
            let gb = r.bytes as f64 / 1e9;
            println!(
                "round {round} {name:18} {:.3} CPU-s/GB  {:.2} Gbit/s  ({} bytes, cpu {:?}, wall {:?})",
                r.cpu.as_secs_f64() / gb,
                r.bytes as f64 * 8.0 / 1e9 / r.wall.as_secs_f64(),
                r.bytes,
                r.cpu,
                r.wall
            );
        }
    }
}
