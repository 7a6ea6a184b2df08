//! Binding VirtualService `tls` and `tcp` routes to the PASSTHROUGH and TCP servers of a
//! listener, and `tcp` routes to its terminating `protocol: TLS` servers (DESIGN.md's
//! server/route table). Part of `route::compile`: runs on the control
//! thread and creates clusters through the same `ClusterSet` as HTTP routes; it never
//! looks at sockets or decides what a connection does (that is `route::l4`'s lookup).

use super::{weighted, ClusterSet};
use crate::config::model::{Config, Protocol, ServerTlsMode, WeightedDestination};
use crate::route::host::HostPattern;
use crate::route::l4::{L4Route, L4Table, TlsRouteSpec};
use crate::route::table::ServerSpec;

/// Adds to `table` the `tls` and `tcp` routes DESIGN.md's server/route table gives `server`
/// (index `index` on the listener): PASSTHROUGH servers get `tls` (by sniHosts) then `tcp`
/// routes, TCP servers `tcp` routes only, terminating TLS servers their first `tcp` route
/// (for the decrypted stream); HTTPS servers none here (their http routes apply).
pub(super) fn bind_l4_routes(
    config: &Config,
    (index, server): (usize, &ServerSpec),
    protocol: Protocol,
    port: u16,
    table: &mut L4Table,
    clusters: &mut ClusterSet<'_>,
) {
    let passthrough = server.tls_mode == Some(ServerTlsMode::Passthrough);
    let tcp_server = protocol == Protocol::Tcp && server.tls_mode.is_none();
    let terminated = protocol == Protocol::Tls
        && matches!(
            server.tls_mode,
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::IstioMutual)
        );
    if !passthrough && !tcp_server && !terminated {
        return;
    }
    for vs in &config.virtual_services {
        let bound = vs.hosts.iter().any(|h| {
            let pattern = HostPattern::parse(&h.value);
            server.hosts.iter().any(|s| s.overlaps(&pattern))
        });
        if !bound {
            continue;
        }
        let applies = |gateways: &[String], match_port: Option<u16>| {
            super::applies_to_gateway(vs, gateways, &server.gateway)
                && match_port.is_none_or(|p| p == port)
        };
        if passthrough {
            for route in &vs.tls {
                let sni_hosts: Vec<HostPattern> = route
                    .matches
                    .iter()
                    .filter(|m| applies(&m.gateways, m.port))
                    .flat_map(|m| m.sni_hosts.iter().map(|h| HostPattern::parse(h)))
                    .collect();
                if !sni_hosts.is_empty() && !route.route.is_empty() {
                    table.tls.push(TlsRouteSpec {
                        sni_hosts,
                        server_hosts: server.hosts.clone(),
                        route: l4_route(&route.route, clusters),
                    });
                }
            }
        }
        for route in &vs.tcp {
            let applies_here = if route.matches.is_empty() {
                applies(&[], None)
            } else {
                route.matches.iter().any(|m| applies(&m.gateways, m.port))
            };
            if !applies_here || route.route.is_empty() {
                continue;
            }
            if !terminated {
                table.tcp.push(l4_route(&route.route, clusters));
            } else if table.terminated_route(index).is_none() {
                table
                    .terminated
                    .push((index, l4_route(&route.route, clusters)));
            }
        }
    }
}

fn l4_route(route: &[WeightedDestination], clusters: &mut ClusterSet<'_>) -> L4Route {
    let destinations = weighted(route, clusters);
    let total_weight = destinations.iter().map(|d| d.weight).sum();
    L4Route {
        destinations,
        total_weight,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::config::{load_str, LoadMode};
    use crate::route::compile::compile;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/3-tls-passthrough.yaml");

    #[test]
    fn the_guides_passthrough_binds_one_tls_route_and_skips_the_mesh_one() {
        let loaded = load_str(
            FIXTURE,
            Path::new("3-tls-passthrough.yaml"),
            LoadMode::Validate,
        )
        .expect("the fixture validates");
        let snapshot = compile(Arc::new(loaded.config), 1, &|_| None);
        let listener = snapshot.listener(443).expect("a 443 listener");
        assert_eq!(
            listener.l4.tls.len(),
            1,
            "the mesh-only route is the sidecars' business"
        );
        assert!(listener.l4.tcp.is_empty());
        let route = listener.l4.route(Some("edition.cnn.com")).expect("routed");
        let cluster = &snapshot.clusters[route.pick(7)];
        assert_eq!(&*cluster.name, "outbound|443||edition.cnn.com");
        assert!(listener.l4.route(Some("www.cnn.com")).is_none());
        assert!(listener.l4.route(None).is_none());
    }

    #[test]
    fn tcp_servers_take_tcp_routes_by_port_only() {
        let text = r#"
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 5432, name: tcp, protocol: TCP}
    hosts: [db.internal]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.internal]
  gateways: [gw]
  tcp:
  - match: [{port: 5433}]
    route: [{destination: {host: db.internal}}]
  - match: [{port: 5432}]
    route: [{destination: {host: db.internal, port: {number: 5432}}}]
"#;
        let loaded = load_str(text, Path::new("db.yaml"), LoadMode::Validate).expect("validates");
        let snapshot = compile(Arc::new(loaded.config), 1, &|_| None);
        let listener = snapshot.listener(5432).expect("listener");
        assert_eq!(
            listener.l4.tcp.len(),
            1,
            "the 5433 match is for another port"
        );
        let cluster = &snapshot.clusters[listener.l4.route(None).unwrap().pick(0)];
        assert_eq!(&*cluster.name, "outbound|5432||db.internal");
        assert_eq!(cluster.endpoints[0].addr.to_string(), "127.0.0.1:5432");
    }

    #[test]
    fn a_terminating_tls_server_gets_its_first_tcp_route_apart_from_passthrough() {
        let text = r#"
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com, www.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 443, name: tls-pass, protocol: TLS}
    hosts: [www.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 443, name: tls-mtls, protocol: TLS}
    hosts: [api.example.com]
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  gateways: [gw]
  tcp:
  - match: [{port: 8443}]
    route: [{destination: {host: www.example.com}}]
  - match: [{port: 443}]
    route: [{destination: {host: api.example.com, port: {number: 443}}}]
  - route: [{destination: {host: www.example.com}}]
"#;
        let loaded = load_str(text, Path::new("mix.yaml"), LoadMode::Validate).expect("validates");
        let snapshot = compile(Arc::new(loaded.config), 1, &|_| None);
        let listener = snapshot.listener(443).expect("listener");
        assert!(
            listener.l4.tcp.is_empty(),
            "passthrough binds no route of api's VirtualService"
        );
        assert!(listener.l4.terminated_route(0).is_none());
        let route = listener
            .l4
            .terminated_route(1)
            .expect("the mTLS server's route");
        assert_eq!(
            &*snapshot.clusters[route.pick(0)].name,
            "outbound|443||api.example.com"
        );
        assert_eq!(
            listener.l4.terminated.len(),
            1,
            "only the first matching tcp route"
        );
    }
}
