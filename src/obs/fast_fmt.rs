//! Allocation-free, `core::fmt`-free rendering of the numbers and addresses every request
//! and every access-log line prints: into a small stack buffer (`Text`), or appended to a
//! byte buffer (`push_*`, what the access-log writer uses: no UTF-8 re-validation of
//! ASCII it just wrote). Measured with callgrind: `SocketAddr`'s `Display` cost about
//! 1,300 instructions a call and four run per log line; this costs a tenth of that.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// `"00".."99"`: two digits per division, as itoa does.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n` right-aligned into `buf`; returns where its first digit is.
fn digits_into(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    i
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut buf = [0u8; 20];
    let start = digits_into(n, &mut buf);
    out.extend_from_slice(&buf[start..]);
}

/// Appends `n` in decimal, zero-padded to `width` digits.
pub fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [0u8; 20];
    let start = digits_into(n, &mut buf);
    for _ in (buf.len() - start)..width {
        out.push(b'0');
    }
    out.extend_from_slice(&buf[start..]);
}

/// Writes `o` at `buf[i..]`; returns the end.
fn put_octet(buf: &mut [u8; 24], i: usize, o: u8) -> usize {
    let o = usize::from(o);
    if o >= 100 {
        let pair = (o % 100) * 2;
        buf[i] = b'0' + (o / 100) as u8;
        buf[i + 1..i + 3].copy_from_slice(&PAIRS[pair..pair + 2]);
        i + 3
    } else if o >= 10 {
        buf[i..i + 2].copy_from_slice(&PAIRS[o * 2..o * 2 + 2]);
        i + 2
    } else {
        buf[i] = b'0' + o as u8;
        i + 1
    }
}

/// Writes `n` at `buf[i..]`; returns the end.
fn put_u16(buf: &mut [u8; 24], i: usize, n: u16) -> usize {
    let len = match n {
        10_000.. => 5,
        1_000.. => 4,
        100.. => 3,
        10.. => 2,
        _ => 1,
    };
    let (end, mut j, mut n) = (i + len, i + len, usize::from(n));
    while n >= 100 {
        let pair = (n % 100) * 2;
        n /= 100;
        j -= 2;
        buf[j..j + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        buf[j - 2..j].copy_from_slice(&PAIRS[n * 2..n * 2 + 2]);
    } else {
        buf[j - 1] = b'0' + n as u8;
    }
    end
}

/// `a.b.c.d` (and `:port`) built on the stack and appended in one copy: four addresses
/// per access-log line made this the writer's largest cost after the frees.
fn push_v4(out: &mut Vec<u8>, ip: Ipv4Addr, port: Option<u16>) {
    let mut buf = [0u8; 24];
    let [a, b, c, d] = ip.octets();
    let mut i = put_octet(&mut buf, 0, a);
    for octet in [b, c, d] {
        buf[i] = b'.';
        i = put_octet(&mut buf, i + 1, octet);
    }
    if let Some(port) = port {
        buf[i] = b':';
        i = put_u16(&mut buf, i + 1, port);
    }
    out.extend_from_slice(&buf[..i]);
}

/// Appends an IP address as `Display` writes it.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => push_v4(out, v4, None),
        // Rare on this path: std's formatting handles the `::` compression.
        IpAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// Appends a socket address as `Display` writes it (`1.2.3.4:80`, `[::1]:80`).
pub fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => push_v4(out, *a.ip(), Some(a.port())),
        SocketAddr::V6(a) => {
            out.push(b'[');
            out.extend_from_slice(a.ip().to_string().as_bytes());
            out.extend_from_slice(b"]:");
            push_decimal(out, a.port().into());
        }
    }
}

/// Rendered ASCII text of at most 64 bytes (an IPv6 socket address fits).
pub struct Text {
    bytes: [u8; 64],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Text {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        if self.len < self.bytes.len() {
            self.bytes[self.len] = b;
            self.len += 1;
        }
    }

    fn extend(&mut self, s: &[u8]) {
        s.iter().for_each(|b| self.push(*b));
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    fn digits(&mut self, n: u64, width: usize) {
        let mut buf = [0u8; 20];
        let i = digits_into(n, &mut buf);
        for _ in (buf.len() - i)..width {
            self.push(b'0');
        }
        self.extend(&buf[i..]);
    }

    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    self.digits(octet.into(), 0);
                }
            }
            // Rare on this path: std's formatting handles the `::` compression.
            IpAddr::V6(v6) => self.extend(v6.to_string().as_bytes()),
        }
    }
}

