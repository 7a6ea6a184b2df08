//! config::load_str never panics, whatever YAML (or not) it is given.
#![no_main]

use egressd::config::{load_str, LoadMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = load_str(
            text,
            std::path::Path::new("/nonexistent/fuzz.yaml"),
            LoadMode::Validate,
        );
    }
});
