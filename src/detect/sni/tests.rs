//! Parser tests on captured hellos (rustls and `openssl s_client`, see
//! tests/sni_client_hellos.rs for how the rustls ones are made) and on
//! synthetic hellos for the edge cases real clients do not send.

use super::*;

const RUSTLS_SNI: &[u8] = include_bytes!("../testdata/rustls_sni.bin");
const RUSTLS_NO_SNI: &[u8] = include_bytes!("../testdata/rustls_no_sni.bin");
const RUSTLS_PQ: &[u8] = include_bytes!("../testdata/rustls_x25519mlkem768.bin");
const RUSTLS_PADDED: &[u8] = include_bytes!("../testdata/rustls_padded.bin");
const OPENSSL: &[u8] = include_bytes!("../testdata/openssl_s_client.bin");

fn fixtures() -> Vec<(&'static str, &'static [u8], Peek)> {
    vec![
        (
            "rustls_sni",
            RUSTLS_SNI,
            Peek::Sni("www.example.com".into()),
        ),
        ("rustls_no_sni", RUSTLS_NO_SNI, Peek::NoSni),
        ("rustls_pq", RUSTLS_PQ, Peek::Sni("pq.example.net".into())),
        (
            "rustls_padded",
            RUSTLS_PADDED,
            Peek::Sni("big.example.org".into()),
        ),
        // Asked for "Openssl.Example.ORG." on the command line.
        ("openssl", OPENSSL, Peek::Sni("openssl.example.org".into())),
    ]
}

/// The handshake message carried by a single-record capture.
fn handshake(record: &[u8]) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    assert_eq!(record.len(), RECORD_HEADER + len, "fixture is one record");
    &record[RECORD_HEADER..]
}

/// Frames `hs` into handshake records, cutting it at the given offsets.
fn frame(hs: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&hs.len())) {
        let part = &hs[start..end];
        out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
        start = end;
    }
    out
}

/// A minimal TLS 1.2-style ClientHello whose server_name lists `names`.
fn synthetic(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for n in names {
        list.push(0u8);
        list.extend_from_slice(&(n.len() as u16).to_be_bytes());
        list.extend_from_slice(n);
    }
    let mut sni = (list.len() as u16).to_be_bytes().to_vec();
    sni.extend_from_slice(&list);
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![HANDSHAKE_CLIENT_HELLO, 0];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    frame(&hs, &[])
}

#[test]
fn captured_hellos_give_their_names() {
    for (name, bytes, want) in fixtures() {
        assert_eq!(client_hello_sni(bytes, DEFAULT_PEEK_CAP), want, "{name}");
    }
}

#[test]
fn every_prefix_is_incomplete_and_the_whole_agrees() {
    // Models a hello arriving split at any byte across TCP segments: the
    // caller re-asks with the longer buffer, so each prefix must wait.
    for (name, bytes, want) in fixtures() {
        for k in 0..bytes.len() {
            assert_eq!(
                client_hello_sni(&bytes[..k], DEFAULT_PEEK_CAP),
                Peek::Incomplete,
                "{name} at {k}"
            );
        }
        // Bytes after the hello (early data, a later record) change nothing.
        let mut more = bytes.to_vec();
        more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(
            client_hello_sni(&more, DEFAULT_PEEK_CAP),
            want,
            "{name} + trailing"
        );
    }
}

#[test]
fn hello_split_across_two_records_anywhere_agrees() {
    for (name, bytes, want) in fixtures() {
        let hs = handshake(bytes);
        for cut in 1..hs.len() {
            let framed = frame(hs, &[cut]);
            assert_eq!(
                client_hello_sni(&framed, DEFAULT_PEEK_CAP),
                want,
                "{name} cut {cut}"
            );
        }
    }
}

#[test]
fn hello_split_across_many_records_with_tcp_splits_agrees() {
    let hs = handshake(RUSTLS_PADDED);
    let cuts: Vec<usize> = (1..hs.len()).step_by(97).collect();
    let framed = frame(hs, &cuts);
    for k in 0..framed.len() {
        assert_eq!(
            client_hello_sni(&framed[..k], DEFAULT_PEEK_CAP),
            Peek::Incomplete,
            "prefix {k}"
        );
    }
    assert_eq!(
        client_hello_sni(&framed, DEFAULT_PEEK_CAP),
        Peek::Sni("big.example.org".into())
    );
}

#[test]
fn plain_http_is_not_tls_from_the_first_byte() {
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for k in 1..=get.len() {
        assert_eq!(client_hello_sni(&get[..k], DEFAULT_PEEK_CAP), Peek::NotTls);
    }
    // SSLv2-compatible hello and a wrong record version are not TLS either.
    assert_eq!(
        client_hello_sni(&[0x80, 0x2e, 0x01], DEFAULT_PEEK_CAP),
        Peek::NotTls
    );
    assert_eq!(
        client_hello_sni(&[0x16, 0x02], DEFAULT_PEEK_CAP),
        Peek::NotTls
    );
}

