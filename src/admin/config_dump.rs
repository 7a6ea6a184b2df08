//! `/config_dump` and `/clusters`: what the current snapshot actually serves, as operators
//! inspect it on Envoy. Built from the compiled snapshot (not the file), so it shows the
//! effective state: bound listeners, bound virtual hosts, clusters with resolved endpoints.

use serde_json::{json, Value};

use super::server::Response;
use crate::config::protocol_name;
use crate::route::table::{HttpRoute, ListenerSpec, Snapshot, StrMatch};
use crate::runtime::control::Control;

pub fn config_dump(control: &Control) -> Response {
    let snapshot = control.snapshot();
    let gw = &snapshot.config.gateway;
    let body = json!({
        "generation": snapshot.generation,
        "source": snapshot.config.source.display().to_string(),
        "bootstrap": {
            "name": gw.name,
            "labels": gw.labels,
            "bindAddress": gw.bind_address.to_string(),
            "portMap": gw.port_map,
            "shards": control.shards,
            "admin": gw.admin.map(|a| a.to_string()),
            "logLevel": gw.log_level,
            "timeouts": {
                "connect": ms(gw.timeouts.connect), "headerRead": ms(gw.timeouts.header_read),
                "downstreamIdle": ms(gw.timeouts.downstream_idle), "tlsHandshake": ms(gw.timeouts.tls_handshake),
                "sniPeek": ms(gw.timeouts.sni_peek), "drain": ms(gw.timeouts.drain),
            },
            "limits": {
                "maxConnections": gw.limits.max_connections,
                "maxConnectionsPerListener": gw.limits.max_connections_per_listener,
                "maxRequestHeadersKb": gw.limits.max_request_headers_kb,
                "maxHeaders": gw.limits.max_headers,
                "maxRequestBodyBytes": gw.limits.max_request_body_bytes,
            },
            "pool": {"maxIdlePerCluster": gw.pool.max_idle_per_cluster, "idleTimeout": ms(gw.pool.idle_timeout)},
        },
        "listeners": snapshot.listeners.iter().map(|l| listener(l, &snapshot)).collect::<Vec<_>>(),
        "clusters": snapshot.clusters.iter().map(|c| json!({
            "name": &*c.name,
            "host": c.host,
            "port": c.port,
            "resolution": format!("{:?}", c.resolution),
            "lb": format!("{:?}", c.lb),
            "connectTimeout": ms(c.connect_timeout),
            "idleTimeout": ms(c.idle_timeout),
            "maxRequestsPerConnection": c.max_requests_per_connection,
            "http2": c.http2,
            "tls": c.tls.as_ref().map(|t| format!("{:?}", t.mode)),
            "dnsNames": c.dns_targets.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "endpoints": c.endpoints.iter().map(|e| json!({"address": e.addr.to_string(), "weight": e.weight, "labels": e.labels})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    Response::json(200, format!("{body:#}\n"))
}

fn ms(d: std::time::Duration) -> u128 {
    d.as_millis()
}

fn listener(l: &ListenerSpec, snapshot: &Snapshot) -> Value {
    json!({
        "name": l.name,
        "gatewayPort": l.gateway_port,
        "bound": l.bind.to_string(),
        "protocol": protocol_name(l.protocol),
        "servers": l.servers.iter().map(|s| json!({
            "gateway": s.gateway,
            "hosts": s.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "tlsMode": s.tls_mode.map(|m| format!("{m:?}")),
        })).collect::<Vec<_>>(),
        "virtualHosts": l.http.vhosts.iter().map(|v| json!({
            "domain": v.pattern.to_string(),
            "serverHosts": v.server_hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "routes": v.routes.iter().map(|r| route(r, snapshot)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn route(r: &HttpRoute, snapshot: &Snapshot) -> Value {
    let s = |m: &Option<StrMatch>| m.as_ref().map(str_match);
    json!({
        "name": r.name.as_deref(),
        "match": r.matches.iter().map(|m| json!({
            "uri": s(&m.uri), "authority": s(&m.authority), "method": s(&m.method),
            "headers": m.headers.iter().map(|(k, v)| json!({k.clone(): str_match(v)})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "destinations": r.destinations.iter().map(|d| json!({
            "cluster": &*snapshot.clusters[d.cluster].name, "weight": d.weight,
        })).collect::<Vec<_>>(),
        "timeout": r.timeout.map(ms),
        "retries": {"attempts": r.retry.attempts, "perTryTimeout": r.retry.per_try_timeout.map(ms),
                    "retryOn": r.retry.retry_on.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>()},
    })
}

fn str_match(m: &StrMatch) -> Value {
    match m {
        StrMatch::Exact(s) => json!({"exact": s}),
        StrMatch::Prefix(s) => json!({"prefix": s}),
        StrMatch::Regex(r) => json!({"regex": r.as_str()}),
    }
}

/// Envoy's `/clusters` text: `<cluster>::<key>::<value>` and per endpoint
/// `<cluster>::<address>::<key>::<value>`, with the merged cluster counters.
pub fn clusters(control: &Control) -> Response {
    let snapshot = control.snapshot();
    let scrape = control.stats.refresh(super::stats::SCRAPE_WAIT);
    let text = crate::obs::stats_render::render_envoy_text(&scrape.stats, None);
    let mut out = String::new();
    for c in &snapshot.clusters {
        out.push_str(&format!("{0}::observability_name::{0}\n", c.name));
        let prefix = format!("cluster.{}.", c.name);
        for line in text.lines().filter_map(|l| l.strip_prefix(&prefix)) {
            if let Some((k, v)) = line.split_once(": ") {
                if !v.contains('(') {
                    out.push_str(&format!("{}::{}::{}\n", c.name, k, v));
                }
            }
        }
        for e in &c.endpoints {
            out.push_str(&format!("{}::{}::health_flags::healthy\n", c.name, e.addr));
            out.push_str(&format!(
                "{}::{}::weight::{}\n",
                c.name,
                e.addr,
                e.weight.max(1)
            ));
        }
    }
    Response::text(200, out)
}
