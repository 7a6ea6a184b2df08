//! Compiles the validated model into a `Snapshot`: listeners per Gateway port, HTTP virtual
//! hosts bound by the rules of DESIGN.md, and one cluster per (host, port, subset) that a
//! gateway-side route names. Runs on the control thread, at start and at every reload or
//! DNS change; it never fails on a model `config::load` accepted.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use regex::Regex;

use super::host::HostPattern;
use super::l4::L4Table;
use super::table::*;
use crate::config::model::{self, Config, Resolution, WeightedDestination};
use crate::upstream::cluster::{cluster_name, Cluster, ClusterId, DnsTarget, Endpoint};
use crate::upstream::policy::{self, ClusterPolicy};

/// What the control thread's DNS cache knows: the checked addresses of a name, if any.
pub type DnsLookup<'a> = &'a dyn Fn(&str) -> Option<Vec<IpAddr>>;

mod l4_bind;
use l4_bind::bind_l4_routes;

/// Compiles `config` into a snapshot numbered `generation`.
pub fn compile(config: Arc<Config>, generation: u64, dns: DnsLookup<'_>) -> Snapshot {
    let mut clusters = ClusterSet {
        config: &config,
        dns,
        list: Vec::new(),
    };
    let listeners = listeners(&config, &mut clusters);
    Snapshot {
        generation,
        listeners,
        clusters: clusters.list,
        config: config.clone(),
    }
}

/// The names every DNS cluster of `config` needs resolved (for the control thread).
pub fn dns_targets(snapshot: &Snapshot) -> Vec<String> {
    let mut names = Vec::new();
    for cluster in &snapshot.clusters {
        for target in &cluster.dns_targets {
            if !names.contains(&target.name) {
                names.push(target.name.clone());
            }
        }
    }
    names
}

