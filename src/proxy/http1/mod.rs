//! HTTP/1.1 egress: downstream connection loop, head parsing and re-serialisation, body
//! streaming, the upstream exchange with retries, and the per-request log record.

pub mod body;
pub mod conn;
pub mod connect;
pub mod exchange;
pub mod head;
pub mod log;
pub mod serialize;
pub mod strict;
