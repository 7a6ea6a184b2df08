//! Proxies: what moves bytes between a downstream and an upstream once a
//! route is chosen. Nothing here routes, resolves or logs access lines.

pub mod passthrough;
pub mod pipe_pool;
mod relay_dir;

pub use passthrough::{relay, RelayEnd, RelayOptions, RelayOutcome, Side};
pub use pipe_pool::{PipePool, PooledPipe};
