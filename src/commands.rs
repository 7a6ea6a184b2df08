//! The non-serving commands: validate, check-system, certs.

use std::path::Path;

use crate::config::{load, LoadMode};
use crate::runtime::run::{needs, plan_cpus};

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

/// `egressd check-system`: what the configuration needs (memlock, nofile, CPUs) against
/// what the machine has; 0 fits, 4 not.
pub fn check_system(path: &Path, shards: Option<usize>) -> u8 {
    let loaded = match load(path, LoadMode::Validate) {
        Ok(l) => l,
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            return 1;
        }
    };
    let cpus = match plan_cpus(&loaded.config, shards, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return 1;
        }
    };
    crate::runtime::limits::check_system(&needs(&loaded.config, &cpus)) as u8
}

/// `egressd certs --out DIR`: the demo PKI (root, gateway and sidecar client certificates).
pub fn certs(out: &Path) -> u8 {
    match crate::tls::demo_pki::write_demo(out) {
        Ok(pki) => {
            for p in [
                &pki.root_cert,
                &pki.cert_chain,
                &pki.key,
                &pki.client_cert,
                &pki.client_key,
            ] {
                println!("{}", p.display());
            }
            0
        }
        Err(e) => {
            eprintln!("certs: {e}");
            1
        }
    }
}
