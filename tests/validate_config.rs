//! The configuration contract of DESIGN.md, exercised through `egressd::config::load`:
//! the guide's examples and the shipped configs load; each class of mistake is reported at
//! its exact `line:column`.

use std::path::{Path, PathBuf};

use egressd::config::model::{Protocol, Resolution};
use egressd::config::{load, load_str, Diagnostic, LoadMode, Loaded, Severity};

fn manifest(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest(dir))
        .expect("directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn show(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d}\n")).collect()
}

fn ok(text: &str) -> Loaded {
    match load_str(text, Path::new("test.yaml"), LoadMode::Validate) {
        Ok(l) => l,
        Err(d) => panic!("expected the config to load, got:\n{}", show(&d)),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str(text, Path::new("test.yaml"), LoadMode::Validate) {
        Ok(_) => panic!("expected errors, the config loaded"),
        Err(d) => d,
    }
}

/// Asserts that one error sits at `line:col` and mentions `fragment`.
fn assert_error(text: &str, line: u32, col: u32, fragment: &str) {
    let diags = errors(text);
    assert!(
        diags
            .iter()
            .any(|d| d.is_error() && d.position() == (line, col) && d.message.contains(fragment)),
        "no error at {line}:{col} containing {fragment:?}; got:\n{}",
        show(&diags)
    );
}

const SERVICE_ENTRY: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: cnn
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
";

const GATEWAY: &str = "\
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - edition.cnn.com
";

/// SERVICE_ENTRY (15 lines) + GATEWAY (15 lines) + a VirtualService whose `http` list starts
/// at line 42 with `route_lines`.
fn with_http_route(route_lines: &str) -> String {
    format!(
        "{SERVICE_ENTRY}{GATEWAY}---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - istio-egressgateway
  http:
{route_lines}"
    )
}

#[test]
fn the_guide_examples_validate_with_only_missing_file_warnings() {
    let files = yaml_files("tests/fixtures");
    assert_eq!(files.len(), 5, "the guide's five examples");
    for f in files {
        let loaded = match load(&f, LoadMode::Validate) {
            Ok(l) => l,
            Err(d) => panic!("{} did not validate:\n{}", f.display(), show(&d)),
        };
        for w in &loaded.warnings {
            assert_eq!(w.severity, Severity::Warning);
            assert!(
                w.message.contains("file not found: /etc/certs/"),
                "unexpected warning {w}"
            );
        }
        let c = &loaded.config;
        assert_eq!(c.gateways.len(), 1, "{}", f.display());
        assert_eq!(c.service_entries[0].hosts[0].value, "edition.cnn.com");
    }
}

#[test]
fn the_guide_examples_with_missing_certificates_do_not_run() {
    let d = load(&manifest("tests/fixtures/2-http-mtls.yaml"), LoadMode::Run).unwrap_err();
    let missing = d
        .iter()
        .find(|d| {
            d.is_error()
                && d.message
                    .contains("file not found: /etc/certs/cert-chain.pem")
        })
        .expect("the missing certificate is an error in run mode");
    // Reported where the path is written: `      serverCertificate: /etc/certs/cert-chain.pem`.
    assert_eq!(missing.position(), (20, 26));
    assert!(missing
        .message
        .starts_with("spec.servers[0].tls.serverCertificate: "));
    assert!(load(&manifest("tests/fixtures/1-http-plain.yaml"), LoadMode::Run).is_ok());
}

#[test]
fn the_shipped_configs_validate() {
    let files = yaml_files("config");
    assert!(files.len() >= 6, "config/ holds the example configs");
    for f in files {
        if let Err(d) = load(&f, LoadMode::Validate) {
            panic!("{} did not validate:\n{}", f.display(), show(&d));
        }
    }
}

#[test]
fn the_local_demo_is_a_static_loopback_origin() {
    let c = load(&manifest("config/local-demo.yaml"), LoadMode::Run)
        .expect("runs")
        .config;
    assert_eq!(c.gateway.bind_address.to_string(), "127.0.0.1");
    assert_eq!(c.gateway.port_map.get(&80), Some(&8080));
    let se = &c.service_entries[0];
    assert_eq!(se.resolution, Resolution::Static);
    assert_eq!(se.endpoints[0].address, "127.0.0.1");
    assert_eq!(se.endpoints[0].ports.get("http"), Some(&9080));
}

#[test]
fn a_typo_in_a_field_name_is_an_unknown_field() {
    let text = SERVICE_ENTRY.replace("  hosts:", "  hsots:");
    assert_error(&text, 6, 3, "unknown field 'hsots' in ServiceEntry spec");
}

#[test]
fn an_unknown_kind_is_refused() {
    let text = SERVICE_ENTRY.replace("kind: ServiceEntry", "kind: ServiceEntri");
    assert_error(&text, 2, 7, "unknown kind 'ServiceEntri'");
}

#[test]
fn an_unknown_api_version_is_refused() {
    let text = SERVICE_ENTRY.replace("networking.istio.io/v1alpha3", "networking.istio.io/v2");
    assert_error(&text, 1, 13, "unknown apiVersion 'networking.istio.io/v2'");
}

#[test]
fn rewrite_is_unsupported_by_egressd() {
    let text = with_http_route(
        "  - rewrite:
      uri: /
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 80
",
    );
    assert_error(&text, 42, 5, "unsupported by egressd: spec.http[0].rewrite");
}

#[test]
fn valid_istio_that_egressd_does_not_implement_is_named_by_path() {
    let route = "    route:\n    - destination: {host: edition.cnn.com, port: {number: 80}}\n";
    let cases = [
        ("  - fault: {}\n", 42, 5, "spec.http[0].fault"),
        ("  - corsPolicy: {}\n", 42, 5, "spec.http[0].corsPolicy"),
        (
            "  - mirror_percent: 5\n",
            42,
            5,
            "spec.http[0].mirror_percent",
        ),
        (
            "  - mirrorPercentage: {value: 5}\n",
            42,
            5,
            "spec.http[0].mirrorPercentage",
        ),
        (
            "  - headers: {request: {set: {a: b}}}\n",
            42,
            5,
            "spec.http[0].headers",
        ),
        (
            "  - match:\n    - queryParams: {a: {exact: b}}\n",
            43,
            7,
            "spec.http[0].match[0].queryParams",
        ),
        (
            "  - match:\n    - ignoreUriCase: true\n",
            43,
            7,
            "spec.http[0].match[0].ignoreUriCase",
        ),
    ];
    for (lines, line, col, path) in cases {
        let text = with_http_route(&format!("{lines}{route}"));
        assert_error(&text, line, col, &format!("unsupported by egressd: {path}"));
    }
    let text = with_http_route("  - directResponse: {status: 503}\n");
    assert_error(
        &text,
        42,
        5,
        "unsupported by egressd: spec.http[0].directResponse",
    );
}

#[test]
fn a_route_to_an_undeclared_host_is_refused() {
    let text = with_http_route(
        "  - route:
    - destination:
        host: www.cnn.com
        port:
          number: 80
",
    );
    assert_error(&text, 44, 15, "host not declared by any ServiceEntry");
}

#[test]
fn a_destination_without_port_needs_a_single_port_service_entry() {
    let text = with_http_route(
        "  - route:
    - destination:
        host: edition.cnn.com
",
    );
    assert_error(&text, 44, 15, "several ports (80, 443)");
}

#[test]
fn a_destination_port_must_be_a_service_entry_port() {
    let text = with_http_route(
        "  - route:
    - destination:
        host: edition.cnn.com
        port:
          number: 8080
",
    );
    assert_error(
        &text,
        44,
        15,
        "port 8080 is not a port of ServiceEntry 'cnn'",
    );
}

#[test]
fn a_subset_must_be_defined_by_a_destination_rule() {
    let text = with_http_route(
        "  - route:
    - destination:
        host: edition.cnn.com
        subset: v1
        port:
          number: 80
",
    );
    assert_error(
        &text,
        44,
        15,
        "subset 'v1' is defined by no DestinationRule",
    );
}

#[test]
fn conflicting_protocols_on_one_port_are_refused() {
    let text = format!(
        "{SERVICE_ENTRY}{GATEWAY}---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: second
spec:
  servers:
  - port:
      number: 80
      name: tls
      protocol: TLS
    hosts:
    - edition.cnn.com
    tls:
      mode: PASSTHROUGH
"
    );
    assert_error(
        &text,
        38,
        5,
        "port 80: protocol TLS conflicts with HTTP of server 'http'",
    );
}

#[test]
fn passthrough_and_mutual_share_a_tls_port() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a}
spec:
  servers:
  - port: {number: 443, name: tls-a, protocol: TLS}
    hosts: [a.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 443, name: tls-b, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: MUTUAL, serverCertificate: c.pem, privateKey: k.pem, caCertificates: r.pem}
