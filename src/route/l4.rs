//! L4 routing of one listener: the VirtualService `tls` routes (matched by SNI) and `tcp`
//! routes (matched by port) bound to its PASSTHROUGH and TCP servers, the `tcp` route that
//! forwards the decrypted stream of each terminating `protocol: TLS` server, and the choice
//! of the server an SNI selects on a TLS/HTTPS port.
//!
//! Owns the compiled route shapes and their lookups. Lookups allocate nothing and never
//! touch a socket; building the tables is `route::compile`'s job, acting on a verdict
//! (relay, terminate, close) is `proxy::tcp_conn`'s.

use super::host::HostPattern;
use super::table::{ServerSpec, WeightedCluster};
use crate::config::model::ServerTlsMode;
use crate::upstream::cluster::ClusterId;

/// The `tls` and `tcp` routes of one listener, in the order they bind.
#[derive(Debug, Default)]
pub struct L4Table {
    pub tls: Vec<TlsRouteSpec>,
    /// First match wins (Istio's order within and across VirtualServices).
    pub tcp: Vec<L4Route>,
    /// For each `protocol: TLS` server that terminates (SIMPLE, MUTUAL, ISTIO_MUTUAL), by its
    /// index in `ListenerSpec::servers`: the first `tcp` route bound to it, which forwards
    /// the decrypted stream. The SNI only selected the server; this route decides.
    pub terminated: Vec<(usize, L4Route)>,
}

/// One `tls` route as bound to one PASSTHROUGH server.
#[derive(Debug)]
pub struct TlsRouteSpec {
    /// The route's `sniHosts` from every match that applies to this server and port.
    pub sni_hosts: Vec<HostPattern>,
    /// The bound server's hosts: the SNI must match one of them too.
    pub server_hosts: Vec<HostPattern>,
    pub route: L4Route,
}

/// Where a matched connection goes: weighted destinations.
#[derive(Debug)]
pub struct L4Route {
    pub destinations: Vec<WeightedCluster>,
    /// Sum of `destinations` weights (> 0).
    pub total_weight: u32,
}

impl L4Route {
    /// Picks a destination by weight from a uniformly random `roll`.
    pub fn pick(&self, roll: u32) -> ClusterId {
        let mut point = roll % self.total_weight.max(1);
        for d in &self.destinations {
            if point < d.weight {
                return d.cluster;
            }
            point -= d.weight;
        }
        self.destinations[0].cluster
    }
}

impl L4Table {
    /// True when some route can only be chosen by SNI, so the ClientHello must be peeked.
    pub fn needs_sni(&self) -> bool {
        !self.tls.is_empty()
    }

    /// DESIGN.md's order for PASSTHROUGH servers: the `tls` route whose `sniHosts` match
    /// `sni` most specifically (exact before the longest wildcard, as Envoy orders filter
    /// chains by server name; file order breaks ties), else the first `tcp` route. `None`
    /// = no route: the connection is denied.
    pub fn route(&self, sni: Option<&str>) -> Option<&L4Route> {
        if let Some(sni) = sni {
            let mut best: Option<(&L4Route, usize)> = None;
            for t in &self.tls {
                if !t.server_hosts.iter().any(|h| h.matches(sni)) {
                    continue;
                }
                let rank = t
                    .sni_hosts
                    .iter()
                    .filter(|p| p.matches(sni))
                    .map(HostPattern::specificity)
                    .max();
                if let Some(rank) = rank {
                    if best.is_none_or(|(_, r)| rank > r) {
                        best = Some((&t.route, rank));
                    }
                }
            }
            if let Some((route, _)) = best {
                return Some(route);
            }
        }
        self.tcp.first()
    }

    /// The route for the decrypted stream of terminating server `server_index`; None = no
    /// tcp route is bound to it (the connection is denied).
    pub fn terminated_route(&self, server_index: usize) -> Option<&L4Route> {
        self.terminated
            .iter()
            .find(|(i, _)| *i == server_index)
            .map(|(_, r)| r)
    }
}

/// What a listener does with a new connection before any byte is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Relay by the first `tcp` route without reading anything (TCP servers, and
    /// PASSTHROUGH ports with no `tls` route).
    NoPeek,
    /// Peek the ClientHello: `tls` routes need the SNI, or it selects between servers
    /// that terminate and servers that pass through.
    PeekSni,
    /// Every server on the port terminates TLS: the handshake reads the hello itself.
    TerminateAll,
}

/// How the server an SNI selected handles the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    /// PASSTHROUGH: route by [`L4Table::route`] and relay untouched.
    Passthrough,
    /// SIMPLE / MUTUAL / ISTIO_MUTUAL: egressd terminates TLS (issue 4).
    Terminate(ServerTlsMode),
}

/// Whether connections on a port with these servers and routes need a peek first.
pub fn intake(servers: &[ServerSpec], table: &L4Table) -> Intake {
    if !servers.is_empty() && servers.iter().all(|s| terminates(s.tls_mode)) {
        Intake::TerminateAll
    } else if table.needs_sni() || servers.iter().any(|s| terminates(s.tls_mode)) {
        Intake::PeekSni
    } else {
        Intake::NoPeek
    }
}

