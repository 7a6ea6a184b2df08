//! A Gateway server's TLS parameters: `minProtocolVersion`, `maxProtocolVersion` and
//! `cipherSuites`, checked where they are written.
//!
//! Cipher suites use the names Istio passes to Envoy (OpenSSL/BoringSSL spelling, e.g.
//! `ECDHE-ECDSA-AES128-GCM-SHA256`); as in Envoy they restrict TLS 1.2 only (TLS 1.3 suites
//! are not configurable). egressd speaks ECDHE with AEAD only: names Envoy knows but that
//! lack forward secrecy or use CBC/3DES/PSK are `unsupported by egressd`, anything else is an
//! unknown name. BoringSSL's equal-preference groups (`[A|B]`) are read as A then B.
//!
//! Owns: the accepted and refused name tables (`tls::server_policy` maps the accepted ones
//! to rustls suites) and the version order. Must not: know rustls.

use super::context::Cx;
use super::model::{ServerTlsMode, Spanned};
use super::reader::Obj;

/// Accepted names, in egressd's default server preference order.
pub const ACCEPTED_CIPHERS: [&str; 6] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// Names Envoy accepts that egressd refuses, with why.
const REFUSED_CIPHERS: &[(&str, &str)] = &[
    ("ECDHE-ECDSA-AES128-SHA", "CBC mode"),
    ("ECDHE-RSA-AES128-SHA", "CBC mode"),
    ("ECDHE-ECDSA-AES256-SHA", "CBC mode"),
    ("ECDHE-RSA-AES256-SHA", "CBC mode"),
    ("AES128-GCM-SHA256", "RSA key exchange, no forward secrecy"),
    ("AES256-GCM-SHA384", "RSA key exchange, no forward secrecy"),
    ("AES128-SHA", "RSA key exchange and CBC mode"),
    ("AES256-SHA", "RSA key exchange and CBC mode"),
    ("DES-CBC3-SHA", "3DES"),
    ("ECDHE-PSK-AES128-CBC-SHA", "pre-shared keys and CBC mode"),
    ("ECDHE-PSK-AES256-CBC-SHA", "pre-shared keys and CBC mode"),
    ("ECDHE-PSK-CHACHA20-POLY1305", "pre-shared keys"),
    ("PSK-AES128-CBC-SHA", "pre-shared keys and CBC mode"),
    ("PSK-AES256-CBC-SHA", "pre-shared keys and CBC mode"),
];

/// TLS 1.3 suite names: valid suites, but not something `cipherSuites` configures.
const TLS13_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// `minProtocolVersion` / `maxProtocolVersion` values: (Istio name, egressd's value).
const TLS_VERSIONS: &[(&str, Option<&str>)] = &[
    ("TLS_AUTO", None),
    ("TLSV1_2", Some("TLSV1_2")),
    ("TLSV1_3", Some("TLSV1_3")),
];
/// Valid Istio versions egressd never speaks.
const OLD_VERSIONS: &[&str] = &["TLSV1_0", "TLSV1_1"];

/// The version fields of a server's `tls` block: (min, max), each "TLSV1_2"/"TLSV1_3" or
/// None for TLS_AUTO/absent. A minimum above the maximum is an error at the maximum.
pub(crate) fn versions(cx: &mut Cx, t: &mut Obj<'_>) -> (Option<String>, Option<String>) {
    let mut read = |name: &str| -> Option<String> {
        if !t.has(name) {
            return None;
        }
        t.enum_value(cx, name, TLS_VERSIONS, OLD_VERSIONS)
            .flatten()
            .map(str::to_string)
    };
    let min = read("minProtocolVersion");
    let max = read("maxProtocolVersion");
    if let (Some(lo), Some(hi)) = (&min, &max) {
        // "TLSV1_2" < "TLSV1_3" as strings, which is the version order.
        if lo > hi {
            let msg = format!(
                "{}: maxProtocolVersion {hi} is below minProtocolVersion {lo}",
                t.path_of("maxProtocolVersion")
            );
            let span = t
                .node(cx, "maxProtocolVersion")
                .map_or_else(|| t.span().clone(), |n| n.span.clone());
            cx.error(&span, msg);
        }
    }
    (min, max)
}

