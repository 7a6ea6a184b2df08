//! The HTTP workloads the `scenario` machinery runs (same targets, order, load generator and
//! report; only the request and the origin's response differ):
//! - `http-keepalive`: small GET, keep-alive (13-byte body);
//! - `http-newconn`: small GET with `Connection: close`, so every request opens a new TCP
//!   connection to the target (the load generator reconnects when the server closes);
//! - `http-1mib`: GET of a 1 MiB file over keep-alive (the origin nginx serves it with
//!   sendfile), reported in Gbit/s and CPU seconds per GB as well.
//!
//! Owns: each workload's request, origin config and the proxy tweaks a large body needs.
//! Must not: measure (see `scenario`) or format (see `report`, `markdown`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::error::BenchError;
use crate::targets::{self, Running, TargetKind, Tools, HOST};

/// Size of the `http-1mib` response body.
pub const ONE_MIB: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    KeepAlive,
    /// Keep-alive, with every proxy writing an access line per request.
    KeepAliveLogged,
    NewConnection,
    OneMib,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: Kind,
    /// Scenario name in the report, e.g. `http-newconn`.
    pub name: &'static str,
    /// Result file tag: `<date>-<tag>.{json,md,svg}`.
    pub tag: &'static str,
    pub request: Vec<u8>,
    pub body_bytes: usize,
}

impl Workload {
    pub fn keep_alive() -> Self {
        Workload {
            kind: Kind::KeepAlive,
            name: "http-keepalive",
            tag: "http",
            request: targets::request_bytes(),
            body_bytes: targets::BODY.len(),
        }
    }

    /// The keep-alive workload with the job an egress gateway does in production: every
    /// proxy logs each request, each the cheapest way it offers.
    pub fn keep_alive_logged() -> Self {
        Workload {
            kind: Kind::KeepAliveLogged,
            name: "http-keepalive-logged",
            tag: "http-logged",
            ..Workload::keep_alive()
        }
    }

    pub fn new_connection() -> Self {
        Workload {
            kind: Kind::NewConnection,
            name: "http-newconn",
            tag: "http-newconn",
            request: format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            body_bytes: targets::BODY.len(),
        }
    }

    pub fn one_mib() -> Self {
        Workload {
            kind: Kind::OneMib,
            name: "http-1mib",
            tag: "http-1mib",
            request: format!("GET /1mib.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes(),
            body_bytes: ONE_MIB,
        }
    }

    /// Whether throughput (Gbit/s, CPU per GB) is the figure that matters.
    pub fn is_bulk(&self) -> bool {
        self.kind == Kind::OneMib
    }

    /// Why `kind` does not run this workload, if it does not.
    pub fn skip_reason(&self, kind: TargetKind) -> Option<&'static str> {
        (self.kind == Kind::NewConnection && kind == TargetKind::Floor).then_some(
            "floor-relay opens an upstream connection per client connection, where the proxies reuse pooled ones: no floor for this workload",
        )
    }

