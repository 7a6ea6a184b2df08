//! `kind: EgressGateway`: the gateway's own settings, every one with the default written in
//! DESIGN.md, so that the document (or any field of it) may be left out.
//!
//! Owns the defaults and the reading of `spec`. It must not apply anything (binding, CPU
//! pinning and logging belong to the runtime) nor look at Istio resources.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::context::Cx;
use super::model::{
    AccessLogConfig, AccessLogFormat, Bootstrap, Identity, Limits, PoolConfig, ResolverConfig,
    Timeouts,
};
use super::reader::Obj;
use super::scalar::node_int;
use super::yaml::{Node, NodeKind};

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            name: "egressd".to_string(),
            labels: BTreeMap::from([("istio".to_string(), "egressgateway".to_string())]),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port_map: BTreeMap::new(),
            shards: 0,
            cpus: Vec::new(),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 15000))),
            access_log: AccessLogConfig {
                path: "-".to_string(),
                format: AccessLogFormat::Istio,
            },
            log_level: "info".to_string(),
            identity: None,
            resolver: ResolverConfig {
                nameservers: Vec::new(),
                deny_private_addresses: true,
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                header_read: Duration::from_secs(10),
                downstream_idle: Duration::from_secs(3600),
                tls_handshake: Duration::from_secs(10),
                sni_peek: Duration::from_secs(5),
                drain: Duration::from_secs(5),
            },
            limits: Limits {
                max_connections: 100_000,
                max_connections_per_listener: 0,
                max_request_headers_kb: 60,
                max_headers: 100,
                max_request_body_bytes: 0,
            },
            pool: PoolConfig {
                max_idle_per_cluster: 64,
                idle_timeout: Duration::from_secs(60),
            },
        }
    }
}

/// Reads the `spec` of an EgressGateway document over the defaults.
pub(crate) fn load_spec(cx: &mut Cx, spec: &mut Obj<'_>, b: &mut Bootstrap) {
    let labels = spec.string_map(cx, "labels");
    if spec.has("labels") {
        b.labels = labels;
    }
    if let Some(s) = spec.string(cx, "bindAddress") {
        match s.value.parse::<IpAddr>() {
            Ok(ip) => b.bind_address = ip,
            Err(_) => cx.error(
                &s.span,
                format!("spec.bindAddress: '{}' is not an IP address", s.value),
            ),
        }
    }
    if let Some(node) = spec.node(cx, "portMap") {
        b.port_map = port_map(cx, node);
    }
    if let Some(n) = spec.int(cx, "shards", 0, 4096) {
        b.shards = usize::try_from(n).unwrap_or(0);
    }
    for (path, node) in spec.list(cx, "cpus") {
        if let Some(c) = node_int(cx, node, &path, 0, 65535) {
            b.cpus.push(usize::try_from(c).unwrap_or(0));
        }
    }
    if b.shards > 0 && !b.cpus.is_empty() && b.shards > b.cpus.len() {
        let msg = format!(
            "more shards than CPUs: shards {} but cpus lists {}",
            b.shards,
            b.cpus.len()
        );
        cx.error(spec.span(), msg);
    }
    if let Some(s) = spec.string(cx, "admin") {
        b.admin = if s.value.is_empty() {
            None
        } else {
            match s.value.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    let msg = format!(
                        "spec.admin: '{}' is not IP:port (\"\" disables the admin server)",
                        s.value
                    );
                    cx.error(&s.span, msg);
                    b.admin
                }
            }
        };
    }
    if let Some(mut log) = spec.child(cx, "accessLog") {
        if let Some(p) = log.string(cx, "path") {
            // "-" is stdout and "" is no access log: neither is a file to resolve.
            b.access_log.path = if p.value == "-" || p.value.is_empty() {
                p.value
            } else {
                cx.resolve(&p.value).display().to_string()
            };
        }
        if let Some(f) = log.string(cx, "format") {
            b.access_log.format = match f.value.as_str() {
                "istio" => AccessLogFormat::Istio,
                "json" => AccessLogFormat::Json,
                _ => AccessLogFormat::Custom(f.value),
            };
        }
        log.finish(cx);
    }
    if let Some(s) = spec.string(cx, "logLevel") {
        match tracing_subscriber::EnvFilter::try_new(&s.value) {
            Ok(_) => b.log_level = s.value,
            Err(e) => cx.error(
                &s.span,
                format!("spec.logLevel: '{}' is not a log filter: {e}", s.value),
            ),
        }
    }
    if let Some(mut id) = spec.child(cx, "identity") {
        b.identity = identity(cx, &mut id);
        id.finish(cx);
    }
    if let Some(mut r) = spec.child(cx, "resolver") {
        for s in r.strings(cx, "nameservers") {
            match nameserver(&s.value) {
                Some(a) => b.resolver.nameservers.push(a),
                None => cx.error(
                    &s.span,
                    format!(
                        "spec.resolver.nameservers: '{}' is not IP or IP:port",
                        s.value
                    ),
                ),
            }
        }
        if let Some(v) = r.bool(cx, "denyPrivateAddresses") {
            b.resolver.deny_private_addresses = v;
        }
        r.finish(cx);
    }
    if let Some(mut t) = spec.child(cx, "timeouts") {
        let slots: [(&str, &mut Duration); 6] = [
            ("connect", &mut b.timeouts.connect),
            ("headerRead", &mut b.timeouts.header_read),
            ("downstreamIdle", &mut b.timeouts.downstream_idle),
            ("tlsHandshake", &mut b.timeouts.tls_handshake),
            ("sniPeek", &mut b.timeouts.sni_peek),
            ("drain", &mut b.timeouts.drain),
        ];
        for (name, slot) in slots {
            if let Some(d) = t.duration(cx, name) {
                *slot = d;
            }
        }
        t.finish(cx);
    }
    if let Some(mut l) = spec.child(cx, "limits") {
        let max = i64::MAX;
        if let Some(v) = l.int(cx, "maxConnections", 1, max) {
            b.limits.max_connections = v.unsigned_abs();
        }
        if let Some(v) = l.int(cx, "maxConnectionsPerListener", 0, max) {
            b.limits.max_connections_per_listener = v.unsigned_abs();
        }
        if let Some(v) = l.int(cx, "maxRequestHeadersKb", 1, 8192) {
            b.limits.max_request_headers_kb = u32::try_from(v).unwrap_or(60);
        }
        if let Some(v) = l.int(cx, "maxHeaders", 1, 65535) {
            b.limits.max_headers = u32::try_from(v).unwrap_or(100);
        }
        if let Some(v) = l.int(cx, "maxRequestBodyBytes", 0, max) {
            b.limits.max_request_body_bytes = v.unsigned_abs();
        }
        l.finish(cx);
    }
    if let Some(mut p) = spec.child(cx, "pool") {
        if let Some(v) = p.int(cx, "maxIdlePerCluster", 0, 1 << 20) {
            b.pool.max_idle_per_cluster = usize::try_from(v).unwrap_or(64);
        }
        if let Some(d) = p.duration(cx, "idleTimeout") {
            b.pool.idle_timeout = d;
        }
        p.finish(cx);
    }
}