/// `cipherSuites`: the accepted names in the order written (groups flattened), each error at
/// its own list item.
pub(crate) fn cipher_suites(cx: &mut Cx, t: &mut Obj<'_>) -> Vec<String> {
    let items: Vec<Spanned<String>> = t.strings(cx, "cipherSuites");
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", t.path_of("cipherSuites"));
        let text = item.value.trim();
        let group = text
            .strip_prefix('[')
            .and_then(|g| g.strip_suffix(']'))
            .unwrap_or(text);
        for name in group.split('|').map(str::trim) {
            match check(name) {
                Ok(accepted) => {
                    if !out.iter().any(|n| n == accepted) {
                        out.push(accepted.to_string());
                    }
                }
                Err(msg) => cx.error(&item.span, format!("{path}: {msg}")),
            }
        }
    }
    if t.has("cipherSuites") && items.is_empty() {
        let msg = format!(
            "{}: an empty list would allow no TLS 1.2 suite; omit it for the default",
            t.path_of("cipherSuites")
        );
        let span = t
            .node(cx, "cipherSuites")
            .map_or_else(|| t.span().clone(), |n| n.span.clone());
        cx.error(&span, msg);
    }
    out
}

/// `cipherSuites` that cannot apply: PASSTHROUGH terminates nothing, and a TLS 1.3 minimum
/// negotiates no TLS 1.2 suite. Valid, so a warning (at the field) rather than an error.
pub(crate) fn warn_ineffective(
    cx: &mut Cx,
    t: &mut Obj<'_>,
    mode: ServerTlsMode,
    min: &Option<String>,
    suites: &[String],
) {
    let why = if suites.is_empty() {
        return;
    } else if mode == ServerTlsMode::Passthrough {
        "tls mode PASSTHROUGH does not terminate TLS"
    } else if min.as_deref() == Some("TLSV1_3") {
        "minProtocolVersion TLSV1_3 leaves no TLS 1.2 handshake to apply it to"
    } else {
        return;
    };
    let msg = format!("{}: has no effect: {why}", t.path_of("cipherSuites"));
    let span = t
        .node(cx, "cipherSuites")
        .map_or_else(|| t.span().clone(), |n| n.span.clone());
    cx.warn(&span, msg);
}

/// The accepted spelling of `name`, or why not.
fn check(name: &str) -> Result<&'static str, String> {
    let upper = name.to_ascii_uppercase();
    if let Some(n) = ACCEPTED_CIPHERS.iter().find(|n| **n == upper) {
        return Ok(n);
    }
    if let Some((n, why)) = REFUSED_CIPHERS.iter().find(|(n, _)| *n == upper) {
        return Err(format!(
            "unsupported by egressd: cipher suite {n} ({why}); egressd offers ECDHE with AES-GCM or ChaCha20-Poly1305 only: {}",
            ACCEPTED_CIPHERS.join(", ")
        ));
    }
    if TLS13_NAMES.contains(&upper.as_str()) {
        return Err(format!(
            "{name} is a TLS 1.3 suite; cipherSuites restricts TLS 1.2 only (as in Envoy) and every TLS 1.3 suite stays enabled"
        ));
    }
    Err(format!(
        "unknown cipher suite {name:?}; expected one of {}",
        ACCEPTED_CIPHERS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_accepted_refused_or_unknown() {
        assert_eq!(
            check("ecdhe-rsa-aes256-gcm-sha384"),
            Ok("ECDHE-RSA-AES256-GCM-SHA384")
        );
        assert!(check("AES128-SHA")
            .unwrap_err()
            .starts_with("unsupported by egressd: cipher suite AES128-SHA (RSA key exchange"));
        assert!(check("TLS_AES_128_GCM_SHA256")
            .unwrap_err()
            .contains("TLS 1.3 suite"));
        assert!(check("ECDHE-ECDSA-AES128-GCM-SHA255")
            .unwrap_err()
            .starts_with("unknown cipher suite"));
        for n in ACCEPTED_CIPHERS {
            assert!(!REFUSED_CIPHERS.iter().any(|(r, _)| *r == n));
        }
    }
}
