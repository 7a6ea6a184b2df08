//! Which resolved addresses an egress gateway refuses to connect to when
//! `resolver.denyPrivateAddresses` is on: anything that is not a public unicast address
//! (loopback, private, link-local and the cloud metadata address, CGNAT, unique-local,
//! multicast, unspecified, documentation ranges, and IPv4-mapped/compatible forms of those).
//! STATIC endpoints, written by the operator, are trusted and never pass through here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn is_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_denied(v4),
        IpAddr::V6(v6) => v6_denied(v6),
    }
}

fn v4_denied(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the metadata service
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 CGNAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240 // reserved
}

fn v6_denied(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_denied(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 can reach private v4
        || (s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated) and ::/96
        || s[0] == 0x2002 // 6to4 can embed private v4
}

#[cfg(test)]
mod tests {
    use super::is_denied;

    #[test]
    fn refuses_internal_ranges_and_allows_public() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "::",
        ] {
            assert!(is_denied(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "151.101.65.67",
            "8.8.8.8",
            "2a04:4e42::323",
            "::ffff:151.101.1.1",
        ] {
            assert!(!is_denied(good.parse().unwrap()), "{good}");
        }
    }
}