";
    let loaded = ok(text);
    assert_eq!(loaded.config.gateways[0].servers.len(), 2);
    assert!(loaded
        .warnings
        .iter()
        .all(|w| w.message.contains("file not found")));
}

#[test]
fn a_bad_wildcard_is_refused() {
    let text = SERVICE_ENTRY.replace("  - edition.cnn.com", "  - foo.*.com");
    assert_error(&text, 7, 5, "bad wildcard 'foo.*.com'");
    let text = SERVICE_ENTRY.replace("  - edition.cnn.com", "  - a..b");
    assert_error(&text, 7, 5, "invalid host 'a..b'");
}

#[test]
fn a_tls_server_without_a_tls_block_is_refused() {
    let text = GATEWAY.replace("protocol: HTTP", "protocol: TLS");
    assert_error(&text, 10, 5, "a TLS server needs a 'tls' block");
}

#[test]
fn a_bad_duration_is_refused_where_written() {
    let text = "\
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata: {name: egressd}
spec:
  timeouts:
    connect: 10x
";
    assert_error(text, 6, 14, "spec.timeouts.connect: invalid duration '10x'");
}

#[test]
fn a_bad_enum_value_names_the_allowed_ones() {
    let text = SERVICE_ENTRY.replace("protocol: HTTPS", "protocol: Https");
    assert_error(
        &text,
        14,
        15,
        "invalid value 'Https', expected one of HTTP, HTTPS",
    );
}

