//! Benchmarks for egressd: a load generator and scenarios that send the same workload to the
//! origin directly, through egressd and through its peers (haproxy, nginx), in one run, and
//! write dated JSON + Markdown results with machine notes.
//!
//! `main.rs` is the CLI; everything testable lives here.

pub mod error;
pub mod framing;
pub mod http2;
pub mod http2_report;
pub mod loadgen;
pub mod machine;
pub mod markdown;
pub mod passthrough;
pub mod passthrough_report;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod sys;
pub mod targets;
