//! The command line (fixed by DESIGN.md): run, validate, check-system, certs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "egressd",
    version,
    about = "Thread-per-core egress gateway that reads Istio resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Run {
        #[arg(short, long, default_value = "config/egressd.yaml")]
        config: PathBuf,
        /// Number of shards (default: one per CPU in the affinity mask).
        #[arg(long)]
        shards: Option<usize>,
        /// CPUs to pin shards to, e.g. "2,3" or "2-3".
        #[arg(long, value_parser = parse_cpu_list)]
        cpus: Option<CpuList>,
        /// Log level or filter (beats RUST_LOG and the file's logLevel).
        #[arg(long)]
        log_level: Option<String>,
    },
    /// Check a configuration file and print `ok` or its errors with file:line:column.
    Validate {
        #[arg(short, long, default_value = "config/egressd.yaml")]
        config: PathBuf,
    },
    /// Print what the configuration needs from the system and what the machine has.
    CheckSystem {
        #[arg(short, long, default_value = "config/egressd.yaml")]
        config: PathBuf,
        #[arg(long)]
        shards: Option<usize>,
    },
    /// Write a demo PKI (root, gateway and client certificates with SPIFFE ids).
    Certs {
        #[arg(long)]
        out: PathBuf,
    },
}

/// A CPU list as written on the command line (one argument, not repeated values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses "2,3", "2-3" or "0,2-3" into a sorted list without duplicates.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list element {part:?} (use e.g. 2,3 or 2-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(CpuList(cpus))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(super::parse_cpu_list("2,3").unwrap().0, vec![2, 3]);
        assert_eq!(super::parse_cpu_list("0,2-3").unwrap().0, vec![0, 2, 3]);
        assert!(super::parse_cpu_list("3-2").is_err());
        assert!(super::parse_cpu_list("x").is_err());
    }
}