#[test]
fn unsupported_gateway_tls_modes_are_named() {
    let text = GATEWAY.replace(
        "      protocol: HTTP\n",
        "      protocol: HTTPS\n    tls:\n      mode: OPTIONAL_MUTUAL\n",
    );
    assert_error(
        &text,
        15,
        13,
        "unsupported by egressd: spec.servers[0].tls.mode OPTIONAL_MUTUAL",
    );
}

#[test]
fn namespace_and_export_to_only_warn() {
    let text = SERVICE_ENTRY
        .replace("  name: cnn\n", "  name: cnn\n  namespace: istio-system\n")
        .replace(
            "  resolution: DNS\n",
            "  resolution: DNS\n  exportTo: [\".\"]\n",
        );
    let loaded = ok(&text);
    let got: Vec<((u32, u32), &str)> = loaded
        .warnings
        .iter()
        .map(|w| (w.position(), w.message.as_str()))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, (5, 3));
    assert!(got[0].1.contains("metadata.namespace"));
    assert_eq!(got[1].0, (17, 3));
    assert!(got[1].1.contains("spec.exportTo"));
    assert!(loaded
        .warnings
        .iter()
        .all(|w| w.to_string().contains(": warning: ")));
}

#[test]
fn snake_case_sni_hosts_reads_as_sni_hosts() {
    let vs = |field: &str| {
        format!(
            "\
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {{name: cnn}}
spec:
  hosts: [edition.cnn.com]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [edition.cnn.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: vs}}
spec:
  hosts: [edition.cnn.com]
  gateways: [istio-system/gw]
  tls:
  - match:
    - {field}: [Edition.CNN.com.]
      port: 443
    route:
    - destination: {{host: edition.cnn.com, port: {{number: 443}}}}
"
        )
    };
    for field in ["sni_hosts", "sniHosts"] {
        let loaded = ok(&vs(field));
        let v = &loaded.config.virtual_services[0];
        assert_eq!(v.gateways, ["gw"]);
        assert_eq!(
            v.tls[0].matches[0].sni_hosts,
            ["edition.cnn.com"],
            "{field}"
        );
    }
}

#[test]
fn every_error_is_reported_in_file_order() {
    let text = SERVICE_ENTRY
        .replace("  hosts:", "  hsots:")
        .replace("protocol: HTTPS", "protocol: Https")
        .replace("resolution: DNS", "resolution: dns");
    let diags = errors(&text);
    let positions: Vec<(u32, u32)> = diags.iter().map(Diagnostic::position).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
    assert!(diags.iter().any(|d| d.message.contains("hsots")));
    assert!(diags.iter().any(|d| d.message.contains("'Https'")));
    assert!(diags.iter().any(|d| d.message.contains("'dns'")));
}

