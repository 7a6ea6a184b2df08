//! Gateway `tls.minProtocolVersion`, `maxProtocolVersion` and `cipherSuites` in the config:
//! what loads, and the errors (at the offending item's file:line:column) for unknown names,
//! suites egressd refuses as unsafe, TLS 1.3 names, and a maximum below the minimum.

use std::path::Path;

use egressd::config::{load_str, Diagnostic, LoadMode};

/// A MUTUAL HTTPS server whose `tls` block ends with `extra` lines (each indented by 6);
/// the first extra line is line 14.
fn gateway(extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: gw
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [edition.cnn.com]
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/cert-chain.pem
      privateKey: /etc/certs/key.pem
{extra}      caCertificates: /etc/certs/root-cert.pem
"
    )
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str(text, Path::new("gw.yaml"), LoadMode::Validate) {
        Ok(_) => panic!("expected errors, the config loaded:\n{text}"),
        Err(d) => d.into_iter().filter(Diagnostic::is_error).collect(),
    }
}

fn assert_one_error(text: &str, line: u32, col: u32, fragment: &str) {
    let errs = errors(text);
    assert!(
        errs.len() == 1 && errs[0].position() == (line, col) && errs[0].message.contains(fragment),
        "want one error at {line}:{col} with {fragment:?}, got: {errs:#?}"
    );
}

#[test]
fn versions_and_envoy_cipher_names_load_into_the_model() {
    let text = gateway(
        "      minProtocolVersion: TLSV1_2\n      maxProtocolVersion: TLSV1_3\n      cipherSuites:\n      - ECDHE-RSA-AES256-GCM-SHA384\n      - \"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]\"\n",
    );
    let loaded = load_str(&text, Path::new("gw.yaml"), LoadMode::Validate).expect("loads");
    let tls = loaded.config.gateways[0].servers[0]
        .tls
        .as_ref()
        .expect("tls");
    assert_eq!(tls.min_protocol_version.as_deref(), Some("TLSV1_2"));
    assert_eq!(tls.max_protocol_version.as_deref(), Some("TLSV1_3"));
    assert_eq!(
        tls.cipher_suites,
        [
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        ]
    );
    let auto = gateway("      maxProtocolVersion: TLS_AUTO\n");
    let loaded = load_str(&auto, Path::new("gw.yaml"), LoadMode::Validate).expect("loads");
    let tls = loaded.config.gateways[0].servers[0]
        .tls
        .as_ref()
        .expect("tls");
    assert_eq!(tls.max_protocol_version, None);
    assert!(tls.cipher_suites.is_empty());
}

#[test]
fn an_unknown_cipher_name_is_an_error_at_its_item() {
    let text = gateway(
        "      cipherSuites:\n      - ECDHE-RSA-AES256-GCM-SHA384\n      - ECDHE-RSA-AES999-GCM\n",
    );
    assert_one_error(
        &text,
        16,
        9,
        "spec.servers[0].tls.cipherSuites[1]: unknown cipher suite \"ECDHE-RSA-AES999-GCM\"",
    );
}

#[test]
fn suites_without_forward_secrecy_or_with_cbc_are_unsupported() {
    for (name, why) in [
        ("AES128-GCM-SHA256", "no forward secrecy"),
        ("ECDHE-RSA-AES128-SHA", "CBC mode"),
        ("DES-CBC3-SHA", "3DES"),
    ] {
        let text = gateway(&format!("      cipherSuites: [{name}]\n"));
        assert_one_error(
            &text,
            14,
            22,
            &format!("unsupported by egressd: cipher suite {name}"),
        );
        assert!(errors(&text)[0].message.contains(why), "{name}");
    }
}

#[test]
fn tls13_suite_names_are_not_configurable() {
    let text = gateway("      cipherSuites: [TLS_AES_128_GCM_SHA256]\n");
    assert_one_error(&text, 14, 22, "cipherSuites restricts TLS 1.2 only");
}

#[test]
fn a_maximum_below_the_minimum_or_below_tls12_is_refused() {
    let text = gateway("      minProtocolVersion: TLSV1_3\n      maxProtocolVersion: TLSV1_2\n");
    assert_one_error(
        &text,
        15,
        27,
        "maxProtocolVersion TLSV1_2 is below minProtocolVersion TLSV1_3",
    );
    let text = gateway("      maxProtocolVersion: TLSV1_1\n");
    assert_one_error(
        &text,
        14,
        27,
        "unsupported by egressd: spec.servers[0].tls.maxProtocolVersion TLSV1_1",
    );
    let text = gateway("      cipherSuites: []\n");
    assert_one_error(&text, 14, 21, "an empty list would allow no TLS 1.2 suite");
}

#[test]
fn cipher_suites_that_cannot_apply_only_warn() {
    let text = gateway(
        "      minProtocolVersion: TLSV1_3\n      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]\n",
    );
    let loaded = load_str(&text, Path::new("gw.yaml"), LoadMode::Validate).expect("loads");
    let warning = loaded
        .warnings
        .iter()
        .find(|w| w.message.contains("cipherSuites: has no effect"))
        .unwrap_or_else(|| panic!("no warning: {:#?}", loaded.warnings));
    assert_eq!(warning.position(), (15, 21));
    assert!(warning.message.contains("TLSV1_3"), "{}", warning.message);
    let plain = gateway("      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]\n");
    let loaded = load_str(&plain, Path::new("gw.yaml"), LoadMode::Validate).expect("loads");
    assert!(!loaded
        .warnings
        .iter()
        .any(|w| w.message.contains("has no effect")));
}
