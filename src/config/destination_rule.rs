//! `kind: DestinationRule`: how the gateway talks to a host once routed there: subsets (by
//! endpoint labels), load balancing, connection pool, outlier detection, TLS origination, and
//! the per-port variants of these.
//!
//! Owns reading one DestinationRule `spec` and the local TLS rule (MUTUAL needs a client
//! certificate and key). It must not decide whether the rule applies: rules for hosts that no
//! ServiceEntry declares are sidecar-side and dropped by `validate.rs`.

use super::context::Cx;
use super::hosts::{host, HostForm};
use super::model::{
    ClientTls, ClientTlsMode, ConnectionPool, DestinationRule, LoadBalancer, Meta,
    OutlierDetection, PortTrafficPolicy, Subset, TrafficPolicy,
};
use super::reader::Obj;

const LOAD_BALANCERS: &[(&str, LoadBalancer)] = &[
    ("ROUND_ROBIN", LoadBalancer::RoundRobin),
    ("LEAST_REQUEST", LoadBalancer::LeastRequest),
    ("LEAST_CONN", LoadBalancer::LeastRequest),
    ("RANDOM", LoadBalancer::Random),
];

const CLIENT_TLS_MODES: &[(&str, ClientTlsMode)] = &[
    ("DISABLE", ClientTlsMode::Disable),
    ("SIMPLE", ClientTlsMode::Simple),
    ("MUTUAL", ClientTlsMode::Mutual),
    ("ISTIO_MUTUAL", ClientTlsMode::IstioMutual),
];

pub(crate) fn load(cx: &mut Cx, spec: &mut Obj<'_>, meta: Meta) -> Option<DestinationRule> {
    spec.ignored(cx, &["exportTo", "workloadSelector"]);
    let raw = spec.req_string(cx, "host");
    let mut subsets = Vec::new();
    for mut s in spec.objs(cx, "subsets") {
        let name = s.req_string(cx, "name");
        let labels = s.string_map(cx, "labels");
        let traffic_policy = policy_field(cx, &mut s);
        if let Some(name) = name {
            if subsets.iter().any(|x: &Subset| x.name == name.value) {
                cx.error(
                    &name.span,
                    format!("{}: subset '{}' defined twice", s.path(), name.value),
                );
            }
            subsets.push(Subset {
                name: name.value,
                labels,
                traffic_policy,
                span: s.span().clone(),
            });
        }
        s.finish(cx);
    }
    let traffic_policy = policy_field(cx, spec);
    let path = spec.path_of("host");
    let h = host(cx, raw?, HostForm::Name, &path)?;
    Some(DestinationRule {
        meta,
        host: h.value,
        subsets,
        traffic_policy,
    })
}

fn policy_field(cx: &mut Cx, parent: &mut Obj<'_>) -> Option<TrafficPolicy> {
    let mut o = parent.child(cx, "trafficPolicy")?;
    o.unsupported(cx, &["tunnel", "proxyProtocol", "retryBudget"]);
    let mut p = TrafficPolicy::default();
    read_policy(
        cx,
        &mut o,
        &mut p.load_balancer,
        &mut p.connection_pool,
        &mut p.outlier_detection,
        &mut p.tls,
    );
    for mut pl in o.objs(cx, "portLevelSettings") {
        let port = match pl.child(cx, "port") {
            Some(mut po) => {
                let n = po.req_port(cx, "number");
                po.finish(cx);
                n
            }
            None => {
                pl.require(cx, "port");
                None
            }
        };
        let mut s = PortTrafficPolicy::default();
        read_policy(
            cx,
            &mut pl,
            &mut s.load_balancer,
            &mut s.connection_pool,
            &mut s.outlier_detection,
            &mut s.tls,
        );
        if let Some(port) = port {
            s.port = port;
            p.port_level_settings.push(s);
        }
        pl.finish(cx);
    }
    o.finish(cx);
    Some(p)
}

