//! What the load is sent to: the origin (nginx returning a fixed body) and the proxies under
//! test (egressd, haproxy, nginx as a proxy), each with a generated config that routes
//! `Host: bench.local` to the origin over keep-alive connections.
//!
//! Owns: config text, command lines, free-port picking, tool versions.
//! Must not: measure anything or decide run order; see `scenario`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use crate::error::BenchError;
use crate::procs::Proc;

pub const HOST: &str = "bench.local";
/// 13 bytes; the origin's whole response body.
pub const BODY: &str = "hello, world\n";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Direct,
    Egressd,
    Haproxy,
    Nginx,
    /// `floor-relay`: a bare TCP relay, what the kernel charges any proxy (a reference row).
    Floor,
}

impl TargetKind {
    /// Run order within a round.
    pub const ALL: [TargetKind; 5] = [
        TargetKind::Direct,
        TargetKind::Egressd,
        TargetKind::Haproxy,
        TargetKind::Nginx,
        TargetKind::Floor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::Egressd => "egressd",
            TargetKind::Haproxy => "haproxy",
            TargetKind::Nginx => "nginx",
            TargetKind::Floor => "floor",
        }
    }
}

pub fn request_bytes() -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

/// A loopback port that was free a moment ago (bind port 0, read it, close).
pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| BenchError::io("bind a free port", e))?;
    let port = l
        .local_addr()
        .map_err(|e| BenchError::io("local_addr", e))?
        .port();
    Ok(port)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}

/// nginx settings shared by origin and proxy: one process (`master_process off`, so the PID
/// we measure is the one doing the work), no access log, keep-alive without request limits,
/// temp paths inside our directory.
pub fn nginx_common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
         \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
    )
}

pub fn nginx_origin_conf(dir: &Path, port: u16) -> String {
    format!(
        "{}  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      default_type text/plain;\n      return 200 {:?};\n    }}\n  }}\n}}\n",
        nginx_common(dir),
        BODY
    )
}

pub fn nginx_proxy_conf(dir: &Path, port: u16, origin: SocketAddr) -> String {
    format!(
        "{}  upstream origin {{\n    server {origin};\n    keepalive 64;\n    keepalive_requests 1000000;\n    keepalive_timeout 300s;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port} default_server;\n    server_name _;\n    return 502;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n    server_name {HOST};\n    location / {{\n      proxy_pass http://origin;\n\
         \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Forwarded-For $remote_addr;\n    }}\n  }}\n}}\n",
        nginx_common(dir)
    )
}

/// One thread, keep-alive both sides, idle server connections reused by any client
/// (`http-reuse always`), no logging, X-Forwarded-For added as egressd does.
pub fn haproxy_cfg(port: u16, origin: SocketAddr) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\n\
         defaults\n  mode http\n  option http-keep-alive\n  option forwardfor\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n  timeout http-keep-alive 300s\n\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  acl bench hdr(host) -i {HOST}\n  http-request deny deny_status 502 unless bench\n  use_backend origin if bench\n\n\
         backend origin\n  http-reuse always\n  server o1 {origin}\n"
    )
}

/// [`haproxy_cfg`] with an access line per request (`option httplog`), written into a
/// memory ring that haproxy forwards over TCP to `sink` in batches: its cheapest way to log
/// every request (it has no buffered log file).
pub fn haproxy_logged_cfg(port: u16, origin: SocketAddr, sink: SocketAddr) -> String {
    haproxy_cfg(port, origin).replace(
        "\ndefaults\n  mode http\n",
        &format!(
            "\nring access\n  format rfc5424\n  maxlen 1024\n  size 1048576\n  timeout connect 5s\n  timeout server 300s\n  server sink {sink}\n\n\
             defaults\n  mode http\n  log ring@access local0\n  option httplog\n"
        ),
    )
}

/// [`nginx_proxy_conf`] with the bench host's requests logged to `dir/access.log` in the
/// combined format, buffered as egressd's log is (64 KiB, flushed every 100 ms).
pub fn nginx_logged_proxy_conf(dir: &Path, port: u16, origin: SocketAddr) -> String {
    let log = format!(
        "server_name {HOST};\n    access_log {}/access.log combined buffer=64k flush=100ms;",
        dir.display()
    );
    nginx_proxy_conf(dir, port, origin).replace(&format!("server_name {HOST};"), &log)
}

