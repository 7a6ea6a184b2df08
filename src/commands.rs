//! The non-serving commands: validate, check-system, certs.

use std::path::Path;

use crate::config::{load, LoadMode};

/// `egressd validate`: `ok` on stdout, or each error as `file:line:column: message` on
/// stderr; warnings go to stderr either way.
pub fn validate(path: &Path) -> u8 {
    match load(path, LoadMode::Validate) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            println!("ok");
            0
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            1
        }
    }
}

pub fn check_system(_path: &Path, _shards: Option<usize>) -> u8 {
    eprintln!("check-system: not built yet");
    4
}

pub fn certs(_out: &Path) -> u8 {
    eprintln!("certs: not built yet");
    1
}
