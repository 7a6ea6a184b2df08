//! HTTP/2 from sidecars and clients (ALPN `h2`/`istio-h2`, h2c with prior knowledge): the
//! `h2` crate speaks the protocol; each stream then runs the HTTP/1.1 exchange, so routing,
//! retries, upstream pooling and access logs are the same for both protocols.

pub mod conn;
pub mod dechunk;
pub mod flow_send;
pub mod guard;
pub mod io;
pub mod stream;
pub mod stream_io;
pub mod upstream;

pub use guard::PREFACE;
