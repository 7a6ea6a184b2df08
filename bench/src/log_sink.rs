//! A syslog-over-TCP sink for haproxy's access log in the `http-logged` scenario: haproxy
//! has no buffered log file, so its efficient path is a `ring` forwarded over TCP. The sink
//! reads and discards, on threads of the bench (the load generator's CPU), and counts the
//! bytes so a run can show that haproxy really logged.
//!
//! Started once per process; its threads end with it.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::BenchError;

static SINK: OnceLock<SocketAddr> = OnceLock::new();
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// The sink's loopback address, starting it on first use.
pub fn address() -> Result<SocketAddr, BenchError> {
    if let Some(addr) = SINK.get() {
        return Ok(*addr);
    }
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind log sink", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::io("log sink address", e))?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    RECEIVED.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(*SINK.get_or_init(|| addr))
}

/// Log bytes received so far.
pub fn received() -> u64 {
    RECEIVED.load(Ordering::Relaxed)
}
