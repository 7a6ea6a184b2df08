//! ChunkedScanner gives the same verdict and body length whether fed whole or in two
//! pieces split anywhere.
#![no_main]

use egressd::proxy::http1::body::ChunkedScanner;
use libfuzzer_sys::fuzz_target;

fn whole(input: &[u8]) -> Option<(usize, bool)> {
    let mut s = ChunkedScanner::default();
    let n = s.scan(input).ok()?;
    Some((n, s.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize).min(input.len());
    let expect = whole(input);
    let mut s = ChunkedScanner::default();
    let split = s.scan(&input[..cut]).ok().and_then(|a| {
        if s.is_done() {
            return Some((a, true));
        }
        assert_eq!(a, cut, "scanner stopped early without finishing");
        let b = s.scan(&input[cut..]).ok()?;
        Some((a + b, s.is_done()))
    });
    assert_eq!(expect, split);
});