/// `n` in decimal, zero-padded to `width` digits.
pub fn decimal(n: u64, width: usize) -> Text {
    let mut t = Text::new();
    t.digits(n, width);
    t
}

/// An IP address as `Display` writes it.
pub fn ip(ip: IpAddr) -> Text {
    let mut t = Text::new();
    t.ip(ip);
    t
}

/// A socket address as `Display` writes it (`1.2.3.4:80`, `[::1]:80`).
pub fn socket_addr(addr: SocketAddr) -> Text {
    let mut t = Text::new();
    if addr.is_ipv6() {
        t.push(b'[');
        t.ip(addr.ip());
        t.push(b']');
    } else {
        t.ip(addr.ip());
    }
    t.push(b':');
    t.digits(addr.port().into(), 0);
    t
}

/// The low `digits` hex digits of `n`, lower-case, zero-padded.
pub fn hex(n: u64, digits: u32) -> Text {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = Text::new();
    for shift in (0..digits).rev() {
        t.push(HEX[((n >> (shift * 4)) & 0xf) as usize]);
    }
    t
}

/// `"00".."ff"`: a byte's two lowercase hex digits, looked up at once.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    table
};

/// `hi`, `lo` (the UUID's first and last 64 bits) as a lowercase hyphenated UUID
/// (8-4-4-4-12 hex digits), written into place: a request id is made for every request that
/// arrives without one.
pub fn uuid(hi: u64, lo: u64) -> String {
    let mut out = [b'-'; 36];
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    // Where each byte's two digits go: the hyphens sit at 8, 13, 18 and 23.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (b, at) in bytes.iter().zip(AT) {
        out[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
    // Only ASCII is written.
    std::str::from_utf8(&out).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_hyphenated_lowercase_hex() {
        assert_eq!(
            uuid(0x0123_4567_89ab_4def, 0x8123_4567_89ab_cdef),
            "01234567-89ab-4def-8123-456789abcdef"
        );
        assert_eq!(uuid(0, u64::MAX), "00000000-0000-0000-ffff-ffffffffffff");
    }

    #[test]
    fn matches_display() {
        for n in [0u64, 7, 10, 65535, u64::MAX] {
            assert_eq!(decimal(n, 0).as_str(), n.to_string());
        }
        assert_eq!(decimal(7, 3).as_str(), "007");
        assert_eq!(decimal(2026, 4).as_str(), "2026");
        for a in [
            "10.244.2.10:50482",
            "[::1]:8080",
            "0.0.0.0:0",
            "[2a04:4e42::323]:443",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(socket_addr(addr).as_str(), addr.to_string());
        }
        assert_eq!(
            ip("151.101.65.67".parse().unwrap()).as_str(),
            "151.101.65.67"
        );
        assert_eq!(hex(0xabc, 4).as_str(), "0abc");
    }

    #[test]
    fn pushes_match_display() {
        let mut n = 1u64;
        let mut samples = vec![0, 9, 10, 99, 100, 101, 999, 1000, u64::MAX];
        while n < u64::MAX / 7 {
            samples.push(n);
            samples.push(n - 1);
            n *= 7;
        }
        for n in samples {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(decimal(n, 0).as_str(), n.to_string());
        }
        let mut out = b"x".to_vec();
        push_padded(&mut out, 7, 3);
        push_padded(&mut out, 12345, 3);
        assert_eq!(out, b"x00712345");
        for a in [
            "10.244.2.10:50482",
            "[::1]:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "1.20.100.9:9",
            "9.99.199.0:10",
            "0.0.0.1:99",
            "0.0.0.1:100",
            "0.0.0.1:999",
            "0.0.0.1:1000",
            "0.0.0.1:9999",
            "0.0.0.1:10000",
            "[2a04:4e42::323]:443",
            "[::ffff:1.2.3.4]:1",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            push_socket_addr(&mut out, addr);
            assert_eq!(out, addr.to_string().as_bytes());
            out.clear();
            push_ip(&mut out, addr.ip());
            assert_eq!(out, addr.ip().to_string().as_bytes());
        }
    }
}
