//! The typed configuration: the bootstrap `EgressGateway` plus the Istio resources that apply
//! to a file-configured gateway. Built by `config::load` from the YAML tree; every resource and
//! every item that validation may point at carries a `Span` so that errors name
//! file:line:column. Nothing here does I/O or validation.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a YAML node starts: 1-based line and column in `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: Arc<PathBuf>,
    pub line: u32,
    pub col: u32,
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// The whole effective configuration of one load.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file that was loaded (relative paths inside it were resolved against its directory).
    pub source: PathBuf,
    pub gateway: Bootstrap,
    pub service_entries: Vec<ServiceEntry>,
    pub gateways: Vec<Gateway>,
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
}

/// `kind: EgressGateway`: every field has the default of DESIGN.md.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub bind_address: IpAddr,
    /// Gateway port -> port actually bound.
    pub port_map: BTreeMap<u16, u16>,
    /// 0 = one per CPU in the affinity mask.
    pub shards: usize,
    pub cpus: Vec<usize>,
    /// None = no admin server.
    pub admin: Option<SocketAddr>,
    pub access_log: AccessLogConfig,
    pub log_level: String,
    pub identity: Option<Identity>,
    pub resolver: ResolverConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub pool: PoolConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// "-" = stdout; "" = no access log (no writer thread); else a file, appended to.
    pub path: String,
    pub format: AccessLogFormat,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Istio,
    Json,
    /// An Envoy format string such as `%START_TIME% %RESPONSE_CODE%\n`.
    Custom(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    pub root_cert: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Empty = /etc/resolv.conf. "IP" entries get port 53.
    pub nameservers: Vec<SocketAddr>,
    pub deny_private_addresses: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub header_read: Duration,
    pub downstream_idle: Duration,
    pub tls_handshake: Duration,
    pub sni_peek: Duration,
    pub drain: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u64,
    /// 0 = unlimited.
    pub max_connections_per_listener: u64,
    pub max_request_headers_kb: u32,
    pub max_headers: u32,
    /// 0 = unlimited.
    pub max_request_body_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub max_idle_per_cluster: usize,
    pub idle_timeout: Duration,
}

/// `metadata` of an Istio resource (namespace and the rest only warn).
#[derive(Clone, Debug)]
pub struct Meta {
    pub name: String,
    /// Where the resource document starts (its `apiVersion`/`kind`).
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Http2,
    Grpc,
    Tls,
    Tcp,
    Mongo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Static,
    /// DNS and DNS_ROUND_ROBIN.
    Dns,
    None,
}

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub meta: Meta,
    /// Lower-cased, trailing dot removed; exact or `*.suffix`.
    pub hosts: Vec<Spanned<String>>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub endpoints: Vec<WorkloadEntry>,
}

#[derive(Clone, Debug)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct WorkloadEntry {
    /// An IP literal for STATIC; a DNS name (or IP) for DNS.
    pub address: String,
    /// ServiceEntry port name -> upstream port.
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    /// 0 when omitted (= equal weights).
    pub weight: u32,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Gateway {
    pub meta: Meta,
    /// Empty = applies to every gateway.
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<Server>,
}

#[derive(Clone, Debug)]
pub struct Server {
    /// `name` of the server, else the port name.
    pub name: String,
    pub port: ServerPort,
    /// Lower-cased, `ns/` prefix removed; exact, `*.suffix` or `*`.
    pub hosts: Vec<Spanned<String>>,
    pub tls: Option<ServerTls>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ServerPort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Clone, Debug)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    pub server_certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub ca_certificates: Option<PathBuf>,
    pub subject_alt_names: Vec<String>,
    /// "TLSV1_2" or "TLSV1_3" when set.
    pub min_protocol_version: Option<String>,
    /// "TLSV1_2" or "TLSV1_3" when set (TLS_AUTO = None).
    pub max_protocol_version: Option<String>,
    /// TLS 1.2 suites by their Envoy names (`config::tls_params::ACCEPTED_CIPHERS`), in
    /// preference order; empty = egressd's default set.
    pub cipher_suites: Vec<String>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct VirtualService {
    pub meta: Meta,
    /// Lower-cased; exact, `*.suffix` or `*`.
    pub hosts: Vec<Spanned<String>>,
    /// `ns/` prefix removed. Empty in the file = ["mesh"], as Istio reads it.
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub tls: Vec<TlsRoute>,
    pub tcp: Vec<TcpRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    /// RE2 syntax, full match.
    Regex(String),
}

#[derive(Clone, Debug)]
pub struct HttpMatch {
    pub name: Option<String>,
    /// Empty = inherit the VirtualService's `gateways`.
    pub gateways: Vec<String>,
    pub port: Option<u16>,
    pub uri: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, StringMatch>,
    pub method: Option<StringMatch>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Destination {
    /// Lower-cased.
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct WeightedDestination {
    pub destination: Destination,
    /// None when omitted.
    pub weight: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    Status5xx,
    Status503,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retries {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<RetryOn>,
}

#[derive(Clone, Debug)]
pub struct HttpRoute {
    pub name: Option<String>,
    /// Empty = matches everything.
    pub matches: Vec<HttpMatch>,
    pub route: Vec<WeightedDestination>,
    pub timeout: Option<Duration>,
    /// None = the default (2 retries on connect-failure).
    pub retries: Option<Retries>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct TlsMatch {
    /// Lower-cased; exact or `*.suffix`.
    pub sni_hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub port: Option<u16>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct TlsRoute {
    pub matches: Vec<TlsMatch>,
    pub route: Vec<WeightedDestination>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct L4Match {
    pub gateways: Vec<String>,
    pub port: Option<u16>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct TcpRoute {
    pub matches: Vec<L4Match>,
    pub route: Vec<WeightedDestination>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct DestinationRule {
    pub meta: Meta,
    /// Lower-cased.
    pub host: String,
    pub subsets: Vec<Subset>,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Clone, Debug)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<TrafficPolicy>,
    pub span: Span,
}

#[derive(Clone, Debug, Default)]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTls>,
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

#[derive(Clone, Debug, Default)]
pub struct PortTrafficPolicy {
    pub port: u16,
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTls>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalancer {
    RoundRobin,
    /// LEAST_REQUEST and LEAST_CONN.
    LeastRequest,
    Random,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    pub tcp_max_connections: Option<u32>,
    pub tcp_connect_timeout: Option<Duration>,
    pub tcp_idle_timeout: Option<Duration>,
    /// `tcpKeepalive.time` when set.
    pub tcp_keepalive_time: Option<Duration>,
    pub tcp_keepalive_interval: Option<Duration>,
    pub tcp_keepalive_probes: Option<u32>,
    pub http_max_requests_per_connection: Option<u32>,
    pub http_idle_timeout: Option<Duration>,
    pub http1_max_pending_requests: Option<u32>,
    pub max_retries: Option<u32>,
    /// true when `h2UpgradePolicy: UPGRADE`.
    pub h2_upgrade: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` / `consecutiveErrors`.
    pub consecutive_errors: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Clone, Debug)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    pub sni: Option<String>,
    pub ca_certificates: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub subject_alt_names: Vec<String>,
    pub span: Span,
}

/// A value with the place it was written.
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}
