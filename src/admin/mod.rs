//! The admin server on the control side (never on a shard).

pub mod routes;
pub mod server;
pub mod stats;
