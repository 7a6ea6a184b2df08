//! Istio documents for tests, composable: each function returns one YAML document ending
//! in `---`, so a test concatenates what it needs.

/// A `resolution: STATIC` ServiceEntry for `host` on port 80 (`http`), one endpoint per
/// loopback port in `origins`.
pub fn static_service(name: &str, host: &str, origins: &[u16]) -> String {
    let endpoints: Vec<String> = origins
        .iter()
        .map(|p| format!("{{address: 127.0.0.1, ports: {{http: {p}}}}}"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [\"{host}\"]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{}]\n---\n",
        endpoints.join(", ")
    )
}

/// A Gateway `egress` with one HTTP server on port 80 for every host.
pub fn http_gateway() -> String {
    "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: egress}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n".to_string()
}

/// A VirtualService bound to `egress` sending `host` to `destination` port 80; `route_extra`
/// lines (indented four spaces, e.g. `    timeout: 1s\n`) go into the http route.
pub fn virtual_service(host: &str, destination: &str, route_extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [egress]\n  http:\n  - name: main\n{route_extra}    route:\n    - destination: {{host: \"{destination}\", port: {{number: 80}}}}\n---\n"
    )
}

/// The common case: `host` routed through the gateway to one loopback origin.
pub fn one_route(host: &str, origin: u16) -> String {
    route_with(host, origin, "")
}

/// `one_route` with `route_extra` lines in the http route (see `virtual_service`).
pub fn route_with(host: &str, origin: u16, route_extra: &str) -> String {
    static_service("se", host, &[origin])
        + &http_gateway()
        + &virtual_service(host, host, route_extra)
}