#[test]
fn truncated_hello_is_incomplete_and_empty_input_too() {
    assert_eq!(client_hello_sni(&[], DEFAULT_PEEK_CAP), Peek::Incomplete);
    assert_eq!(
        client_hello_sni(&RUSTLS_PQ[..700], DEFAULT_PEEK_CAP),
        Peek::Incomplete
    );
}

#[test]
fn hello_over_the_cap_is_too_large() {
    // Full buffer without a complete hello.
    assert_eq!(client_hello_sni(RUSTLS_PADDED, 512), Peek::TooLarge);
    // Known early from the announced handshake length alone.
    assert_eq!(client_hello_sni(&RUSTLS_PADDED[..9], 1024), Peek::TooLarge);
    // Exactly fitting is fine.
    assert_eq!(
        client_hello_sni(RUSTLS_PADDED, RUSTLS_PADDED.len()),
        Peek::Sni("big.example.org".into())
    );
    let mut over = vec![0x16, 3, 1, 0x40, 0x00, 1, 0x01, 0x00, 0x00];
    over.resize(100, 0);
    assert_eq!(client_hello_sni(&over, DEFAULT_PEEK_CAP), Peek::TooLarge);
}

#[test]
fn malformed_framing_is_invalid_with_a_reason() {
    let hs = handshake(RUSTLS_SNI);
    let mut interleaved = frame(&hs[..10], &[]);
    interleaved.extend_from_slice(&[0x15, 3, 3, 0, 2, 2, 40]);
    assert_eq!(
        client_hello_sni(&interleaved, DEFAULT_PEEK_CAP),
        Peek::Invalid("unexpected record type")
    );
    assert_eq!(
        client_hello_sni(&[0x16, 3, 1, 0, 0], DEFAULT_PEEK_CAP),
        Peek::Invalid("empty handshake record")
    );
    assert_eq!(
        client_hello_sni(&[0x16, 3, 1, 0x48, 0x01], DEFAULT_PEEK_CAP),
        Peek::Invalid("record too long")
    );
    let server_hello = [0x16, 3, 3, 0, 4, 2, 0, 0, 0];
    assert_eq!(
        client_hello_sni(&server_hello, DEFAULT_PEEK_CAP),
        Peek::Invalid("not a client hello")
    );
    let mut bad_body = RUSTLS_SNI.to_vec();
    bad_body[RECORD_HEADER + HANDSHAKE_HEADER + 2 + 32] = 200; // session id longer than the message
    assert_eq!(
        client_hello_sni(&bad_body, DEFAULT_PEEK_CAP),
        Peek::Invalid("malformed client hello")
    );
}

#[test]
fn server_names_are_validated_and_normalized() {
    let sni = |n: &[u8]| client_hello_sni(&synthetic(&[n]), DEFAULT_PEEK_CAP);
    assert_eq!(
        sni(b"Mixed.Case.Example."),
        Peek::Sni("mixed.case.example".into())
    );
    assert_eq!(
        sni(b"under_score.example"),
        Peek::Sni("under_score.example".into())
    );
    assert_eq!(sni(b"10.0.0.1"), Peek::Invalid("ip literal"));
    assert_eq!(sni(b"::1"), Peek::Invalid("ip literal"));
    assert_eq!(sni(b"127.1"), Peek::Invalid("ip literal"));
    assert_eq!(sni(b"bad name.example"), Peek::Invalid("invalid name"));
    assert_eq!(sni(b"-lead.example"), Peek::Invalid("invalid name"));
    assert_eq!(sni(b"a..b"), Peek::Invalid("invalid name"));
    assert_eq!(sni(b"."), Peek::Invalid("invalid name"));
    assert_eq!(sni(b"*.example.com"), Peek::Invalid("invalid name"));
    assert_eq!(sni(&[0xff, 0xfe]), Peek::Invalid("invalid name"));
    assert_eq!(sni(&[b'a'; 64]), Peek::Invalid("invalid name"));
    let two = synthetic(&[b"a.example", b"b.example"]);
    assert_eq!(
        client_hello_sni(&two, DEFAULT_PEEK_CAP),
        Peek::Invalid("multiple server names")
    );
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz loops.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn never_panics_on_random_or_mutated_input() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(600);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 2 && rng.below(2) == 0 {
            buf[0] = 0x16;
            buf[1] = 3;
        }
        let _ = client_hello_sni(&buf, rng.below(DEFAULT_PEEK_CAP) + 1);
    }
    for (_, bytes, _) in fixtures() {
        for _ in 0..4_000 {
            let mut buf = bytes.to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(buf.len());
                buf[at] = rng.next() as u8;
            }
            let cut = rng.below(buf.len() + 1);
            let _ = client_hello_sni(&buf[..cut], DEFAULT_PEEK_CAP);
        }
    }
}

#[test]
fn random_record_splits_agree_with_the_whole() {
    let mut rng = Rng(42);
    for (name, bytes, want) in fixtures() {
        let hs = handshake(bytes);
        for _ in 0..200 {
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| 1 + rng.below(hs.len() - 1))
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            assert_eq!(
                client_hello_sni(&frame(hs, &cuts), DEFAULT_PEEK_CAP),
                want,
                "{name} {cuts:?}"
            );
        }
    }
}