/// The server `sni` selects among `servers` (one port): the most specific host match;
/// without an SNI, or when no server's hosts match it, a PASSTHROUGH server (its `tcp`
/// routes need no SNI) if there is one. TCP servers (no `tls` block) pass through.
pub fn select_server(servers: &[ServerSpec], sni: Option<&str>) -> Option<ServerAction> {
    let by_name = sni.and_then(|sni| {
        servers
            .iter()
            .filter_map(|s| {
                let rank = s
                    .hosts
                    .iter()
                    .filter(|h| h.matches(sni))
                    .map(HostPattern::specificity)
                    .max()?;
                Some((s, rank))
            })
            .fold(None::<(&ServerSpec, usize)>, |best, (s, rank)| match best {
                Some((_, r)) if r >= rank => best,
                _ => Some((s, rank)),
            })
            .map(|(s, _)| s)
    });
    let server = by_name.or_else(|| servers.iter().find(|s| !terminates(s.tls_mode)))?;
    Some(match server.tls_mode {
        Some(mode) if terminates(Some(mode)) => ServerAction::Terminate(mode),
        _ => ServerAction::Passthrough,
    })
}

fn terminates(mode: Option<ServerTlsMode>) -> bool {
    matches!(
        mode,
        Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::IstioMutual)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(cluster: ClusterId) -> L4Route {
        L4Route {
            destinations: vec![WeightedCluster { cluster, weight: 1 }],
            total_weight: 1,
        }
    }

    fn tls(sni: &[&str], server: &[&str], cluster: ClusterId) -> TlsRouteSpec {
        TlsRouteSpec {
            sni_hosts: sni.iter().map(|h| HostPattern::parse(h)).collect(),
            server_hosts: server.iter().map(|h| HostPattern::parse(h)).collect(),
            route: route(cluster),
        }
    }

    fn server(hosts: &[&str], mode: Option<ServerTlsMode>) -> ServerSpec {
        ServerSpec {
            gateway: "gw".into(),
            hosts: hosts.iter().map(|h| HostPattern::parse(h)).collect(),
            tls_mode: mode,
        }
    }

    fn picked(table: &L4Table, sni: Option<&str>) -> Option<ClusterId> {
        table.route(sni).map(|r| r.pick(0))
    }

    #[test]
    fn exact_sni_beats_wildcard_and_tcp_is_the_fallback() {
        let table = L4Table {
            tls: vec![
                tls(&["*.cnn.com"], &["*"], 1),
                tls(&["edition.cnn.com"], &["*"], 2),
            ],
            tcp: vec![route(3)],
            ..L4Table::default()
        };
        assert_eq!(picked(&table, Some("edition.cnn.com")), Some(2));
        assert_eq!(picked(&table, Some("www.cnn.com")), Some(1));
        assert_eq!(
            picked(&table, Some("cnn.com")),
            Some(3),
            "a wildcard never matches the bare suffix"
        );
        assert_eq!(picked(&table, None), Some(3));
    }

    #[test]
    fn sni_outside_the_server_hosts_matches_no_tls_route() {
        let table = L4Table {
            tls: vec![tls(&["*.cnn.com"], &["edition.cnn.com"], 1)],
            tcp: vec![],
            ..L4Table::default()
        };
        assert_eq!(picked(&table, Some("edition.cnn.com")), Some(1));
        assert_eq!(picked(&table, Some("www.cnn.com")), None);
        assert_eq!(picked(&table, None), None);
        assert_eq!(
            intake(&[server(&["*"], Some(ServerTlsMode::Passthrough))], &table),
            Intake::PeekSni
        );
    }

    #[test]
    fn sni_selects_terminating_or_passthrough_server() {
        let servers = [
            server(&["*.cnn.com"], Some(ServerTlsMode::Passthrough)),
            server(&["api.cnn.com"], Some(ServerTlsMode::Mutual)),
        ];
        assert_eq!(
            select_server(&servers, Some("api.cnn.com")),
            Some(ServerAction::Terminate(ServerTlsMode::Mutual))
        );
        assert_eq!(
            select_server(&servers, Some("edition.cnn.com")),
            Some(ServerAction::Passthrough)
        );
        assert_eq!(
            select_server(&servers, None),
            Some(ServerAction::Passthrough)
        );
        let only_mtls = [server(&["api.cnn.com"], Some(ServerTlsMode::IstioMutual))];
        assert_eq!(select_server(&only_mtls, Some("other.com")), None);
        assert_eq!(
            intake(&only_mtls, &L4Table::default()),
            Intake::TerminateAll
        );
        assert_eq!(
            intake(&servers, &L4Table::default()),
            Intake::PeekSni,
            "mixed: the SNI decides"
        );
        let tcp_only = [server(&["*"], None)];
        assert_eq!(
            intake(
                &tcp_only,
                &L4Table {
                    tls: vec![],
                    tcp: vec![route(0)],
                    ..L4Table::default()
                }
            ),
            Intake::NoPeek
        );
    }
}