/// The configuration contract's bootstrap document plus the Istio resources that route
/// `bench.local:80` to the origin. The access log stays on (to a file): that is its real cost.
pub fn egressd_yaml(port: u16, origin: SocketAddr, access_log: &Path) -> String {
    format!(
        "apiVersion: egressd.io/v1alpha1\nkind: EgressGateway\nmetadata: {{name: egressd}}\nspec:\n  bindAddress: 127.0.0.1\n  portMap: {{80: {port}}}\n  admin: \"\"\n  limits: {{maxConnections: 4096}}\n  accessLog: {{path: \"{log}\", format: istio}}\n  logLevel: info\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: bench-origin}}\nspec:\n  hosts: [{HOST}]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  resolution: STATIC\n  endpoints:\n  - address: {ip}\n    ports: {{http: {oport}}}\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: bench-gateway}}\nspec:\n  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [{HOST}]\n\
         ---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: bench-route}}\nspec:\n  hosts: [{HOST}]\n  gateways: [bench-gateway]\n  http:\n  - name: bench\n    match:\n    - {{gateways: [bench-gateway], port: 80}}\n    route:\n    - destination: {{host: {HOST}, port: {{number: 80}}}}\n",
        log = access_log.display(),
        ip = origin.ip(),
        oport = origin.port(),
    )
}

/// A started process listening on `addr`, and the directory holding its config and logs
/// (removed when this is dropped, after the process is killed).
pub struct Running {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

pub fn tempdir(prefix: &str) -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| BenchError::io("create temp dir", e))
}

pub fn start_origin(nginx: &Path, cpu: usize, stop: &AtomicBool) -> Result<Running, BenchError> {
    let dir = tempdir("bench-origin-")?;
    let port = free_port()?;
    let conf = dir.path().join("origin.conf");
    write(&conf, &nginx_origin_conf(dir.path(), port))?;
    start_nginx("origin", nginx, &conf, dir, port, cpu, stop)
}

pub fn start_nginx(
    name: &str,
    nginx: &Path,
    conf: &Path,
    dir: tempfile::TempDir,
    port: u16,
    cpu: usize,
    stop: &AtomicBool,
) -> Result<Running, BenchError> {
    let d = dir.path().display().to_string();
    let args = [
        "-e".to_string(),
        format!("{d}/error.log"),
        "-p".to_string(),
        d.clone(),
        "-c".to_string(),
        conf.display().to_string(),
        "-g".to_string(),
        "daemon off;".to_string(),
    ];
    let mut proc = Proc::spawn_pinned(name, cpu, nginx, &args, dir.path())?;
    let addr = loopback(port);
    proc.wait_listening(addr, READY_TIMEOUT, stop)?;
    Ok(Running {
        proc,
        addr,
        _dir: dir,
    })
}

/// Starts one proxy in front of `origin`, pinned to `cpu`, and waits until it accepts.
pub fn start_proxy(
    kind: TargetKind,
    tools: &Tools,
    origin: SocketAddr,
    cpu: usize,
    stop: &AtomicBool,
) -> Result<Running, BenchError> {
    let dir = tempdir(&format!("bench-{}-", kind.name()))?;
    let port = free_port()?;
    match kind {
        TargetKind::Direct => Err(BenchError::Usage("direct has no proxy".into())),
        TargetKind::Nginx => {
            let conf = nginx_proxy_conf(dir.path(), port, origin);
            start_nginx_proxy(&conf, tools, dir, port, cpu, stop)
        }
        TargetKind::Haproxy => {
            start_haproxy(&haproxy_cfg(port, origin), tools, dir, port, cpu, stop)
        }
        TargetKind::Floor => {
            let mut proc = Proc::spawn_pinned(
                "floor-relay",
                cpu,
                &tools.floor_relay,
                &[loopback(port).to_string(), origin.to_string()],
                dir.path(),
            )?;
            proc.wait_listening(loopback(port), READY_TIMEOUT, stop)?;
            Ok(Running {
                proc,
                addr: loopback(port),
                _dir: dir,
            })
        }
        TargetKind::Egressd => {
            let yaml = egressd_yaml(port, origin, &dir.path().join("access.log"));
            start_with_config(
                "egressd",
                &tools.egressd,
                egressd_args(cpu),
                ("egressd.yaml", &yaml),
                dir,
                port,
                cpu,
                stop,
            )
        }
    }
}

/// nginx as the proxy under test with config text `conf`, written into `dir`, listening
/// on `port`.
pub fn start_nginx_proxy(
    conf: &str,
    tools: &Tools,
    dir: tempfile::TempDir,
    port: u16,
    cpu: usize,
    stop: &AtomicBool,
) -> Result<Running, BenchError> {
    let path = dir.path().join("proxy.conf");
    write(&path, conf)?;
    start_nginx("nginx-proxy", &tools.nginx, &path, dir, port, cpu, stop)
}

