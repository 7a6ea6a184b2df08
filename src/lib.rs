//! egressd: a thread-per-core egress gateway that reads Istio resources.

pub mod config;
pub mod detect;
pub mod proxy;
pub mod sys;
