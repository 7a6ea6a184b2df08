//! The only `unsafe` in egressd: thin wrappers over system calls, each with a SAFETY comment.

pub mod fd;
pub mod liveness;