/// haproxy in the foreground with config text `cfg`, written into `dir`, listening on
/// `port`.
pub fn start_haproxy(
    cfg: &str,
    tools: &Tools,
    dir: tempfile::TempDir,
    port: u16,
    cpu: usize,
    stop: &AtomicBool,
) -> Result<Running, BenchError> {
    start_with_config(
        "haproxy",
        &tools.haproxy,
        vec!["-db".into(), "-f".into()],
        ("haproxy.cfg", cfg),
        dir,
        port,
        cpu,
        stop,
    )
}

/// egressd's arguments up to its config path: one shard pinned to `cpu`, then `-c`.
pub fn egressd_args(cpu: usize) -> Vec<String> {
    ["run", "--shards", "1", "--cpus", &cpu.to_string(), "-c"]
        .map(String::from)
        .to_vec()
}

/// Writes `conf` (file name, text) into `dir`, starts `program args <conf path>` pinned to
/// `cpu` with its log in `dir`, and waits until it accepts on loopback `port`.
#[allow(clippy::too_many_arguments)]
pub fn start_with_config(
    name: &str,
    program: &Path,
    mut args: Vec<String>,
    conf: (&str, &str),
    dir: tempfile::TempDir,
    port: u16,
    cpu: usize,
    stop: &AtomicBool,
) -> Result<Running, BenchError> {
    if program.components().count() > 1 && !program.is_file() {
        return Err(BenchError::NotReady {
            what: name.into(),
            reason: format!(
                "{} not found (for egressd: cargo build --release first)",
                program.display()
            ),
        });
    }
    let path = dir.path().join(conf.0);
    write(&path, conf.1)?;
    args.push(path.display().to_string());
    let mut proc = Proc::spawn_pinned(name, cpu, program, &args, dir.path())?;
    let addr = loopback(port);
    proc.wait_listening(addr, READY_TIMEOUT, stop)?;
    Ok(Running {
        proc,
        addr,
        _dir: dir,
    })
}

/// Paths of the programs a run uses.
#[derive(Debug, Clone)]
pub struct Tools {
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    pub egressd: PathBuf,
    pub wrk: PathBuf,
    /// This crate's `floor-relay`, built beside `bench`.
    pub floor_relay: PathBuf,
}

/// First line of each tool's version output ("absent" when it does not run).
pub fn tool_versions(tools: &Tools) -> BTreeMap<String, String> {
    let first_line = |program: &Path, arg: &str| -> String {
        match Command::new(program).arg(arg).output() {
            Ok(out) => {
                let text = [out.stdout, out.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            }
            Err(_) => "absent".to_string(),
        }
    };
    BTreeMap::from([
        ("nginx".to_string(), first_line(&tools.nginx, "-v")),
        ("haproxy".to_string(), first_line(&tools.haproxy, "-v")),
        ("wrk".to_string(), first_line(&tools.wrk, "-v")),
        (
            "egressd".to_string(),
            first_line(&tools.egressd, "--version"),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_body_is_13_bytes_and_quoted_for_nginx() {
        assert_eq!(BODY.len(), 13);
        let conf = nginx_origin_conf(Path::new("/tmp/x"), 8080);
        assert!(conf.contains("return 200 \"hello, world\\n\";"), "{conf}");
        assert!(conf.contains("master_process off;"));
    }

    #[test]
    fn proxies_route_only_bench_local_to_the_origin() {
        let origin = loopback(9000);
        let h = haproxy_cfg(8000, origin);
        assert!(
            h.contains("acl bench hdr(host) -i bench.local")
                && h.contains("server o1 127.0.0.1:9000")
        );
        let n = nginx_proxy_conf(Path::new("/tmp/x"), 8000, origin);
        assert!(n.contains("server_name bench.local;") && n.contains("return 502;"));
        assert!(n.contains("keepalive 64;") && n.contains("server 127.0.0.1:9000;"));
        let h = haproxy_logged_cfg(8000, origin, loopback(9999));
        assert!(h.contains("log ring@access local0") && h.contains("server sink 127.0.0.1:9999"));
        assert!(h.contains("option httplog") && h.contains("server o1 127.0.0.1:9000"));
        let n = nginx_logged_proxy_conf(Path::new("/tmp/x"), 8000, origin);
        assert!(n.contains("access_log /tmp/x/access.log combined buffer=64k flush=100ms;"));
        assert_eq!(n.matches("access_log /tmp").count(), 1);
        let e = egressd_yaml(8000, origin, Path::new("/tmp/x/access.log"));
        assert!(e.contains("portMap: {80: 8000}") && e.contains("ports: {http: 9000}"));
        assert_eq!(e.matches("\n---\n").count(), 3);
    }
}
