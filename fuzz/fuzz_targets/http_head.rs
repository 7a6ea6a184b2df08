//! parse_request never panics, and a head it accepts re-serialises to a head that parses
//! to the same method, target, authority and framing (what the upstream will act on).
#![no_main]

use egressd::proxy::http1::head::{parse_request, RequestHead};
use egressd::proxy::http1::serialize::request_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut head = RequestHead::default();
    let Ok(Some(_)) = parse_request(data, 100, &mut head) else {
        return;
    };
    // CONNECT heads are never forwarded (the gateway answers them itself).
    if head.method == "CONNECT" {
        return;
    }
    let mut wire = Vec::new();
    request_head(&mut wire, &head, data, "192.0.2.1", "fuzz-id");
    let mut again = RequestHead::default();
    match parse_request(&wire, 110, &mut again) {
        Ok(Some(len)) => assert_eq!(len, wire.len()),
        other => panic!(
            "re-serialised head does not parse: {:?} {:?}",
            other.err(),
            String::from_utf8_lossy(&wire)
        ),
    }
    assert_eq!(head.method, again.method);
    assert_eq!(head.path, again.path);
    assert!(head.authority.eq_ignore_ascii_case(&again.authority));
    assert_eq!(head.framing, again.framing);
});
