//! Compiled routing: host patterns, the tables a snapshot holds, and the compiler that builds
//! them from the configuration model.

pub mod compile;
pub mod host;
pub mod l4;
pub mod table;
