//! The admin endpoint after known traffic: exact Envoy-named counters on `/stats`, the same
//! values in valid Prometheus text, `/clusters`, `/config_dump`, `/server_info`, and the
//! `json` access-log format.

mod common;

use std::net::TcpStream;

use common::origin::Origin;
use common::{exchange, free_port, Gateway};

fn resources(origin_port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: cnn}}
spec:
  hosts: [edition.cnn.com]
  ports: [{{number: 80, name: http-port, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http-port: {origin_port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: istio-egressgateway}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [edition.cnn.com]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: direct-cnn}}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-egressgateway]
  http:
  - name: to-cnn
    route:
    - destination: {{host: edition.cnn.com, port: {{number: 80}}}}
"#
    )
}

/// Two requests on one connection, one denied request.
fn traffic(port: u16) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for _ in 0..2 {
        assert_eq!(
            exchange(
                &mut conn,
                b"GET /politics HTTP/1.1\r\nHost: edition.cnn.com\r\n\r\n"
            )
            .status,
            200
        );
    }
    assert_eq!(
        exchange(&mut conn, b"GET / HTTP/1.1\r\nHost: denied.example\r\n\r\n").status,
        502
    );
}

#[test]
fn stats_count_exactly_what_happened() {
    let origin = Origin::fixed("cnn", "politics");
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &resources(origin.port()), &["--shards", "2"]);
    traffic(port);
    let c = "cluster.outbound|80||edition.cnn.com.";
    assert_eq!(gw.stat(&format!("{c}upstream_rq_total")), Some(2));
    assert_eq!(gw.stat(&format!("{c}upstream_rq_200")), Some(2));
    assert_eq!(gw.stat(&format!("{c}upstream_rq_2xx")), Some(2));
    assert_eq!(gw.stat(&format!("{c}upstream_cx_total")), Some(1));
    assert_eq!(
        gw.stat(&format!("{c}upstream_cx_active")),
        Some(1),
        "the pooled connection is open"
    );
    assert_eq!(gw.stat(&format!("{c}upstream_cx_connect_fail")), Some(0));
    assert!(gw.stat(&format!("{c}upstream_cx_rx_bytes_total")).unwrap() > 0);
    assert!(gw.stat(&format!("{c}upstream_cx_tx_bytes_total")).unwrap() > 0);
    assert_eq!(
        gw.stat("cluster.BlackHoleCluster.upstream_rq_total"),
        Some(1)
    );
    let listener = format!("listener.127.0.0.1_{port}.");
    assert_eq!(gw.stat(&format!("{listener}downstream_cx_total")), Some(1));
    assert_eq!(
        gw.stat(&format!("http.127.0.0.1_{port}.downstream_rq_total")),
        Some(3)
    );
    assert_eq!(
        gw.stat(&format!("http.127.0.0.1_{port}.downstream_rq_5xx")),
        Some(1)
    );

    let (status, filtered) = gw.admin_get("/stats?filter=edition%5C.cnn%5C.com.*upstream_rq_total");
    assert_eq!(status, 200);
    assert_eq!(
        filtered.trim(),
        "cluster.outbound|80||edition.cnn.com.upstream_rq_total: 2"
    );
}

#[test]
fn prometheus_text_is_valid_and_matches_stats() {
    let origin = Origin::fixed("cnn", "politics");
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &resources(origin.port()), &["--shards", "1"]);
    traffic(port);
    let (status, body) = gw.admin_get("/stats/prometheus");
    assert_eq!(status, 200);
    let mut typed = std::collections::HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "duplicate TYPE for {name}");
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            typed.contains(name) || typed.contains(family),
            "series before its TYPE: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
    }
    assert!(
        body.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"outbound|80||edition.cnn.com\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("envoy_cluster_upstream_rq_time_bucket{"),
        "histogram buckets"
    );
}

#[test]
fn clusters_config_dump_and_server_info_describe_the_snapshot() {
    let origin = Origin::fixed("cnn", "politics");
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &resources(origin.port()), &["--shards", "1"]);
    traffic(port);
    let (status, clusters) = gw.admin_get("/clusters");
    assert_eq!(status, 200);
    assert!(clusters.contains(&format!(
        "outbound|80||edition.cnn.com::127.0.0.1:{}::health_flags::healthy",
        origin.port()
    )));
    assert!(
        clusters.contains("outbound|80||edition.cnn.com::upstream_rq_total::2"),
        "{clusters}"
    );
    let (status, dump) = gw.admin_get("/config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["listeners"][0]["gatewayPort"], 80);
    assert_eq!(dump["listeners"][0]["bound"], format!("127.0.0.1:{port}"));
    assert_eq!(
        dump["listeners"][0]["virtualHosts"][0]["routes"][0]["name"],
        "to-cnn"
    );
    assert_eq!(dump["clusters"][0]["name"], "outbound|80||edition.cnn.com");
    let (status, info) = gw.admin_get("/server_info");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["shards"], 1);
}

#[test]
fn json_access_log_carries_istio_keys() {
    let origin = Origin::fixed("cnn", "politics");
    let port = free_port();
    let gw = Gateway::start_with_log_format(
        &[(80, port)],
        "json",
        &resources(origin.port()),
        &["--shards", "1"],
    );
    traffic(port);
    let lines = gw.access_log_lines(3);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["response_code"], 200);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/politics");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["upstream_cluster"], "outbound|80||edition.cnn.com");
    assert_eq!(first["route_name"], "to-cnn");
    assert_eq!(
        first["downstream_remote_address"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("127.0.0.1")
    );
    assert!(
        first.get("downstream_peer_uri_san").is_some(),
        "key present (null without mTLS)"
    );
    let denied: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(denied["response_code"], 502);
    assert_eq!(denied["response_flags"], "NR");
    assert_eq!(denied["upstream_cluster"], "BlackHoleCluster");
}