/// The four settings a traffic policy and a port-level setting share.
fn read_policy(
    cx: &mut Cx,
    o: &mut Obj<'_>,
    lb: &mut Option<LoadBalancer>,
    pool: &mut Option<ConnectionPool>,
    outlier: &mut Option<OutlierDetection>,
    tls: &mut Option<ClientTls>,
) {
    if let Some(mut l) = o.child(cx, "loadBalancer") {
        l.unsupported(
            cx,
            &[
                "consistentHash",
                "localityLbSetting",
                "warmupDurationSecs",
                "warmup",
            ],
        );
        *lb = l.enum_value(
            cx,
            "simple",
            LOAD_BALANCERS,
            &["PASSTHROUGH", "UNSPECIFIED"],
        );
        l.finish(cx);
    }
    if let Some(mut c) = o.child(cx, "connectionPool") {
        *pool = Some(connection_pool(cx, &mut c));
        c.finish(cx);
    }
    if let Some(mut d) = o.child(cx, "outlierDetection") {
        d.unsupported(
            cx,
            &[
                "minHealthPercent",
                "splitExternalLocalOriginErrors",
                "consecutiveLocalOriginFailures",
            ],
        );
        *outlier = Some(OutlierDetection {
            consecutive_errors: d.u32(
                cx,
                "consecutive5xxErrors|consecutive_5xx_errors|consecutiveErrors",
            ),
            consecutive_gateway_errors: d.u32(cx, "consecutiveGatewayErrors"),
            interval: d.duration(cx, "interval"),
            base_ejection_time: d.duration(cx, "baseEjectionTime"),
            max_ejection_percent: d
                .int(cx, "maxEjectionPercent", 0, 100)
                .and_then(|v| u32::try_from(v).ok()),
        });
        d.finish(cx);
    }
    if let Some(mut t) = o.child(cx, "tls") {
        *tls = client_tls(cx, &mut t);
        t.finish(cx);
    }
}

fn connection_pool(cx: &mut Cx, c: &mut Obj<'_>) -> ConnectionPool {
    let mut pool = ConnectionPool::default();
    if let Some(mut t) = c.child(cx, "tcp") {
        t.unsupported(cx, &["maxConnectionDuration"]);
        pool.tcp_max_connections = t.u32(cx, "maxConnections");
        pool.tcp_connect_timeout = t.duration(cx, "connectTimeout");
        pool.tcp_idle_timeout = t.duration(cx, "idleTimeout");
        if let Some(mut k) = t.child(cx, "tcpKeepalive") {
            pool.tcp_keepalive_probes = k.u32(cx, "probes");
            pool.tcp_keepalive_time = k.duration(cx, "time");
            pool.tcp_keepalive_interval = k.duration(cx, "interval");
            k.finish(cx);
        }
        t.finish(cx);
    }
    if let Some(mut h) = c.child(cx, "http") {
        h.unsupported(
            cx,
            &[
                "http2MaxRequests",
                "useClientProtocol",
                "maxConcurrentStreams",
            ],
        );
        pool.http1_max_pending_requests = h.u32(cx, "http1MaxPendingRequests");
        pool.http_max_requests_per_connection = h.u32(cx, "maxRequestsPerConnection");
        pool.max_retries = h.u32(cx, "maxRetries");
        pool.http_idle_timeout = h.duration(cx, "idleTimeout");
        let upgrade = [
            ("DEFAULT", false),
            ("DO_NOT_UPGRADE", false),
            ("UPGRADE", true),
        ];
        pool.h2_upgrade = h
            .enum_value(cx, "h2UpgradePolicy", &upgrade, &[])
            .unwrap_or(false);
        h.finish(cx);
    }
    pool
}

fn client_tls(cx: &mut Cx, t: &mut Obj<'_>) -> Option<ClientTls> {
    t.unsupported(cx, &["credentialName", "insecureSkipVerify", "caCrl"]);
    let mode = if t.has("mode") {
        t.enum_value(cx, "mode", CLIENT_TLS_MODES, &[])
    } else {
        t.require(cx, "mode");
        None
    };
    let client_certificate = t.file(cx, "clientCertificate");
    let private_key = t.file(cx, "privateKey");
    let ca_certificates = t.file(cx, "caCertificates");
    let subject_alt_names = t
        .strings(cx, "subjectAltNames")
        .into_iter()
        .map(|s| s.value)
        .collect();
    let sni_path = t.path_of("sni");
    let sni = t
        .string(cx, "sni")
        .and_then(|s| host(cx, s, HostForm::Name, &sni_path))
        .map(|s| s.value);
    let mode = mode?;
    if mode == ClientTlsMode::Mutual {
        for (name, present) in [
            ("clientCertificate", client_certificate.is_some()),
            ("privateKey", private_key.is_some()),
        ] {
            if !present {
                cx.error(
                    t.span(),
                    format!("{}: tls mode MUTUAL requires '{name}'", t.path()),
                );
            }
        }
    }
    Some(ClientTls {
        mode,
        sni,
        ca_certificates,
        client_certificate,
        private_key,
        subject_alt_names,
        span: t.span().clone(),
    })
}
