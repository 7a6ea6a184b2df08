//! egressd: a thread-per-core egress gateway that reads Istio resources.

pub mod config;
pub mod runtime;
pub mod sys;