/// Gateways whose selector is a subset of the bootstrap's labels (an empty selector: all).
pub fn selected_gateways(config: &Config) -> impl Iterator<Item = &model::Gateway> {
    let labels = &config.gateway.labels;
    config
        .gateways
        .iter()
        .filter(move |g| g.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Istio's binding rule: a match's `gateways` override the VirtualService's; the route
/// applies to `gateway` when the effective list names it.
pub fn applies_to_gateway(
    vs: &model::VirtualService,
    match_gateways: &[String],
    gateway: &str,
) -> bool {
    let effective = if match_gateways.is_empty() {
        &vs.gateways[..]
    } else {
        match_gateways
    };
    effective.iter().any(|g| g == gateway)
}

fn listeners(config: &Config, clusters: &mut ClusterSet<'_>) -> Vec<ListenerSpec> {
    let mut by_port: BTreeMap<u16, ListenerSpec> = BTreeMap::new();
    for gateway in selected_gateways(config) {
        for server in &gateway.servers {
            let port = server.port.number;
            let bound = config.gateway.port_map.get(&port).copied().unwrap_or(port);
            let listener = by_port.entry(port).or_insert_with(|| ListenerSpec {
                name: server.port.name.clone(),
                gateway_port: port,
                bind: SocketAddr::new(config.gateway.bind_address, bound),
                protocol: server.port.protocol,
                servers: Vec::new(),
                http: HttpTable::default(),
                l4: L4Table::default(),
            });
            let spec = ServerSpec {
                gateway: gateway.meta.name.clone(),
                hosts: server
                    .hosts
                    .iter()
                    .map(|h| HostPattern::parse(&h.value))
                    .collect(),
                tls_mode: server.tls.as_ref().map(|t| t.mode),
            };
            bind_http_routes(config, &spec, port, &mut listener.http, clusters);
            bind_l4_routes(
                config,
                (listener.servers.len(), &spec),
                server.port.protocol,
                port,
                &mut listener.l4,
                clusters,
            );
            listener.servers.push(spec);
        }
    }
    for listener in by_port.values_mut() {
        // Stable: among equally specific patterns, file order decides.
        listener
            .http
            .vhosts
            .sort_by_key(|v| std::cmp::Reverse(v.pattern.specificity()));
    }
    by_port.into_values().collect()
}

/// Adds to `table` every VirtualService host bound to `server` with the http routes that
/// apply to its gateway and port.
fn bind_http_routes(
    config: &Config,
    server: &ServerSpec,
    port: u16,
    table: &mut HttpTable,
    clusters: &mut ClusterSet<'_>,
) {
    for vs in &config.virtual_services {
        let mut routes = Vec::new();
        for route in &vs.http {
            let applies = |gateways: &[String]| applies_to_gateway(vs, gateways, &server.gateway);
            let matches: Vec<&model::HttpMatch> = route
                .matches
                .iter()
                .filter(|m| applies(&m.gateways) && m.port.is_none_or(|p| p == port))
                .collect();
            if matches.is_empty() && !(route.matches.is_empty() && applies(&[])) {
                continue;
            }
            let destinations = weighted(&route.route, clusters);
            let total_weight = destinations.iter().map(|d| d.weight).sum();
            routes.push(HttpRoute {
                name: route.name.as_deref().map(Arc::from),
                matches: matches.into_iter().map(compile_match).collect(),
                destinations,
                total_weight,
                timeout: route.timeout,
                retry: route
                    .retries
                    .as_ref()
                    .map_or_else(RetryPolicy::default, |r| RetryPolicy {
                        attempts: r.attempts,
                        per_try_timeout: r.per_try_timeout,
                        retry_on: r.retry_on.clone(),
                    }),
            });
        }
        if routes.is_empty() {
            continue;
        }
        let routes: Arc<[HttpRoute]> = routes.into();
        for host in &vs.hosts {
            let pattern = HostPattern::parse(&host.value);
            if server.hosts.iter().any(|h| h.overlaps(&pattern)) {
                table.vhosts.push(VirtualHost {
                    pattern,
                    server_hosts: server.hosts.clone(),
                    routes: routes.clone(),
                });
            }
        }
    }
}

/// Weights are relative; all omitted means equal.
fn weighted(route: &[WeightedDestination], clusters: &mut ClusterSet<'_>) -> Vec<WeightedCluster> {
    let all_omitted = route.iter().all(|d| d.weight.is_none());
    let mut out: Vec<WeightedCluster> = route
        .iter()
        .map(|d| WeightedCluster {
            cluster: clusters.get(&d.destination),
            weight: if all_omitted {
                1
            } else {
                d.weight.unwrap_or(0)
            },
        })
        .collect();
    if out.iter().all(|d| d.weight == 0) {
        out.iter_mut().for_each(|d| d.weight = 1);
    }
    out
}

fn compile_match(m: &model::HttpMatch) -> HttpMatch {
    HttpMatch {
        uri: m.uri.as_ref().map(compile_str),
        authority: m.authority.as_ref().map(compile_str),
        headers: m
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), compile_str(v)))
            .collect(),
        method: m.method.as_ref().map(compile_str),
    }
}

fn compile_str(m: &model::StringMatch) -> StrMatch {
    match m {
        model::StringMatch::Exact(s) => StrMatch::Exact(s.clone()),
        model::StringMatch::Prefix(s) => StrMatch::Prefix(s.clone()),
        // The loader checked the syntax; a full match is Istio's semantics.
        model::StringMatch::Regex(r) => StrMatch::Regex(
            Regex::new(&format!("^(?:{r})$")).unwrap_or_else(|_| Regex::new("$^").expect("static")),
        ),
    }
}

/// Clusters created on demand while routes are compiled, one per (host, port, subset).
struct ClusterSet<'a> {
    config: &'a Config,
    dns: DnsLookup<'a>,
    list: Vec<Arc<Cluster>>,
}

