//! A small authoritative DNS responder on 127.0.0.1:0 (UDP) for tests: answers A and AAAA
//! questions from a table the test changes while it runs, with a chosen TTL, and answers
//! SERVFAIL on demand. Unknown names get NXDOMAIN. Counts the queries it saw per name.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Table {
    answers: HashMap<String, Vec<IpAddr>>,
    ttl: u32,
    servfail: bool,
    queries: HashMap<String, usize>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    pub fn start(ttl: u32) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let table = Arc::new(Mutex::new(Table {
            ttl,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (table.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &mut t.lock().unwrap()) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsServer { addr, table, stop }
    }

    /// Sets the addresses `name` resolves to (A for v4, AAAA for v6).
    pub fn set(&self, name: &str, addrs: &[IpAddr]) {
        let mut t = self.table.lock().unwrap();
        t.answers.insert(name.to_ascii_lowercase(), addrs.to_vec());
    }

    pub fn set_servfail(&self, on: bool) {
        self.table.lock().unwrap().servfail = on;
    }

    pub fn queries(&self, name: &str) -> usize {
        let t = self.table.lock().unwrap();
        t.queries
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Builds the reply to one query: header, the question echoed, then the answers.
fn answer(q: &[u8], t: &mut Table) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    // The question: labels up to the root, then QTYPE and QCLASS.
    let mut i = 12;
    let mut labels = Vec::new();
    while *q.get(i)? != 0 {
        let len = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_ascii_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let question_end = i + 5;
    let name = labels.join(".");
    *t.queries.entry(name.clone()).or_default() += 1;
    let known = t.answers.get(&name);
    let rcode = match (t.servfail, known) {
        (true, _) => 2,
        (false, None) => 3,
        (false, Some(_)) => 0,
    };
    let records: Vec<&IpAddr> = match (rcode, known) {
        (0, Some(addrs)) => addrs
            .iter()
            .filter(|a| matches!((a, qtype), (IpAddr::V4(_), 1) | (IpAddr::V6(_), 28)))
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q[0..2]); // id
    out.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    out.push(0x80 | rcode); // RA, RCODE
    out.extend_from_slice(&[0, 1]); // QDCOUNT
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    out.extend_from_slice(&q[12..question_end]);
    for addr in records {
        out.extend_from_slice(&[0xc0, 12]); // pointer to the question's name
        let (rtype, data): (u16, Vec<u8>) = match addr {
            IpAddr::V4(a) => (1, a.octets().to_vec()),
            IpAddr::V6(a) => (28, a.octets().to_vec()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]); // IN
        out.extend_from_slice(&t.ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}
