//! Data paths: HTTP/1.1 proxying (plain or behind terminated TLS).

pub mod buf;
pub mod deadline;
pub mod http1;
