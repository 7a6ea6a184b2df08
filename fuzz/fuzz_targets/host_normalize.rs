//! normalize_host never panics, is idempotent, and its output is ASCII lower-case without
//! a trailing dot; a wildcard pattern never matches its own apex.
#![no_main]

use egressd::route::host::{normalize_host, HostPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(host) = normalize_host(text) {
        assert!(host.is_ascii() && !host.is_empty());
        assert_eq!(host, host.to_ascii_lowercase());
        assert!(!host.ends_with('.'));
        if !host.starts_with('[') {
            assert_eq!(normalize_host(&host).as_deref(), Some(&*host));
        }
        let apex = HostPattern::parse(&format!("*.{host}"));
        assert!(!apex.matches(&host));
        assert!(apex.matches(&format!("a.{host}")));
    }
});
