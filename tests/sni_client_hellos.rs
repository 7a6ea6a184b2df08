//! ClientHellos produced right now by rustls (fresh randoms, current
//! extension set) must parse to the SNI the client asked for. The same
//! builders write the fixtures in src/detect/testdata/ (run the ignored
//! `regenerate_fixtures` test to refresh them).

use std::sync::Arc;

use egressd::detect::{client_hello_sni, Peek, DEFAULT_PEEK_CAP};
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::crypto::SupportedKxGroup;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

fn hello(
    sni: Option<&str>,
    groups: Vec<&'static dyn SupportedKxGroup>,
    alpn: Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = groups;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("unused.example").to_owned()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

fn classic(sni: Option<&str>) -> Vec<u8> {
    hello(
        sni,
        vec![kx_group::X25519, kx_group::SECP256R1],
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    )
}

fn post_quantum(sni: &str) -> Vec<u8> {
    hello(
        Some(sni),
        vec![kx_group::X25519MLKEM768, kx_group::X25519],
        vec![b"h2".to_vec()],
    )
}

/// Post-quantum key share plus 60 long ALPN names: well over 1.8 KB.
fn padded(sni: &str) -> Vec<u8> {
    let alpn = (0..60)
        .map(|i| format!("egressd-fixture-padding-protocol-{i:02}").into_bytes())
        .collect();
    hello(
        Some(sni),
        vec![kx_group::X25519MLKEM768, kx_group::X25519],
        alpn,
    )
}

#[test]
fn rustls_hello_with_sni_parses() {
    let h = classic(Some("API.Example.com"));
    assert_eq!(
        client_hello_sni(&h, DEFAULT_PEEK_CAP),
        Peek::Sni("api.example.com".into())
    );
}

#[test]
fn rustls_hello_without_sni_parses_as_no_sni() {
    let h = classic(None);
    assert_eq!(client_hello_sni(&h, DEFAULT_PEEK_CAP), Peek::NoSni);
}

#[test]
fn rustls_post_quantum_hello_parses_and_is_large() {
    let h = post_quantum("pq.example.net");
    assert!(
        h.len() > 1200,
        "X25519MLKEM768 share should make the hello large, got {}",
        h.len()
    );
    assert_eq!(
        client_hello_sni(&h, DEFAULT_PEEK_CAP),
        Peek::Sni("pq.example.net".into())
    );
    // One byte short of complete is still only incomplete.
    assert_eq!(
        client_hello_sni(&h[..h.len() - 1], DEFAULT_PEEK_CAP),
        Peek::Incomplete
    );
}

#[test]
fn rustls_padded_hello_parses_and_respects_the_cap() {
    let h = padded("big.example.org");
    assert!(h.len() > 1800, "padded hello is {} bytes", h.len());
    assert_eq!(
        client_hello_sni(&h, DEFAULT_PEEK_CAP),
        Peek::Sni("big.example.org".into())
    );
    assert_eq!(client_hello_sni(&h, 1024), Peek::TooLarge);
}

#[test]
#[ignore = "rewrites src/detect/testdata/*.bin; run by hand after a rustls upgrade"]
fn regenerate_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/detect/testdata");
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    write("rustls_sni.bin", classic(Some("www.example.com")));
    write("rustls_no_sni.bin", classic(None));
    write("rustls_x25519mlkem768.bin", post_quantum("pq.example.net"));
    write("rustls_padded.bin", padded("big.example.org"));
}
