//! client_hello_sni never panics and is monotonic: once a prefix gives a verdict other
//! than Incomplete, the whole input gives the same verdict.
#![no_main]

use egressd::detect::{client_hello_sni, Peek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let cap = 16 * 1024;
    let whole = client_hello_sni(input, cap);
    let cut = (cut as usize * input.len()) / 255;
    let prefix = client_hello_sni(&input[..cut], cap);
    if prefix != Peek::Incomplete {
        assert_eq!(prefix, whole, "prefix of {cut} bytes");
    }
});
