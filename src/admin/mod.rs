//! The admin server on the control side (never on a shard).

pub mod config_dump;
pub mod routes;
pub mod server;
pub mod stats;
