//! Listeners: binding SO_REUSEPORT sockets per shard and the accept loops that dispatch
//! connections to the data paths.

pub mod accept;
pub mod bind;
pub mod drain;
