//! Protocol detection on freshly accepted connections: what the first bytes
//! say before any routing decision. Detectors only look at buffered bytes;
//! they never consume them for good (the caller replays them upstream).

pub mod peek;
pub mod sni;

pub use peek::{peek_sni, PeekError};
pub use sni::{client_hello_sni, Peek, DEFAULT_PEEK_CAP};
