//! Hand-made HTTP/2 frames for tests that must send what no well-behaved client sends
//! (floods, resets), and a reader that looks for the gateway's GOAWAY.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET http://<authority>/`: static-table indices plus one literal.
pub fn get_block(authority: &str) -> Vec<u8> {
    assert!(authority.len() < 127);
    let mut b = vec![0x82, 0x86, 0x84, 0x41, authority.len() as u8];
    b.extend_from_slice(authority.as_bytes());
    b
}

/// A connection that has sent the preface and an empty SETTINGS frame.
pub fn open(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(PREFACE).unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    s
}

/// Reads frames until a GOAWAY (its error code) or the end of the stream (None).
pub fn read_goaway(s: &mut TcpStream) -> Option<u32> {
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).ok()?;
        if head[3] == GOAWAY && len >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
    }
}
