//! `kind: Gateway`: the listeners. Each server is a port with a protocol, the hosts it serves
//! and, for HTTPS/TLS, how TLS is handled (PASSTHROUGH, or terminated with SIMPLE, MUTUAL or
//! ISTIO_MUTUAL).
//!
//! Owns reading one Gateway `spec` and the checks local to one server (an HTTPS/TLS server
//! needs a `tls` block, SIMPLE/MUTUAL need their files). It must not compare servers across
//! Gateways (port conflicts are `validate.rs`) nor read certificates.

use super::context::Cx;
use super::hosts::{host_list, HostForm};
use super::model::{Gateway, Meta, Protocol, Server, ServerPort, ServerTls, ServerTlsMode};
use super::reader::Obj;
use super::service_entry::{protocol_name, PROTOCOLS};
use super::tls_params;

const SERVER_PROTOCOLS: &[(&str, Protocol)] = &[
    ("HTTP", Protocol::Http),
    ("HTTPS", Protocol::Https),
    ("TLS", Protocol::Tls),
    ("TCP", Protocol::Tcp),
];

const TLS_MODES: &[(&str, ServerTlsMode)] = &[
    ("PASSTHROUGH", ServerTlsMode::Passthrough),
    ("SIMPLE", ServerTlsMode::Simple),
    ("MUTUAL", ServerTlsMode::Mutual),
    ("ISTIO_MUTUAL", ServerTlsMode::IstioMutual),
];

const UNSUPPORTED_TLS_MODES: &[&str] = &["OPTIONAL_MUTUAL", "AUTO_PASSTHROUGH"];

pub(crate) fn load(cx: &mut Cx, spec: &mut Obj<'_>, meta: Meta) -> Option<Gateway> {
    let selector = spec.string_map(cx, "selector");
    spec.require(cx, "servers");
    let mut servers = Vec::new();
    for mut s in spec.objs(cx, "servers") {
        if let Some(server) = server(cx, &mut s) {
            servers.push(server);
        }
        s.finish(cx);
    }
    Some(Gateway {
        meta,
        selector,
        servers,
    })
}

fn server(cx: &mut Cx, s: &mut Obj<'_>) -> Option<Server> {
    s.unsupported(cx, &["bind", "defaultEndpoint"]);
    let name = s.string(cx, "name");
    let port = match s.child(cx, "port") {
        Some(mut p) => {
            let port = server_port(cx, &mut p);
            p.finish(cx);
            port
        }
        None => {
            s.require(cx, "port");
            None
        }
    };
    let hosts = host_list(cx, s, HostForm::NamespacedOrStar);
    let tls = match s.child(cx, "tls") {
        Some(mut t) => {
            let tls = server_tls(cx, &mut t);
            t.finish(cx);
            tls
        }
        None => None,
    };
    let port = port?;
    let needs_tls = matches!(port.protocol, Protocol::Https | Protocol::Tls);
    if needs_tls && !s.has("tls") {
        let msg = format!(
            "{}: a {} server needs a 'tls' block (mode PASSTHROUGH, SIMPLE, MUTUAL or ISTIO_MUTUAL)",
            s.path_of("port"),
            protocol_name(port.protocol)
        );
        cx.error(s.span(), msg);
    }
    Some(Server {
        name: name.map(|n| n.value).unwrap_or_else(|| port.name.clone()),
        port,
        hosts,
        tls,
        span: s.span().clone(),
    })
}

fn server_port(cx: &mut Cx, p: &mut Obj<'_>) -> Option<ServerPort> {
    p.unsupported(cx, &["targetPort"]);
    let number = p.req_port(cx, "number");
    let name = p.string(cx, "name");
    let protocol = if p.has("protocol") {
        // Istio's other protocols are valid on a Gateway but egressd listens for these four.
        let others: Vec<&str> = PROTOCOLS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !SERVER_PROTOCOLS.iter().any(|(s, _)| s == n))
            .chain(super::service_entry::UNSUPPORTED_PROTOCOLS.iter().copied())
            .collect();
        p.enum_value(cx, "protocol", SERVER_PROTOCOLS, &others)
    } else {
        p.require(cx, "protocol");
        None
    };
    let number = number?;
    Some(ServerPort {
        number,
        name: name
            .map(|n| n.value)
            .unwrap_or_else(|| format!("port-{number}")),
        protocol: protocol?,
    })
}

fn server_tls(cx: &mut Cx, t: &mut Obj<'_>) -> Option<ServerTls> {
    t.ignored(cx, &["credentialName", "credentialNames"]);
    t.unsupported(
        cx,
        &[
            "httpsRedirect",
            "verifyCertificateSpki",
            "verifyCertificateHash",
            "caCrl",
            "tlsCertificates",
        ],
    );
    // Istio's default mode is PASSTHROUGH (the enum's zero value).
    let mode = if t.has("mode") {
        t.enum_value(cx, "mode", TLS_MODES, UNSUPPORTED_TLS_MODES)
    } else {
        Some(ServerTlsMode::Passthrough)
    };
    let server_certificate = t.file(cx, "serverCertificate");
    let private_key = t.file(cx, "privateKey");
    let ca_certificates = t.file(cx, "caCertificates");
    let subject_alt_names = t
        .strings(cx, "subjectAltNames")
        .into_iter()
        .map(|s| s.value)
        .collect();
    let (min_protocol_version, max_protocol_version) = tls_params::versions(cx, t);
    let cipher_suites = tls_params::cipher_suites(cx, t);
    let mode = mode?;
    tls_params::warn_ineffective(cx, t, mode, &min_protocol_version, &cipher_suites);
    let required: &[(&str, bool)] = match mode {
        ServerTlsMode::Simple => &[
            ("serverCertificate", server_certificate.is_some()),
            ("privateKey", private_key.is_some()),
        ],
        ServerTlsMode::Mutual => &[
            ("serverCertificate", server_certificate.is_some()),
            ("privateKey", private_key.is_some()),
            ("caCertificates", ca_certificates.is_some()),
        ],
        ServerTlsMode::Passthrough | ServerTlsMode::IstioMutual => &[],
    };
    for (name, present) in required {
        if !present {
            let msg = format!(
                "{}: tls mode {} requires '{name}'",
                t.path(),
                mode_name(mode)
            );
            cx.error(t.span(), msg);
        }
    }
    Some(ServerTls {
        mode,
        server_certificate,
        private_key,
        ca_certificates,
        subject_alt_names,
        min_protocol_version,
        max_protocol_version,
        cipher_suites,
        span: t.span().clone(),
    })
}

/// The mode as Istio writes it, for messages.
pub(crate) fn mode_name(mode: ServerTlsMode) -> &'static str {
    TLS_MODES
        .iter()
        .find(|(_, m)| *m == mode)
        .map_or("?", |(n, _)| n)
}
