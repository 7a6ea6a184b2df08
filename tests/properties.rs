//! Property tests for the parsers that face hostile bytes, the same invariants the fuzz
//! targets in fuzz/ check, in bounded runs fast enough for every `cargo test`.

use std::net::{IpAddr, Ipv4Addr};

use egressd::detect::{client_hello_sni, Peek};
use egressd::proxy::http1::body::ChunkedScanner;
use egressd::proxy::http1::head::{parse_request, RequestHead};
use egressd::proxy::http1::serialize::request_head;
use egressd::route::host::{normalize_host, HostPattern};
use egressd::upstream::addr_policy::is_denied;
use proptest::prelude::*;

/// Header lines mixing ordinary and hostile shapes.
fn header_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Content-Length: 5\r\n".to_string()),
        Just("Content-Length: 05\r\n".to_string()),
        Just("Transfer-Encoding: chunked\r\n".to_string()),
        Just("Transfer-Encoding: Chunked \r\n".to_string()),
        Just("Transfer-Encoding: gzip, chunked\r\n".to_string()),
        Just("Connection: close\r\n".to_string()),
        Just("Connection: keep-alive, x-drop\r\n".to_string()),
        Just("Connection: content-length\r\n".to_string()),
        Just("X-Drop: 1\r\n".to_string()),
        Just("Host: b.example.com\r\n".to_string()),
        Just(" folded\r\n".to_string()),
        Just("X: a\nY: b\r\n".to_string()),
        "[A-Za-z-]{1,8}: [ -~]{0,12}\r\n",
    ]
}

fn request() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("G\0T"), Just("PATCH")],
        prop_oneof![
            Just("/p?q"),
            Just("http://a.example.com/x"),
            Just("http://A.EXAMPLE.com:80"),
            Just("*"),
            Just("x")
        ],
        prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/2.0")],
        proptest::option::of(Just("Host: a.example.com\r\n")),
        proptest::collection::vec(header_line(), 0..6),
    )
        .prop_map(|(m, t, v, host, hs)| {
            format!("{m} {t} {v}\r\n{}{}\r\n", host.unwrap_or(""), hs.concat())
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn accepted_heads_reserialise_to_the_same_request(raw in request()) {
        let mut head = RequestHead::default();
        if let Ok(Some(_)) = parse_request(raw.as_bytes(), 100, &mut head) {
            let mut wire = Vec::new();
            request_head(&mut wire, &head, raw.as_bytes(), "192.0.2.1", "id");
            let mut again = RequestHead::default();
            let parsed = parse_request(&wire, 110, &mut again);
            prop_assert!(matches!(parsed, Ok(Some(n)) if n == wire.len()), "{:?}", String::from_utf8_lossy(&wire));
            prop_assert_eq!(&head.method, &again.method);
            prop_assert_eq!(&head.path, &again.path);
            prop_assert!(head.authority.eq_ignore_ascii_case(&again.authority));
            prop_assert_eq!(head.framing, again.framing);
        }
    }

    #[test]
    fn parse_request_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_request(&raw, 100, &mut RequestHead::default());
    }

    #[test]
    fn chunked_scanner_whole_and_split_agree(
        chunks in proptest::collection::vec(
            (1usize..40, prop_oneof![Just(""), Just(";a"), Just(";a=\"b c\""), Just(";"), Just(" ")]),
            0..5,
        ),
        trailer in prop_oneof![Just(""), Just("T: v\r\n"), Just("\n")],
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = Vec::new();
        for (len, ext) in &chunks {
            body.extend_from_slice(format!("{len:x}{ext}\r\n").as_bytes());
            body.extend(std::iter::repeat_n(b'x', *len));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("0\r\n{trailer}\r\nNEXT").as_bytes());
        let mut whole = ChunkedScanner::default();
        let expect = whole.scan(&body).ok().map(|n| (n, whole.is_done()));
        let cut = cut.index(body.len() + 1);
        let mut s = ChunkedScanner::default();
        let split = s.scan(&body[..cut]).ok().and_then(|a| {
            if s.is_done() {
                return Some((a, true));
            }
            let b = s.scan(&body[cut..]).ok()?;
            Some((a + b, s.is_done()))
        });
        prop_assert_eq!(expect, split);
        if let Some((n, done)) = expect {
            prop_assert!(done);
            prop_assert_eq!(&body[n..], b"NEXT");
        }
    }

    #[test]
    fn sni_verdict_on_a_prefix_is_final(
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut hello = vec![0x16, 0x03, 0x01, 0x00, tail.len() as u8, 0x01];
        hello.extend_from_slice(&tail);
        let whole = client_hello_sni(&hello, 16 * 1024);
        let prefix = client_hello_sni(&hello[..cut.index(hello.len() + 1)], 16 * 1024);
        if prefix != Peek::Incomplete {
            prop_assert_eq!(prefix, whole);
        }
    }

    #[test]
    fn normalised_hosts_are_fixed_points(raw in "[A-Za-z0-9.:\\[\\]_-]{0,20}") {
        if let Some(host) = normalize_host(&raw) {
            prop_assert!(!host.ends_with('.'));
            prop_assert_eq!(&host, &host.to_ascii_lowercase());
            if !host.starts_with('[') {
                prop_assert_eq!(normalize_host(&host), Some(host.clone()));
            }
            let wild = HostPattern::parse(&format!("*.{host}"));
            prop_assert!(!wild.matches(&host));
            let deeper = format!("a.b.{host}");
            prop_assert!(wild.matches(&deeper));
        }
    }

    #[test]
    fn mapped_ipv4_gets_the_ipv4_verdict(o in any::<[u8; 4]>()) {
        let v4 = Ipv4Addr::from(o);
        prop_assert_eq!(is_denied(IpAddr::V4(v4)), is_denied(IpAddr::V6(v4.to_ipv6_mapped())));
    }
}
