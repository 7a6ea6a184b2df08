//! `/stats` and `/stats/prometheus`: asks every shard for fresh counters (bounded wait),
//! merges them and renders Envoy's text or Prometheus exposition.

use std::time::Duration;

use regex::Regex;

use super::server::Response;
use crate::obs::stats_render::{render_envoy_text, render_prometheus};
use crate::runtime::control::Control;

/// How long a scrape waits for shards to publish before using their last snapshot.
pub const SCRAPE_WAIT: Duration = Duration::from_millis(500);

pub fn text(control: &Control, query: &str) -> Response {
    let filter = match query_param(query, "filter").map(|f| Regex::new(&f)) {
        Some(Ok(re)) => Some(re),
        Some(Err(e)) => return Response::text(400, format!("invalid filter regex: {e}\n")),
        None => None,
    };
    let scrape = control.stats.refresh(SCRAPE_WAIT);
    Response::text(200, render_envoy_text(&scrape.stats, filter.as_ref()))
}

pub fn prometheus(control: &Control) -> Response {
    let scrape = control.stats.refresh(SCRAPE_WAIT);
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4",
        body: render_prometheus(&scrape.stats),
    }
}

/// A percent-decoded query parameter.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_filter() {
        assert_eq!(
            super::query_param("filter=cnn%2Ecom%7C", "filter").as_deref(),
            Some("cnn.com|")
        );
        assert_eq!(super::query_param("a=b", "filter"), None);
    }
}
