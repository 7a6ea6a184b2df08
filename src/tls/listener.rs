//! The terminating servers of one listener as a shard sees them: each server's hosts and
//! its (reloading) rustls config, and the choice of server by SNI. Built lazily per shard
//! from the snapshot, once per snapshot generation and listener, then reused by every
//! handshake; the configs themselves are shared process-wide through `store`.
//!
//! Owns: mapping SNI → server; the domain-fronting rule (Host must match the SNI's server).
//! Must not: parse certificates per connection or take a lock per handshake.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use rustls::ServerConfig;

use super::server::ServerSpec;
use super::store::Entry;
use crate::config::model::{self, ServerTlsMode};
use crate::route::compile::selected_gateways;
use crate::route::host::HostPattern;
use crate::route::table::{ListenerSpec, ServerSpec as RouteServer, Snapshot};

/// One server on the port that terminates TLS.
pub struct TermServer {
    /// Index in `ListenerSpec::servers`.
    pub index: usize,
    pub gateway: String,
    pub hosts: Vec<HostPattern>,
    /// Err: the files did not load; handshakes for this server are refused (and logged).
    pub config: Result<Arc<Entry<ServerSpec>>, String>,
}

impl TermServer {
    /// The rustls config new handshakes use (the latest reloaded one).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, &str> {
        match &self.config {
            Ok(entry) => Ok(entry.current()),
            Err(e) => Err(e),
        }
    }
}

pub struct ListenerTls {
    pub servers: Vec<TermServer>,
}

thread_local! {
    /// (snapshot generation, gateway port) → servers. Only the current generation is kept.
    static CACHE: RefCell<HashMap<(u64, u16), Rc<ListenerTls>>> = RefCell::new(HashMap::new());
}

impl ListenerTls {
    /// The shard's view of `listener`'s terminating servers in `snapshot`.
    pub fn get(snapshot: &Snapshot, listener: &ListenerSpec) -> Rc<ListenerTls> {
        let key = (snapshot.generation, listener.gateway_port);
        if let Some(found) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
            return found;
        }
        let built = Rc::new(Self::build(snapshot, listener));
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|(generation, _), _| *generation == snapshot.generation);
            c.insert(key, built.clone());
        });
        built
    }

    fn build(snapshot: &Snapshot, listener: &ListenerSpec) -> ListenerTls {
        let config = &snapshot.config;
        let servers = model_servers(config, listener.gateway_port)
            .enumerate()
            .filter_map(|(index, server)| {
                let tls = server.tls.as_ref()?;
                if tls.mode == ServerTlsMode::Passthrough {
                    return None;
                }
                let spec = listener.servers.get(index)?;
                let built = ServerSpec::from_model(tls, &config.gateway)
                    .and_then(|s| s.ok_or(crate::tls::pem::TlsConfigError::Missing("tls mode")))
                    .and_then(|s| s.entry())
                    .map_err(|e| {
                        tracing::error!(port = listener.gateway_port, server = %server.port.name, error = %e, "tls server config does not load; its handshakes are refused");
                        e.to_string()
                    });
                Some(TermServer {
                    index,
                    gateway: spec.gateway.clone(),
                    hosts: spec.hosts.clone(),
                    config: built,
                })
            })
            .collect();
        ListenerTls { servers }
    }

    /// The server a ClientHello with `sni` belongs to: the most specific host match, file
    /// order among equals. Without SNI only a server with host `*` accepts.
    pub fn select(&self, sni: Option<&str>) -> Option<&TermServer> {
        let mut best: Option<(&TermServer, usize)> = None;
        for server in &self.servers {
            for pattern in &server.hosts {
                let hit = match sni {
                    Some(name) => pattern.matches(name),
                    None => *pattern == HostPattern::Any,
                };
                let rank = pattern.specificity();
                if hit && best.is_none_or(|(_, r)| rank > r) {
                    best = Some((server, rank));
                }
            }
        }
        best.map(|(s, _)| s)
    }
}

/// The model's servers on `port`, in the order `route::compile` lists them in
/// `ListenerSpec::servers` (selected gateways in file order, their servers in order).
fn model_servers(config: &model::Config, port: u16) -> impl Iterator<Item = &model::Server> {
    selected_gateways(config)
        .flat_map(|g| g.servers.iter())
        .filter(move |s| s.port.number == port)
}

/// Domain fronting: after termination, the request's Host must match the hosts of the
/// server its SNI selected (else 421). `servers` are the listener's. True when there is no
/// such server for the
/// SNI (then the handshake would not have completed) or `sni` is plain-HTTP's None.
pub fn host_allowed(servers: &[RouteServer], sni: Option<&str>, host: &str) -> bool {
    let Some(sni) = sni else { return true };
    let mut best: Option<(&[HostPattern], usize)> = None;
    for server in servers {
        if matches!(server.tls_mode, None | Some(ServerTlsMode::Passthrough)) {
            continue;
        }
        for pattern in &server.hosts {
            let rank = pattern.specificity();
            if pattern.matches(sni) && best.is_none_or(|(_, r)| rank > r) {
                best = Some((&server.hosts, rank));
            }
        }
    }
    best.is_none_or(|(hosts, _)| hosts.iter().any(|h| h.matches(host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(index: usize, hosts: &[&str]) -> TermServer {
        TermServer {
            index,
            gateway: "gw".into(),
            hosts: hosts.iter().map(|h| HostPattern::parse(h)).collect(),
            config: Err("not built in this test".into()),
        }
    }

    #[test]
    fn the_most_specific_server_wins_and_no_sni_needs_a_catch_all() {
        let tls = ListenerTls {
            servers: vec![
                server(0, &["*.cnn.com"]),
                server(1, &["edition.cnn.com"]),
                server(2, &["*"]),
            ],
        };
        let pick = |sni| tls.select(sni).map(|s| s.index);
        assert_eq!(pick(Some("edition.cnn.com")), Some(1));
        assert_eq!(pick(Some("money.cnn.com")), Some(0));
        assert_eq!(pick(Some("example.org")), Some(2));
        assert_eq!(pick(None), Some(2));
        let strict = ListenerTls {
            servers: vec![server(0, &["edition.cnn.com"])],
        };
        assert!(strict.select(None).is_none());
        assert!(strict.select(Some("cnn.com")).is_none());
    }

    #[test]
    fn a_host_outside_the_sni_servers_hosts_is_fronting() {
        let spec = |hosts: &[&str], mode| RouteServer {
            gateway: "gw".into(),
            hosts: hosts.iter().map(|h| HostPattern::parse(h)).collect(),
            tls_mode: Some(mode),
        };
        let servers = [
            spec(&["edition.cnn.com"], ServerTlsMode::Mutual),
            spec(&["*.example.com"], ServerTlsMode::Simple),
            spec(&["*"], ServerTlsMode::Passthrough),
        ];
        assert!(host_allowed(
            &servers,
            Some("edition.cnn.com"),
            "edition.cnn.com"
        ));
        assert!(!host_allowed(
            &servers,
            Some("edition.cnn.com"),
            "a.example.com"
        ));
        assert!(host_allowed(
            &servers,
            Some("a.example.com"),
            "b.example.com"
        ));
        assert!(!host_allowed(
            &servers,
            Some("a.example.com"),
            "edition.cnn.com"
        ));
        assert!(host_allowed(&servers, None, "anything"));
    }
}
