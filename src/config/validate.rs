//! Cross-resource checks, run once every document is read: routes on the gateway reach
//! declared hosts, ports and subsets; servers sharing a port agree on the protocol; TLS
//! settings have what they need (files, the gateway's identity). Then the sidecar-side parts
//! are dropped: Gateways whose selector does not pick this gateway, DestinationRules for hosts
//! no ServiceEntry declares.
//!
//! Owns the rules between resources. It must not re-read YAML (positions come from the model)
//! nor compile route tables.

use std::collections::{BTreeMap, HashSet};

use super::context::Cx;
use super::gateway::mode_name;
use super::hosts::host_matches;
use super::model::{
    ClientTls, ClientTlsMode, Config, Destination, DestinationRule, Gateway, ServerTlsMode,
    ServiceEntry, TrafficPolicy, WeightedDestination,
};
use super::service_entry::protocol_name;

pub(crate) fn validate(cx: &mut Cx, config: &mut Config) {
    let defined: HashSet<&str> = config
        .gateways
        .iter()
        .map(|g| g.meta.name.as_str())
        .collect();
    check_gateway_names(cx, config, &defined);
    check_routes(cx, config, &defined);
    let labels = config.gateway.labels.clone();
    config
        .gateways
        .retain(|g| g.selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    check_servers(cx, config);
    let ses = config.service_entries.clone();
    config
        .destination_rules
        .retain(|dr| ses.iter().any(|se| declares(se, &dr.host)));
    check_destination_rules(cx, config);
    let applied: HashSet<(&str, &str)> = config
        .gateways
        .iter()
        .map(|g| ("Gateway", g.meta.name.as_str()))
        .chain(
            config
                .destination_rules
                .iter()
                .map(|d| ("DestinationRule", d.meta.name.as_str())),
        )
        .collect();
    cx.check_files(|kind, name| applied.contains(&(kind, name)));
}

fn declares(se: &ServiceEntry, host: &str) -> bool {
    se.hosts.iter().any(|h| host_matches(&h.value, host))
}

/// A VirtualService naming a Gateway nobody defines binds to nothing: likely a typo.
fn check_gateway_names(cx: &mut Cx, config: &Config, defined: &HashSet<&str>) {
    for vs in &config.virtual_services {
        let from_matches = vs
            .http
            .iter()
            .flat_map(|r| r.matches.iter().flat_map(|m| &m.gateways))
            .chain(
                vs.tls
                    .iter()
                    .flat_map(|r| r.matches.iter().flat_map(|m| &m.gateways)),
            )
            .chain(
                vs.tcp
                    .iter()
                    .flat_map(|r| r.matches.iter().flat_map(|m| &m.gateways)),
            );
        let mut warned = HashSet::new();
        for g in vs.gateways.iter().chain(from_matches) {
            if g != "mesh" && !defined.contains(g.as_str()) && warned.insert(g.clone()) {
                let msg = format!("VirtualService '{}' names gateway '{g}', which no Gateway in this file defines", vs.meta.name);
                cx.warn(&vs.meta.span, msg);
            }
        }
    }
}

/// A route is gateway-side when one of its effective gateways (the match's own list, else the
/// VirtualService's) is a Gateway of this file; `mesh`-only routes belong to the sidecars.
fn gateway_side<'a>(
    vs_gateways: &'a [String],
    matches: impl Iterator<Item = &'a [String]>,
    defined: &HashSet<&str>,
) -> bool {
    let mut any = false;
    let mut hit = false;
    for m in matches {
        any = true;
        let effective = if m.is_empty() { vs_gateways } else { m };
        hit |= effective.iter().any(|g| defined.contains(g.as_str()));
    }
    if !any {
        hit = vs_gateways.iter().any(|g| defined.contains(g.as_str()));
    }
    hit
}

fn check_routes(cx: &mut Cx, config: &Config, defined: &HashSet<&str>) {
    for vs in &config.virtual_services {
        let g = &vs.gateways;
        let mut dests: Vec<&WeightedDestination> = Vec::new();
        for r in &vs.http {
            if gateway_side(g, r.matches.iter().map(|m| m.gateways.as_slice()), defined) {
                dests.extend(&r.route);
            }
        }
        for r in &vs.tls {
            if gateway_side(g, r.matches.iter().map(|m| m.gateways.as_slice()), defined) {
                dests.extend(&r.route);
            }
        }
        for r in &vs.tcp {
            if gateway_side(g, r.matches.iter().map(|m| m.gateways.as_slice()), defined) {
                dests.extend(&r.route);
            }
        }
        for d in dests {
            check_destination(cx, config, &d.destination);
        }
    }
}