    /// The origin nginx for this workload, pinned to `cpu`.
    pub fn start_origin(
        &self,
        nginx: &Path,
        cpu: usize,
        stop: &AtomicBool,
    ) -> Result<Running, BenchError> {
        if self.kind != Kind::OneMib {
            return targets::start_origin(nginx, cpu, stop);
        }
        let dir = targets::tempdir("bench-origin-1mib-")?;
        let port = targets::free_port()?;
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root)
            .map_err(|e| BenchError::io(format!("create {}", root.display()), e))?;
        // Not all zeros, so nothing on the path can shortcut it.
        let body: Vec<u8> = (0..ONE_MIB).map(|i| (i % 251) as u8).collect();
        let file = root.join("1mib.bin");
        std::fs::write(&file, body)
            .map_err(|e| BenchError::io(format!("write {}", file.display()), e))?;
        let conf = dir.path().join("origin.conf");
        let text = file_origin_conf(dir.path(), port, &root);
        std::fs::write(&conf, text)
            .map_err(|e| BenchError::io(format!("write {}", conf.display()), e))?;
        targets::start_nginx("origin", nginx, &conf, dir, port, cpu, stop)
    }

    /// The proxy `kind` in front of `origin`. For bulk bodies nginx gets buffers sized for
    /// them and no temp files, so it streams like haproxy and egressd instead of spilling
    /// responses to disk. In the logged workload haproxy and nginx log each request.
    pub fn start_proxy(
        &self,
        kind: TargetKind,
        tools: &Tools,
        origin: SocketAddr,
        cpu: usize,
        stop: &AtomicBool,
    ) -> Result<Running, BenchError> {
        let logged = self.kind == Kind::KeepAliveLogged;
        let own_config = match kind {
            TargetKind::Nginx => logged || self.is_bulk(),
            TargetKind::Haproxy => logged,
            // egressd logs in every workload; floor is the bare reference.
            _ => false,
        };
        if !own_config {
            return targets::start_proxy(kind, tools, origin, cpu, stop);
        }
        let dir = targets::tempdir(&format!("bench-{}-{}-", kind.name(), self.tag))?;
        let port = targets::free_port()?;
        if kind == TargetKind::Haproxy {
            let cfg = targets::haproxy_logged_cfg(port, origin, crate::log_sink::address()?);
            return targets::start_haproxy(&cfg, tools, dir, port, cpu, stop);
        }
        let conf = if logged {
            targets::nginx_logged_proxy_conf(dir.path(), port, origin)
        } else {
            bulk_nginx_proxy_conf(dir.path(), port, origin)
        };
        targets::start_nginx_proxy(&conf, tools, dir, port, cpu, stop)
    }

    /// One line for the report's layout: how the origin answers.
    pub fn origin_description(&self) -> String {
        let base =
            "nginx, one process (master_process off), keepalive_requests 1000000, no access log";
        match self.kind {
            Kind::OneMib => format!("{base}, serves a {ONE_MIB}-byte file (root + sendfile on)"),
            _ => format!(
                "{base}, return 200 with a {}-byte body",
                targets::BODY.len()
            ),
        }
    }

    /// Notes specific to this workload for the report.
    pub fn notes(&self) -> Vec<String> {
        match self.kind {
            Kind::KeepAlive => Vec::new(),
            Kind::KeepAliveLogged => vec![
                "Every proxy writes an access line per request, each the cheapest way it offers: egressd its istio format to a file, in 64 KiB batches flushed every 100 ms; nginx the combined format to a file with buffer=64k flush=100ms; haproxy option httplog into a memory ring forwarded over TCP to a sink thread of the bench (on the load generator's CPU). floor logs nothing.".into(),
                format!("The haproxy log sink received {} bytes over the run.", crate::log_sink::received()),
            ],
            Kind::NewConnection => vec![
                "Every request carries Connection: close: the target answers and closes, and the load generator opens a new TCP connection (blocking loopback connect) for the next one; proxies keep their upstream connections to the origin alive.".into(),
                "CPU per request includes the proxy's accept and close of each client connection.".into(),
            ],
            Kind::OneMib => vec![
                format!("Gbit/s = req/s x {ONE_MIB} body bytes x 8; CPU s/GB = CPU µs per request / body bytes (1 GB = 1e9 bytes)."),
                "direct is usually bounded by the load generator itself (one thread reading every byte: compare its CPU µs/req with the origin's in the windows table), so egressd/direct compares against that limit; the ratios between the proxies are the telling ones.".into(),
                "nginx-proxy: proxy_buffer_size 64k, proxy_buffers 16 64k, proxy_busy_buffers_size 128k, proxy_max_temp_file_size 0 (streams, no temp files); haproxy: default tune.bufsize, no splice option.".into(),
            ],
        }
    }
}

fn file_origin_conf(dir: &Path, port: u16, root: &Path) -> String {
    format!(
        "{}  sendfile on;\n  server {{\n    listen 127.0.0.1:{port};\n    root {};\n    location / {{\n      default_type application/octet-stream;\n    }}\n  }}\n}}\n",
        targets::nginx_common(dir),
        root.display()
    )
}

fn bulk_nginx_proxy_conf(dir: &Path, port: u16, origin: SocketAddr) -> String {
    targets::nginx_proxy_conf(dir, port, origin).replace(
        "proxy_http_version 1.1;",
        "proxy_http_version 1.1;\n      proxy_buffer_size 64k;\n      proxy_buffers 16 64k;\n      proxy_busy_buffers_size 128k;\n      proxy_max_temp_file_size 0;",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newconn_asks_the_server_to_close_and_bulk_asks_for_the_file() {
        let n = String::from_utf8(Workload::new_connection().request).unwrap();
        assert!(n.contains("\r\nConnection: close\r\n") && n.ends_with("\r\n\r\n"));
        let b = Workload::one_mib();
        assert!(String::from_utf8(b.request)
            .unwrap()
            .starts_with("GET /1mib.bin "));
        assert_eq!(b.body_bytes, 1 << 20);
        assert!(b.kind == Kind::OneMib && !Workload::keep_alive().is_bulk());
    }

    #[test]
    fn bulk_configs_serve_the_file_and_stream_without_temp_files() {
        let o = file_origin_conf(Path::new("/tmp/x"), 9000, Path::new("/tmp/x/www"));
        assert!(o.contains("root /tmp/x/www;") && o.contains("sendfile on;"));
        assert_eq!(o.matches('{').count(), o.matches('}').count());
        let origin = SocketAddr::from(([127, 0, 0, 1], 9000));
        let p = bulk_nginx_proxy_conf(Path::new("/tmp/x"), 8000, origin);
        assert!(p.contains("proxy_max_temp_file_size 0;") && p.contains("proxy_buffers 16 64k;"));
    }
}