#[test]
fn explicit_weights_that_are_all_zero_send_nowhere() {
    let text = with_http_route(
        "  - route:
    - destination: {host: edition.cnn.com, port: {number: 80}}
      weight: 0
    - destination: {host: edition.cnn.com, port: {number: 443}}
      weight: 0
",
    );
    assert_error(&text, 42, 5, "all weights are zero");
    let mixed = with_http_route(
        "  - route:
    - destination: {host: edition.cnn.com, port: {number: 80}}
      weight: 100
    - destination: {host: edition.cnn.com, port: {number: 443}}
",
    );
    let route = &ok(&mixed).config.virtual_services[0].http[0].route;
    assert_eq!(route[0].weight, Some(100));
    assert_eq!(route[1].weight, None);
}

#[test]
fn duplicate_names_of_one_kind_are_refused() {
    let text = format!("{SERVICE_ENTRY}---\n{SERVICE_ENTRY}");
    assert_error(&text, 17, 1, "duplicate ServiceEntry name 'cnn'");
}

#[test]
fn mesh_routes_and_sidecar_rules_are_ignored() {
    let loaded = load(
        &manifest("tests/fixtures/1-http-plain.yaml"),
        LoadMode::Validate,
    )
    .expect("loads");
    // The DestinationRule for the gateway's own service is sidecar-side.
    assert!(loaded.config.destination_rules.is_empty());
    let text = GATEWAY.replace("istio: egressgateway", "app: other-gateway");
    let loaded = ok(&format!("{SERVICE_ENTRY}{text}"));
    assert!(
        loaded.config.gateways.is_empty(),
        "a Gateway for another selector does not apply"
    );
}

#[test]
fn the_bootstrap_reads_over_the_defaults() {
    let text = "\
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata: {name: edge}
spec:
  bindAddress: 127.0.0.1
  portMap: {80: 8080}
  cpus: [2, 3]
  admin: \"\"
  accessLog: {format: json}
  resolver: {nameservers: [\"10.0.0.2\", \"[::1]:5353\"]}
  pool: {idle_timeout: 1.5s}
";
    let b = ok(text).config.gateway;
    assert_eq!(b.name, "edge");
    assert_eq!(b.port_map.get(&80), Some(&8080));
    assert_eq!(b.cpus, [2, 3]);
    assert_eq!(b.admin, None);
    assert_eq!(b.resolver.nameservers[1].to_string(), "[::1]:5353");
    assert_eq!(b.pool.idle_timeout.as_millis(), 1500);
    assert_eq!(b.timeouts.drain.as_secs(), 5);
    let more = text.replace("  cpus: [2, 3]\n", "  cpus: [2, 3]\n  shards: 3\n");
    assert_error(&more, 5, 3, "more shards than CPUs");
    let bad_port = text.replace("{80: 8080}", "{80: 70000}");
    assert_error(&bad_port, 6, 17, "out of range 1..65535");
}

#[test]
fn relative_certificate_paths_resolve_beside_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in ["cert-chain.pem", "key.pem", "root-cert.pem"] {
        std::fs::create_dir_all(dir.path().join("certs")).expect("mkdir");
        std::fs::write(dir.path().join("certs").join(f), "x").expect("write");
    }
    let text = "\
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
spec:
  identity: {certChain: certs/cert-chain.pem, privateKey: certs/key.pem, rootCert: certs/root-cert.pem}
";
    let path = dir.path().join("egressd.yaml");
    std::fs::write(&path, text).expect("write config");
    let loaded = load(&path, LoadMode::Run).expect("all files exist");
    let id = loaded.config.gateway.identity.expect("identity");
    assert_eq!(id.private_key, dir.path().join("certs/key.pem"));
    std::fs::remove_file(dir.path().join("certs/key.pem")).expect("rm");
    let d = load(&path, LoadMode::Run).unwrap_err();
    assert!(
        d.iter()
            .any(|d| d.position() == (4, 59) && d.message.contains("file not found")),
        "{}",
        show(&d)
    );
}

#[test]
fn protocols_and_resolutions_are_typed() {
    let se = &ok(SERVICE_ENTRY).config.service_entries[0];
    assert_eq!(se.resolution, Resolution::Dns);
    assert_eq!(se.ports[1].protocol, Protocol::Https);
}
