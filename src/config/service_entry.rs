//! `kind: ServiceEntry`: the external hosts the gateway may reach, their ports and how their
//! addresses are found (STATIC endpoints, DNS, or NONE = the request's own host).
//!
//! Owns reading one ServiceEntry `spec` and the checks local to it (port names unique,
//! endpoint ports naming declared ports, STATIC endpoints being IP literals). It must not look
//! at other resources: cross-resource rules live in `validate.rs`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::context::Cx;
use super::hosts::{host_list, HostForm};
use super::model::{Meta, Protocol, Resolution, ServiceEntry, ServicePort, WorkloadEntry};
use super::reader::Obj;
use super::scalar::node_int;
use super::yaml::NodeKind;

/// Protocols egressd models, as Istio spells them.
pub(crate) const PROTOCOLS: &[(&str, Protocol)] = &[
    ("HTTP", Protocol::Http),
    ("HTTPS", Protocol::Https),
    ("HTTP2", Protocol::Http2),
    ("GRPC", Protocol::Grpc),
    ("TLS", Protocol::Tls),
    ("TCP", Protocol::Tcp),
    ("MONGO", Protocol::Mongo),
];

/// Valid Istio protocols that egressd does not carry.
pub(crate) const UNSUPPORTED_PROTOCOLS: &[&str] =
    &["GRPC-Web", "MYSQL", "REDIS", "UDP", "HTTP_PROXY"];

/// The protocol as Istio writes it, for messages.
pub fn protocol_name(p: Protocol) -> &'static str {
    PROTOCOLS
        .iter()
        .find(|(_, q)| *q == p)
        .map_or("?", |(n, _)| n)
}

const RESOLUTIONS: &[(&str, Resolution)] = &[
    ("STATIC", Resolution::Static),
    ("DNS", Resolution::Dns),
    ("DNS_ROUND_ROBIN", Resolution::Dns),
    ("NONE", Resolution::None),
];

pub(crate) fn load(cx: &mut Cx, spec: &mut Obj<'_>, meta: Meta) -> Option<ServiceEntry> {
    spec.ignored(
        cx,
        &[
            "exportTo",
            "location",
            "addresses",
            "workloadSelector",
            "subjectAltNames",
        ],
    );
    let hosts = host_list(cx, spec, HostForm::Name);
    spec.require(cx, "ports");
    let ports: Vec<ServicePort> = spec
        .objs(cx, "ports")
        .into_iter()
        .filter_map(|mut p| {
            let port = service_port(cx, &mut p);
            p.finish(cx);
            port
        })
        .collect();
    for (i, p) in ports.iter().enumerate() {
        if let Some(first) = ports[..i]
            .iter()
            .find(|q| q.number == p.number || q.name == p.name)
        {
            let msg = format!(
                "spec.ports: port {} '{}' repeats port {} '{}' at {}",
                p.number, p.name, first.number, first.name, first.span
            );
            cx.error(&p.span, msg);
        }
    }
    // Istio's default resolution is NONE.
    let resolution = spec
        .enum_value(cx, "resolution", RESOLUTIONS, &[])
        .unwrap_or(Resolution::None);
    let mut endpoints = Vec::new();
    for mut e in spec.objs(cx, "endpoints") {
        if let Some(ep) = endpoint(cx, &mut e, &ports, resolution) {
            endpoints.push(ep);
        }
        e.finish(cx);
    }
    if resolution == Resolution::Static && endpoints.is_empty() && spec.has("hosts") {
        cx.error(
            spec.span(),
            "spec.endpoints: resolution STATIC needs at least one endpoint",
        );
    }
    if resolution == Resolution::Dns && endpoints.is_empty() {
        for h in hosts.iter().filter(|h| h.value.starts_with('*')) {
            let msg = format!("spec.hosts: wildcard host '{}' cannot be resolved by DNS without endpoints (use resolution NONE)", h.value);
            cx.error(&h.span, msg);
        }
    }
    Some(ServiceEntry {
        meta,
        hosts,
        ports,
        resolution,
        endpoints,
    })
}

fn service_port(cx: &mut Cx, p: &mut Obj<'_>) -> Option<ServicePort> {
    let number = p.req_port(cx, "number");
    let name = p.req_string(cx, "name");
    let protocol = if p.has("protocol") {
        p.enum_value(cx, "protocol", PROTOCOLS, UNSUPPORTED_PROTOCOLS)
    } else {
        p.require(cx, "protocol");
        None
    };
    let target_port = p.port(cx, "targetPort");
    Some(ServicePort {
        number: number?,
        name: name?.value,
        protocol: protocol?,
        target_port,
        span: p.span().clone(),
    })
}

fn endpoint(
    cx: &mut Cx,
    e: &mut Obj<'_>,
    ports: &[ServicePort],
    resolution: Resolution,
) -> Option<WorkloadEntry> {
    e.ignored(cx, &["locality", "network"]);
    e.unsupported(cx, &["serviceAccount"]);
    let address = e.req_string(cx, "address");
    let labels = e.string_map(cx, "labels");
    let weight = e.u32(cx, "weight").unwrap_or(0);
    let mut port_map = BTreeMap::new();
    if let Some(node) = e.node(cx, "ports") {
        let path = e.path_of("ports");
        match &node.kind {
            NodeKind::Map(entries) => {
                for (k, v) in entries {
                    let name = k.as_scalar().unwrap_or_default().to_string();
                    if !ports.iter().any(|p| p.name == name) {
                        let known: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                        let msg = format!(
                            "{path}: '{name}' is not a port name of this ServiceEntry (ports: {})",
                            known.join(", ")
                        );
                        cx.error(&k.span, msg);
                    }
                    if let Some(n) = node_int(cx, v, &format!("{path}.{name}"), 1, 65535) {
                        port_map.insert(name, u16::try_from(n).unwrap_or(0));
                    }
                }
            }
            _ => cx.error(
                &node.span,
                format!(
                    "{path}: expected a mapping of port name to number, found {}",
                    node.describe()
                ),
            ),
        }
    }
    let address = address?;
    if address.value.starts_with("unix://") {
        cx.error(
            &address.span,
            format!(
                "unsupported by egressd: {} (unix socket)",
                e.path_of("address")
            ),
        );
        return None;
    }
    if resolution == Resolution::Static && address.value.parse::<IpAddr>().is_err() {
        let msg = format!(
            "{}: '{}' is not an IP address (resolution STATIC needs IP endpoints)",
            e.path_of("address"),
            address.value
        );
        cx.error(&address.span, msg);
        return None;
    }
    Some(WorkloadEntry {
        address: address.value,
        ports: port_map,
        labels,
        weight,
        span: e.span().clone(),
    })
}
