//! Benchmarks for egressd: a load generator and scenarios that send the same workload to the
//! origin directly, through egressd and through its peers (haproxy, nginx), in one run, and
//! write dated JSON + Markdown results with machine notes.
//!
//! `main.rs` is the CLI; everything testable lives here.

pub mod error;
pub mod framing;
pub mod http2;
pub mod http2_report;
pub mod idle;
pub mod launch;
pub mod loadgen;
pub mod log_sink;
pub mod machine;
pub mod markdown;
pub mod mtls;
pub mod mtls_report;
pub mod origination;
pub mod passthrough;
pub mod passthrough_report;
pub mod pki;
pub mod procs;
pub mod reload;
pub mod report;
pub mod scenario;
pub mod svg;
pub mod sys;
pub mod targets;
pub mod workload;
