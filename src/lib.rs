//! egressd: a thread-per-core egress gateway that reads Istio resources.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod detect;
pub mod error;
pub mod listener;
pub mod obs;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod sys;
pub mod tls;
pub mod upstream;
