//! Data paths: what moves bytes between a downstream and an upstream once a route is
//! chosen: HTTP/1.1 proxying (plain or behind terminated TLS), TLS termination, the
//! passthrough relay and the TLS-passthrough/TCP connection handler that drives it.

pub mod buf;
pub mod deadline;
pub mod h2;
pub mod http1;
pub mod idle_waits;
pub mod passthrough;
pub mod pipe_pool;
mod relay_dir;
pub mod tcp_conn;
pub mod terminate;
mod terminate_tcp;
pub mod wire_pool;

pub use passthrough::{relay, RelayEnd, RelayOptions, RelayOutcome, Side};
pub use pipe_pool::{PipePool, PooledPipe};
