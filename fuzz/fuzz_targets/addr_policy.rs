//! is_denied never panics, and an IPv4-mapped IPv6 address gets the verdict of its IPv4
//! address (the mapped form must not be a way around the policy).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egressd::upstream::addr_policy::is_denied;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 16 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&data[..16]);
        let _ = is_denied(IpAddr::V6(Ipv6Addr::from(o)));
    }
    if data.len() >= 4 {
        let v4 = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(is_denied(IpAddr::V4(v4)), is_denied(mapped), "{v4}");
    }
});