/// `{80: 8080}`: gateway port -> bound port, both 1..65535.
fn port_map(cx: &mut Cx, node: &Node) -> BTreeMap<u16, u16> {
    let mut out = BTreeMap::new();
    let NodeKind::Map(entries) = &node.kind else {
        cx.error(
            &node.span,
            format!(
                "spec.portMap: expected a mapping, found {}",
                node.describe()
            ),
        );
        return out;
    };
    for (k, v) in entries {
        let from = node_int(cx, k, "spec.portMap", 1, 65535);
        let to = node_int(cx, v, "spec.portMap", 1, 65535);
        if let (Some(from), Some(to)) = (from, to) {
            let (Ok(from), Ok(to)) = (u16::try_from(from), u16::try_from(to)) else {
                continue;
            };
            if out.insert(from, to).is_some() {
                cx.error(&k.span, format!("spec.portMap: port {from} mapped twice"));
            }
        }
    }
    out
}

/// The gateway's own SPIFFE identity; all three files are needed together.
fn identity(cx: &mut Cx, id: &mut Obj<'_>) -> Option<Identity> {
    let mut files = Vec::with_capacity(3);
    for name in ["certChain", "privateKey", "rootCert"] {
        let s = id.req_string(cx, name)?;
        files.push(cx.file_ref(&s, id.path_of(name)));
    }
    let root_cert = files.pop()?;
    let private_key = files.pop()?;
    let cert_chain = files.pop()?;
    Some(Identity {
        cert_chain,
        private_key,
        root_cert,
    })
}

/// `8.8.8.8`, `8.8.8.8:5353`, `::1`, `[::1]:53`.
fn nameserver(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_take_port_53_by_default() {
        assert_eq!(nameserver("10.0.0.2"), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(
            nameserver("10.0.0.2:5353"),
            Some("10.0.0.2:5353".parse().unwrap())
        );
        assert_eq!(nameserver("[::1]:53"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(nameserver("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(nameserver("dns.google"), None);
    }

    #[test]
    fn defaults_are_design_md() {
        let b = Bootstrap::default();
        assert_eq!(b.admin, Some("127.0.0.1:15000".parse().unwrap()));
        assert_eq!(
            b.labels.get("istio").map(String::as_str),
            Some("egressgateway")
        );
        assert_eq!(b.timeouts.downstream_idle, Duration::from_secs(3600));
        assert_eq!(b.limits.max_connections, 100_000);
        assert_eq!(b.pool.max_idle_per_cluster, 64);
        assert!(b.resolver.deny_private_addresses);
    }
}
