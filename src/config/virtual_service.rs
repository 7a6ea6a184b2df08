//! `kind: VirtualService`: which hosts it serves, on which gateways, and its `http`, `tls` and
//! `tcp` routes; plus the destination list shared by the three route kinds.
//!
//! Owns reading one VirtualService `spec` (HTTP routes are in `http_route.rs`) and the local
//! rules: `gateways` default to `mesh`, `ns/` prefixes are dropped, weights are relative and
//! may not all be zero. It must not resolve destinations against ServiceEntries
//! (`validate.rs`).

use super::context::Cx;
use super::hosts::{host, host_list, strip_namespace, HostForm};
use super::http_route::http_route;
use super::model::{
    Destination, L4Match, Meta, Spanned, TcpRoute, TlsMatch, TlsRoute, VirtualService,
    WeightedDestination,
};
use super::reader::Obj;

pub(crate) fn load(cx: &mut Cx, spec: &mut Obj<'_>, meta: Meta) -> Option<VirtualService> {
    spec.ignored(cx, &["exportTo"]);
    let hosts = host_list(cx, spec, HostForm::NameOrStar);
    let mut gateways = gateway_names(spec.strings(cx, "gateways"));
    // Istio: no `gateways` means the sidecars only.
    if gateways.is_empty() {
        gateways.push("mesh".to_string());
    }
    let mut http = Vec::new();
    for mut r in spec.objs(cx, "http") {
        if let Some(route) = http_route(cx, &mut r) {
            http.push(route);
        }
        r.finish(cx);
    }
    let mut tls = Vec::new();
    for mut r in spec.objs(cx, "tls") {
        if let Some(route) = tls_route(cx, &mut r) {
            tls.push(route);
        }
        r.finish(cx);
    }
    let mut tcp = Vec::new();
    for mut r in spec.objs(cx, "tcp") {
        if let Some(route) = tcp_route(cx, &mut r) {
            tcp.push(route);
        }
        r.finish(cx);
    }
    Some(VirtualService {
        meta,
        hosts,
        gateways,
        http,
        tls,
        tcp,
    })
}

/// `istio-system/istio-egressgateway` -> `istio-egressgateway`.
pub(crate) fn gateway_names(raw: Vec<Spanned<String>>) -> Vec<String> {
    raw.into_iter()
        .map(|g| strip_namespace(g.value.trim()).to_string())
        .collect()
}

fn tls_route(cx: &mut Cx, r: &mut Obj<'_>) -> Option<TlsRoute> {
    let mut matches = Vec::new();
    for mut m in r.objs(cx, "match") {
        m.unsupported(
            cx,
            &["destinationSubnets", "sourceLabels", "sourceNamespace"],
        );
        let gateways = gateway_names(m.strings(cx, "gateways"));
        let port = m.port(cx, "port");
        m.require(cx, "sniHosts");
        let path = m.path_of("sniHosts");
        let sni_hosts = m
            .strings(cx, "sniHosts")
            .into_iter()
            .filter_map(|h| host(cx, h, HostForm::NameOrStar, &path))
            .map(|h| h.value)
            .collect();
        matches.push(TlsMatch {
            sni_hosts,
            gateways,
            port,
            span: m.span().clone(),
        });
        m.finish(cx);
    }
    if matches.is_empty() {
        cx.error(
            r.span(),
            format!("{}: a tls route needs at least one match", r.path()),
        );
    }
    let route = weighted_destinations(cx, r);
    Some(TlsRoute {
        matches,
        route,
        span: r.span().clone(),
    })
}

fn tcp_route(cx: &mut Cx, r: &mut Obj<'_>) -> Option<TcpRoute> {
    let mut matches = Vec::new();
    for mut m in r.objs(cx, "match") {
        m.unsupported(
            cx,
            &[
                "destinationSubnets",
                "sourceLabels",
                "sourceNamespace",
                "sourceSubnet",
            ],
        );
        let gateways = gateway_names(m.strings(cx, "gateways"));
        let port = m.port(cx, "port");
        matches.push(L4Match {
            gateways,
            port,
            span: m.span().clone(),
        });
        m.finish(cx);
    }
    let route = weighted_destinations(cx, r);
    Some(TcpRoute {
        matches,
        route,
        span: r.span().clone(),
    })
}

/// The `route` list of any route kind. Weights are relative: all omitted = equal shares; some
/// omitted = 0 for those (as Istio reads them); all given and all zero sends nowhere: error.
pub(crate) fn weighted_destinations(cx: &mut Cx, r: &mut Obj<'_>) -> Vec<WeightedDestination> {
    let present = r.has("route");
    let mut out = Vec::new();
    let items = r.objs(cx, "route");
    let count = items.len();
    for mut d in items {
        d.unsupported(cx, &["headers"]);
        let weight = d.u32(cx, "weight");
        let destination = match d.child(cx, "destination") {
            Some(mut o) => {
                let dest = destination(cx, &mut o);
                o.finish(cx);
                dest
            }
            None => {
                d.require(cx, "destination");
                None
            }
        };
        if let Some(destination) = destination {
            out.push(WeightedDestination {
                destination,
                weight,
            });
        }
        d.finish(cx);
    }
    if !present {
        cx.error(r.span(), format!("missing field 'route' in {}", r.path()));
    } else if count == 0 {
        cx.error(
            r.span(),
            format!("{}.route: at least one destination is required", r.path()),
        );
    }
    let given: Vec<u32> = out.iter().filter_map(|w| w.weight).collect();
    if !given.is_empty() && given.iter().all(|w| *w == 0) {
        cx.error(
            r.span(),
            format!(
                "{}.route: all weights are zero, nothing would receive traffic",
                r.path()
            ),
        );
    }
    out
}

fn destination(cx: &mut Cx, o: &mut Obj<'_>) -> Option<Destination> {
    let raw = o.req_string(cx, "host");
    let subset = o.string(cx, "subset").map(|s| s.value);
    let port = match o.child(cx, "port") {
        Some(mut p) => {
            let n = p.req_port(cx, "number");
            p.finish(cx);
            n
        }
        None => None,
    };
    let path = o.path_of("host");
    let h = host(cx, raw?, HostForm::Name, &path)?;
    Some(Destination {
        host: h.value,
        subset,
        port,
        span: h.span,
    })
}