fn check_destination(cx: &mut Cx, config: &Config, d: &Destination) {
    let Some(se) = config
        .service_entries
        .iter()
        .find(|se| declares(se, &d.host))
    else {
        let msg = format!(
            "route to '{}': host not declared by any ServiceEntry",
            d.host
        );
        cx.error(&d.span, msg);
        return;
    };
    let numbers: Vec<String> = se.ports.iter().map(|p| p.number.to_string()).collect();
    match d.port {
        None if se.ports.len() > 1 => {
            let msg = format!(
                "route to '{}' needs a destination port: ServiceEntry '{}' has several ports ({})",
                d.host,
                se.meta.name,
                numbers.join(", ")
            );
            cx.error(&d.span, msg);
        }
        Some(p) if !se.ports.iter().any(|sp| sp.number == p) => {
            let msg = format!(
                "route to '{}': port {p} is not a port of ServiceEntry '{}' ({})",
                d.host,
                se.meta.name,
                numbers.join(", ")
            );
            cx.error(&d.span, msg);
        }
        _ => {}
    }
    if let Some(subset) = &d.subset {
        let found = config
            .destination_rules
            .iter()
            .filter(|dr| host_matches(&dr.host, &d.host))
            .any(|dr| dr.subsets.iter().any(|s| &s.name == subset));
        if !found {
            let msg = format!(
                "route to '{}': subset '{subset}' is defined by no DestinationRule for this host",
                d.host
            );
            cx.error(&d.span, msg);
        }
    }
}

/// Servers of the applied Gateways: one protocol per port, TLS material present.
fn check_servers(cx: &mut Cx, config: &Config) {
    let mut by_port: BTreeMap<u16, (&Gateway, usize)> = BTreeMap::new();
    for g in &config.gateways {
        for (i, s) in g.servers.iter().enumerate() {
            match by_port.get(&s.port.number) {
                Some((pg, pi)) => {
                    let first = &pg.servers[*pi];
                    if first.port.protocol != s.port.protocol {
                        let msg = format!(
                            "port {}: protocol {} conflicts with {} of server '{}' in Gateway '{}' at {}",
                            s.port.number,
                            protocol_name(s.port.protocol),
                            protocol_name(first.port.protocol),
                            first.name,
                            pg.meta.name,
                            first.span
                        );
                        cx.error(&s.span, msg);
                    }
                }
                None => {
                    by_port.insert(s.port.number, (g, i));
                }
            }
            let Some(tls) = &s.tls else { continue };
            if tls.mode == ServerTlsMode::IstioMutual && config.gateway.identity.is_none() {
                let msg = format!("server '{}': tls mode {} needs the gateway's identity (spec.identity of the EgressGateway document)", s.name, mode_name(tls.mode));
                cx.error(&tls.span, msg);
            }
        }
    }
}

/// Kept rules are gateway-side: their TLS origination must be able to run here.
fn check_destination_rules(cx: &mut Cx, config: &Config) {
    let has_identity = config.gateway.identity.is_some();
    for dr in &config.destination_rules {
        for tls in client_tls_settings(dr) {
            if tls.mode == ClientTlsMode::IstioMutual && !has_identity {
                let msg = format!("DestinationRule '{}': tls mode ISTIO_MUTUAL needs the gateway's identity (spec.identity of the EgressGateway document)", dr.meta.name);
                cx.error(&tls.span, msg);
            }
        }
    }
}

fn client_tls_settings(dr: &DestinationRule) -> Vec<&ClientTls> {
    fn of(p: &TrafficPolicy) -> impl Iterator<Item = &ClientTls> {
        p.tls
            .iter()
            .chain(p.port_level_settings.iter().filter_map(|s| s.tls.as_ref()))
    }
    dr.traffic_policy
        .iter()
        .chain(dr.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()))
        .flat_map(of)
        .collect()
}
