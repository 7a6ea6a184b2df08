//! What each admin path answers. Paths and semantics follow Envoy's admin interface.

use std::sync::atomic::Ordering;

use super::server::Response;
use crate::runtime::control::Control;

pub fn dispatch(method: &str, target: &str, control: &Control) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET" | "HEAD", "/ready") => ready(control),
        ("GET" | "HEAD", "/healthz") => Response::text(200, "OK\n"),
        ("GET", "/server_info") => server_info(control),
        ("GET", "/config_dump") => super::config_dump::config_dump(control),
        ("GET", "/clusters") => super::config_dump::clusters(control),
        ("GET", "/stats") => super::stats::text(control, query),
        ("GET", "/stats/prometheus") => super::stats::prometheus(control),
        ("POST", "/reload") => match control.reload() {
            Ok(generation) => Response::text(200, format!("reloaded generation={generation}\n")),
            Err(errors) => {
                let body: String = errors.iter().map(|e| format!("{e}\n")).collect();
                Response::text(400, body)
            }
        },
        ("POST", "/drain_listeners") => {
            control.draining.store(true, Ordering::Relaxed);
            Response::text(200, "OK\n")
        }
        (
            _,
            "/ready" | "/healthz" | "/server_info" | "/stats" | "/stats/prometheus"
            | "/config_dump" | "/clusters" | "/reload" | "/drain_listeners",
        ) => Response::text(405, "method not allowed\n"),
        _ => Response::text(404, "not found\n"),
    }
}

/// 200 only while every shard listens with a table and nothing drains (Envoy's LIVE).
fn ready(control: &Control) -> Response {
    let listening = control.shards_listening.load(Ordering::Relaxed);
    if control.draining.load(Ordering::Relaxed) {
        Response::text(503, "DRAINING\n")
    } else if listening == control.shards {
        Response::text(200, "LIVE\n")
    } else {
        Response::text(503, "PRE_INITIALIZING\n")
    }
}

fn server_info(control: &Control) -> Response {
    let state = if control.draining.load(Ordering::Relaxed) {
        "DRAINING"
    } else {
        "LIVE"
    };
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "state": state,
        "uptime_seconds": control.started.elapsed().as_secs(),
        "shards": control.shards,
        "config_generation": control.snapshot().generation,
        "config_path": control.config_path().display().to_string(),
    });
    Response::json(200, format!("{body:#}\n"))
}
