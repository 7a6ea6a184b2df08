//! The compiled routing state one reload produces: listeners, their route tables, and the
//! clusters routes point at. Immutable once published; shards read it per request (HTTP)
//! or per connection (TCP/TLS). Lookups here allocate nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::host::HostPattern;
use super::l4::L4Table;
use crate::config::model::{Config, Protocol, RetryOn, ServerTlsMode};
use crate::upstream::cluster::{Cluster, ClusterId};

/// Everything the shards need from one configuration load.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per successful load; logs and `/config_dump` show it.
    pub generation: u64,
    pub listeners: Vec<ListenerSpec>,
    pub clusters: Vec<Arc<Cluster>>,
    /// The model this snapshot was compiled from (for `/config_dump` and recompiles).
    pub config: Arc<Config>,
}

impl Snapshot {
    pub fn listener(&self, gateway_port: u16) -> Option<&ListenerSpec> {
        self.listeners
            .iter()
            .find(|l| l.gateway_port == gateway_port)
    }

    pub fn cluster_by_name(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| *c.name == *name)
    }
}

/// One Gateway port: what is bound and how its connections are routed.
#[derive(Debug)]
pub struct ListenerSpec {
    /// The server port's name, as the `listening name=` log line shows it.
    pub name: String,
    /// The port routes match (`Gateway` port number).
    pub gateway_port: u16,
    /// The address actually bound (`bindAddress`, port through `portMap`).
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// The servers on this port, in file order.
    pub servers: Vec<ServerSpec>,
    pub http: HttpTable,
    /// `tls` and `tcp` routes of the PASSTHROUGH and TCP servers on this port.
    pub l4: L4Table,
}

#[derive(Debug)]
pub struct ServerSpec {
    /// `<gateway name>` the server belongs to.
    pub gateway: String,
    pub hosts: Vec<HostPattern>,
    pub tls_mode: Option<ServerTlsMode>,
}

/// HTTP virtual hosts of one listener, most specific host pattern first.
#[derive(Debug, Default)]
pub struct HttpTable {
    pub vhosts: Vec<VirtualHost>,
}

/// One VirtualService host bound to one server.
#[derive(Debug)]
pub struct VirtualHost {
    pub pattern: HostPattern,
    /// The bound server's hosts: the request's Host must match one of them too.
    pub server_hosts: Vec<HostPattern>,
    pub routes: Arc<[HttpRoute]>,
}

#[derive(Debug)]
pub struct HttpRoute {
    /// `%ROUTE_NAME%`.
    pub name: Option<Arc<str>>,
    /// Any one matching is enough; empty matches everything.
    pub matches: Vec<HttpMatch>,
    pub destinations: Vec<WeightedCluster>,
    /// Sum of `destinations` weights (> 0).
    pub total_weight: u32,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Copy)]
pub struct WeightedCluster {
    pub cluster: ClusterId,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    /// DESIGN.md's default: 2 retries on connect failure.
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            retry_on: vec![RetryOn::ConnectFailure],
        }
    }
}

impl RetryPolicy {
    pub fn retries_on(&self, cause: RetryOn) -> bool {
        self.retry_on.contains(&cause)
    }

    /// Whether a request already retried `tries` times may go again after `cause`.
    pub fn may_retry(&self, tries: u32, cause: RetryOn) -> bool {
        tries < self.attempts && self.retries_on(cause)
    }

    /// Whether an answer with `status` may be retried: any 5xx under `5xx`, a 503 also
    /// under `503`.
    pub fn retries_status(&self, tries: u32, status: u16) -> bool {
        status >= 500
            && (self.may_retry(tries, RetryOn::Status5xx)
                || (status == 503 && self.may_retry(tries, RetryOn::Status503)))
    }
}

#[derive(Debug)]
pub struct HttpMatch {
    pub uri: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    /// Lower-case header names.
    pub headers: Vec<(String, StrMatch)>,
    pub method: Option<StrMatch>,
}

#[derive(Debug)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    /// Anchored at both ends when compiled: Istio's regex is a full match.
    Regex(Regex),
}

impl StrMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(s) => value == s,
            StrMatch::Prefix(p) => value.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    /// Normalised host (see `host::normalize_host`).
    pub host: &'a str,
    /// The authority as sent (for `authority` matches).
    pub authority: &'a str,
    pub path: &'a str,
    pub method: &'a str,
    /// Header lookup by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
}

impl HttpTable {
    /// Envoy's order: the most specific virtual host whose pattern (and bound server)
    /// matches the host; within it, and within VirtualServices merged on the same pattern,
    /// the first route that matches. None = no route: the request is denied (NR).
    pub fn route(&self, req: &RequestView<'_>) -> Option<&HttpRoute> {
        let mut chosen: Option<&HostPattern> = None;
        for vhost in &self.vhosts {
            if let Some(pattern) = chosen {
                if *pattern != vhost.pattern {
                    return None;
                }
            }
            if !vhost.pattern.matches(req.host)
                || !vhost.server_hosts.iter().any(|h| h.matches(req.host))
            {
                continue;
            }
            chosen = Some(&vhost.pattern);
            if let Some(route) = vhost.routes.iter().find(|r| r.matches_request(req)) {
                return Some(route);
            }
        }
        None
    }
}

impl HttpRoute {
    fn matches_request(&self, req: &RequestView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }

    /// Picks a destination by weight from a uniformly random `roll`.
    pub fn pick(&self, roll: u32) -> ClusterId {
        let mut point = roll % self.total_weight;
        for d in &self.destinations {
            if point < d.weight {
                return d.cluster;
            }
            point -= d.weight;
        }
        self.destinations[0].cluster
    }
}

impl HttpMatch {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        self.uri.as_ref().is_none_or(|m| m.matches(req.path))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(req.authority))
            && self.method.as_ref().is_none_or(|m| m.matches(req.method))
            && self
                .headers
                .iter()
                .all(|(name, m)| (req.header)(name).is_some_and(|v| m.matches(v)))
    }
}
