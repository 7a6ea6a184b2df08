//! TLS for egressd: rustls server configs for terminated Gateway servers (SIMPLE, MUTUAL,
//! ISTIO_MUTUAL), client configs for TLS origination, certificate loading and reload,
//! peer identities (SPIFFE ids), and the demo PKI. The data paths that use them live in
//! `proxy::terminate` and `upstream::connect`.

pub mod alpn;
pub mod client;
pub mod demo_pki;
pub mod identity;
pub mod listener;
pub mod origination;
pub mod pem;
pub mod rewind;
pub mod server;
pub mod server_policy;
pub mod store;
pub mod stream;
