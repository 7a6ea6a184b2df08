//! Renders merged stats as Envoy's admin does: `/stats` text and `/stats/prometheus`.
//!
//! Owns: the Envoy text format (`name: value`, sorted, histograms last as quantile
//! summaries) with its `?filter=` regex, and the Prometheus text exposition with Envoy's
//! metric names and tag extraction (`upstream_rq_200` → `envoy_cluster_upstream_rq
//! {envoy_response_code="200",...}`, `upstream_rq_2xx` → `..._upstream_rq_xx
//! {envoy_response_code_class="2",...}`).
//! Must not: collect or merge (see `stats_hub`); pure functions of a `MergedStats`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;

use crate::obs::histogram::{Histogram, ENVOY_QUANTILES};
use crate::obs::stats_snapshot::{MergedStats, StatKey};

/// Envoy's `GET /stats` text: every counter and gauge as `name: value` sorted by name,
/// then every histogram as `name: P0(nan,v) P25(nan,v) ... P100(nan,v)` (Envoy's
/// interval value is `nan`: egressd keeps only cumulative histograms) or
/// `name: No recorded values`. `filter` keeps names it matches anywhere, as Envoy's
/// `?filter=` does.
pub fn render_envoy_text(stats: &MergedStats, filter: Option<&Regex>) -> String {
    let keep = |name: &str| filter.is_none_or(|re| re.is_match(name));
    let mut values: Vec<(String, u64)> = stats
        .counters
        .iter()
        .chain(stats.gauges.iter())
        .map(|(k, v)| (k.envoy_name(), *v))
        .filter(|(name, _)| keep(name))
        .collect();
    values.sort();
    let mut out = String::new();
    for (name, v) in values {
        let _ = writeln!(out, "{name}: {v}");
    }
    let mut hists: Vec<(String, &Histogram)> = stats
        .histograms
        .iter()
        .map(|(k, h)| (k.envoy_name(), h))
        .filter(|(name, _)| keep(name))
        .collect();
    hists.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, h) in hists {
        out.push_str(&name);
        out.push(':');
        if h.count() == 0 {
            out.push_str(" No recorded values");
        } else {
            for (q, label) in ENVOY_QUANTILES {
                let _ = write!(out, " {label}(nan,{})", h.quantile(q));
            }
        }
        out.push('\n');
    }
    out
}

/// Envoy's `GET /stats/prometheus`: families sorted, each with one `# TYPE` line;
/// histograms as `_bucket{le=...}` over Envoy's default bounds, `_sum` and `_count`.
pub fn render_prometheus(stats: &MergedStats) -> String {
    // family name -> (TYPE, sample lines); a family's samples must be contiguous.
    let mut families: BTreeMap<String, (&'static str, Vec<String>)> = BTreeMap::new();
    for (kind, map) in [("counter", &stats.counters), ("gauge", &stats.gauges)] {
        for (key, v) in map {
            let (family, labels) = prometheus_name(key);
            let line = format!("{family}{} {v}", braces(&labels));
            families
                .entry(family)
                .or_insert((kind, Vec::new()))
                .1
                .push(line);
        }
    }
    for (key, h) in &stats.histograms {
        let (family, labels) = prometheus_name(key);
        let lines = histogram_lines(&family, &labels, h);
        families
            .entry(family)
            .or_insert(("histogram", Vec::new()))
            .1
            .extend(lines);
    }
    let mut out = String::new();
    for (family, (kind, lines)) in families {
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

fn histogram_lines(family: &str, labels: &str, h: &Histogram) -> Vec<String> {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut lines: Vec<String> = h
        .cumulative_buckets()
        .map(|(le, n)| format!("{family}_bucket{{{labels}{sep}le=\"{le}\"}} {n}"))
        .collect();
    lines.push(format!(
        "{family}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count()
    ));
    lines.push(format!("{family}_sum{} {}", braces(labels), h.sum_ms()));
    lines.push(format!("{family}_count{} {}", braces(labels), h.count()));
    lines
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// Envoy's Prometheus family name and labels (`k="v",...`, escaped) for a stat.
fn prometheus_name(key: &StatKey) -> (String, String) {
    let mut labels = Vec::new();
    let name = extract_response_code_tags(&key.name, &mut labels);
    if let (Some(label), Some(value)) = (key.scope.label(), key.scope.value()) {
        labels.push((label, value.to_string()));
    }
    let mut family = String::from("envoy_");
    if let Some(seg) = key.scope.segment() {
        family.push_str(seg);
        family.push('_');
    }
    family.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    let labels = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect::<Vec<_>>()
        .join(",");
    (family, labels)
}

/// Envoy's default tag extractors for response codes: `*_rq_<3 digits>` loses the code
/// into `envoy_response_code`; `*_rq_<d>xx` keeps `_rq_xx` and puts the digit into
/// `envoy_response_code_class`.
fn extract_response_code_tags(name: &str, labels: &mut Vec<(&'static str, String)>) -> String {
    if let Some((stem, tail)) = name.rsplit_once("_rq_") {
        let b = tail.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_digit) {
            labels.push(("envoy_response_code", tail.to_string()));
            return format!("{stem}_rq");
        }
        if b.len() == 3 && b[0].is_ascii_digit() && &b[1..] == b"xx" {
            labels.push(("envoy_response_code_class", tail[..1].to_string()));
            return format!("{stem}_rq_xx");
        }
    }
    name.to_string()
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}