impl ClusterSet<'_> {
    fn get(&mut self, dest: &model::Destination) -> ClusterId {
        let entry = find_service_entry(self.config, &dest.host);
        let se_port = entry.and_then(|se| match dest.port {
            Some(n) => se.ports.iter().find(|p| p.number == n),
            None => se.ports.first(),
        });
        let port = se_port.map(|p| p.number).or(dest.port).unwrap_or(80);
        let name = cluster_name(port, dest.subset.as_deref(), &dest.host);
        if let Some(id) = self.list.iter().position(|c| *c.name == *name) {
            return id;
        }
        let policy = policy::for_destination(self.config, &dest.host, port, dest.subset.as_deref());
        let subset_labels = policy::subset_labels(self.config, &dest.host, dest.subset.as_deref());
        let (resolution, dns_targets, mut endpoints) = match (entry, se_port) {
            (Some(se), Some(sp)) => self.endpoints(se, sp, &dest.host),
            _ => (Resolution::None, Vec::new(), Vec::new()),
        };
        endpoints.retain(|e| {
            subset_labels
                .iter()
                .all(|(k, v)| e.labels.get(k) == Some(v))
        });
        let ClusterPolicy {
            lb,
            connect_timeout,
            idle_timeout,
            max_requests_per_connection,
            tls,
            max_connections,
            outlier,
            http2,
        } = policy;
        self.list.push(Arc::new(Cluster {
            name: name.into(),
            host: dest.host.clone(),
            port,
            resolution,
            endpoints,
            dns_targets,
            lb,
            connect_timeout,
            idle_timeout,
            max_requests_per_connection,
            tls,
            max_connections,
            outlier,
            http2,
        }));
        self.list.len() - 1
    }

    fn endpoints(
        &self,
        se: &model::ServiceEntry,
        port: &model::ServicePort,
        host: &str,
    ) -> (Resolution, Vec<DnsTarget>, Vec<Endpoint>) {
        let upstream_port = |e: Option<&model::WorkloadEntry>| {
            e.and_then(|e| e.ports.get(&port.name).copied())
                .or(port.target_port)
                .unwrap_or(port.number)
        };
        match se.resolution {
            Resolution::Static => {
                let endpoints = se
                    .endpoints
                    .iter()
                    .filter_map(|e| {
                        let ip: IpAddr = e.address.parse().ok()?;
                        Some(Endpoint {
                            addr: SocketAddr::new(ip, upstream_port(Some(e))),
                            weight: e.weight,
                            labels: e.labels.clone(),
                        })
                    })
                    .collect();
                (Resolution::Static, Vec::new(), endpoints)
            }
            Resolution::Dns => {
                let targets: Vec<DnsTarget> = if se.endpoints.is_empty() {
                    vec![DnsTarget {
                        name: host.to_string(),
                        port: upstream_port(None),
                        weight: 0,
                        labels: BTreeMap::new(),
                    }]
                } else {
                    se.endpoints
                        .iter()
                        .map(|e| DnsTarget {
                            name: e.address.clone(),
                            port: upstream_port(Some(e)),
                            weight: e.weight,
                            labels: e.labels.clone(),
                        })
                        .collect()
                };
                let endpoints = targets
                    .iter()
                    .flat_map(|t| {
                        (self.dns)(&t.name)
                            .unwrap_or_default()
                            .into_iter()
                            .map(move |ip| Endpoint {
                                addr: SocketAddr::new(ip, t.port),
                                weight: t.weight,
                                labels: t.labels.clone(),
                            })
                    })
                    .collect();
                (Resolution::Dns, targets, endpoints)
            }
            Resolution::None => (Resolution::None, Vec::new(), Vec::new()),
        }
    }
}

/// The ServiceEntry declaring `host`: an exact host first, else the longest wildcard.
pub fn find_service_entry<'c>(config: &'c Config, host: &str) -> Option<&'c model::ServiceEntry> {
    let mut best: Option<(&model::ServiceEntry, usize)> = None;
    for se in &config.service_entries {
        for h in &se.hosts {
            let pattern = HostPattern::parse(&h.value);
            let exact_name = h.value == host;
            if exact_name || pattern.matches(host) {
                let rank = if exact_name {
                    usize::MAX
                } else {
                    pattern.specificity()
                };
                if best.is_none_or(|(_, r)| rank > r) {
                    best = Some((se, rank));
                }
            }
        }
    }
    best.map(|(se, _)| se)
}
