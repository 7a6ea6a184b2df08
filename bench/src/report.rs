//! Result files: `<out>/<date>-<tag>.json` and `.md` (date = UTC YYYY-MM-DD).
//!
//! Owns: the JSON schema (serde structs), medians across rounds, ratios, the Markdown view.
//! Must not: run anything; `scenario` fills these structs. Issue 9 adds scenarios by pushing
//! more `Scenario` values (TLS, passthrough, ...) into `Report::scenarios`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::BenchError;
use crate::machine::{round3, Machine};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub started_utc: String,
    pub machine: Machine,
    pub layout: Layout,
    pub scenarios: Vec<Scenario>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub loadgen_cpu: usize,
    pub target_cpu: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rounds: usize,
    pub order: Vec<String>,
    pub request: String,
    pub response_body_bytes: usize,
    pub open_loop_rate_basis: String,
    pub cpu_measure: String,
    pub tool_versions: BTreeMap<String, String>,
    pub proxies: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub targets: Vec<TargetResult>,
    pub ratios: BTreeMap<String, Ratio>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cross_check: Option<CrossCheck>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetResult {
    pub name: String,
    pub peak_rps: Option<f64>,
    /// CPU of the process under test per completed request at peak (for `direct`: the origin's).
    pub cpu_us_per_req: Option<f64>,
    pub origin_cpu_us_per_req: Option<f64>,
    pub peak_latency: Option<Latency>,
    pub open_loop: Option<OpenLoop>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<OpenLoop>,
    pub rounds: Rounds,
    /// Bulk workloads: peak body throughput and the process under test's CPU per GB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbit_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_gb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rounds {
    pub peak: Vec<Phase>,
    pub open_loop: Vec<Phase>,
}

/// One measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Offered rate (open loop); None for closed-loop peak.
    pub rate: Option<f64>,
    pub rps: f64,
    pub ok: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub latency: Latency,
    pub cpu_us_per_req: Option<f64>,
    pub origin_cpu_us_per_req: Option<f64>,
    /// The load generator's own CPU per request: near 1 s/s means it, not the target, limited.
    pub loadgen_cpu_us_per_req: Option<f64>,
    /// How busy the target CPU was over the window (under 100% at peak: not CPU-bound there).
    pub target_cpu_busy_pct: Option<f64>,
    /// Time the hypervisor ran someone else on the target CPU.
    pub target_cpu_steal_pct: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    pub rate: f64,
    pub achieved_rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: u64,
    pub cpu_us_per_req: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratio {
    pub rps: Option<f64>,
    pub cpu: Option<f64>,
    pub p99_at_same_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrossCheck {
    pub tool: String,
    pub target: String,
    pub wrk_rps: Option<f64>,
    pub bench_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Latency {
    pub fn from_histogram_ns(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| round3(ns as f64 / 1000.0);
        Latency {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn median_of(phases: &[Phase], f: impl Fn(&Phase) -> Option<f64>) -> Option<f64> {
    median(phases.iter().filter_map(f).collect()).map(round3)
}

/// Field-wise medians of rounds (so p99 is the median of the rounds' p99s).
pub fn median_latency(phases: &[Phase]) -> Option<Latency> {
    Some(Latency {
        p50_us: median_of(phases, |p| Some(p.latency.p50_us))?,
        p90_us: median_of(phases, |p| Some(p.latency.p90_us))?,
        p99_us: median_of(phases, |p| Some(p.latency.p99_us))?,
        p999_us: median_of(phases, |p| Some(p.latency.p999_us))?,
        max_us: median_of(phases, |p| Some(p.latency.max_us))?,
    })
}

pub fn open_loop_summary(phases: &[Phase]) -> Option<OpenLoop> {
    let l = median_latency(phases)?;
    Some(OpenLoop {
        rate: median_of(phases, |p| p.rate)?,
        achieved_rps: median_of(phases, |p| Some(p.rps))?,
        p50_us: l.p50_us,
        p90_us: l.p90_us,
        p99_us: l.p99_us,
        p999_us: l.p999_us,
        max_us: l.max_us,
        errors: phases.iter().map(|p| p.errors).sum(),
        cpu_us_per_req: median_of(phases, |p| p.cpu_us_per_req),
    })
}

impl TargetResult {
    /// Fills the medians from the rounds.
    pub fn summarize(&mut self) {
        self.peak_rps = median_of(&self.rounds.peak, |p| Some(p.rps));
        self.cpu_us_per_req = median_of(&self.rounds.peak, |p| p.cpu_us_per_req);
        self.origin_cpu_us_per_req = median_of(&self.rounds.peak, |p| p.origin_cpu_us_per_req);
        self.peak_latency = median_latency(&self.rounds.peak);
        self.open_loop = open_loop_summary(&self.rounds.open_loop);
    }
}

impl TargetResult {
    /// Peak Gbit/s and CPU seconds per GB (1e9 bytes) of `body_bytes` per response.
    pub fn add_throughput(&mut self, body_bytes: usize) {
        let bytes = body_bytes as f64;
        self.gbit_per_s = self.peak_rps.map(|r| round3(r * bytes * 8.0 / 1e9));
        self.cpu_s_per_gb = self
            .cpu_us_per_req
            .map(|us| round3(us * 1e-6 * 1e9 / bytes));
    }
}

/// `subject/other` for req/s, CPU per request and open-loop p99, for each other target.
pub fn ratios(targets: &[TargetResult], subject: &str) -> BTreeMap<String, Ratio> {
    let find = |n: &str| targets.iter().find(|t| t.name == n && t.skipped.is_none());
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round3(a / b)),
        _ => None,
    };
    let mut out = BTreeMap::new();
    for other in targets.iter().filter(|t| t.name != subject) {
        let s = find(subject);
        let o = find(&other.name);
        let get =
            |t: Option<&TargetResult>, f: &dyn Fn(&TargetResult) -> Option<f64>| t.and_then(f);
        out.insert(
            format!("{subject}/{}", other.name),
            Ratio {
                rps: div(get(s, &|t| t.peak_rps), get(o, &|t| t.peak_rps)),
                cpu: div(get(s, &|t| t.cpu_us_per_req), get(o, &|t| t.cpu_us_per_req)),
                p99_at_same_rate: div(
                    get(s, &|t| t.open_loop.as_ref().map(|l| l.p99_us)),
                    get(o, &|t| t.open_loop.as_ref().map(|l| l.p99_us)),
                ),
            },
        );
    }
    out
}

/// Writes the JSON, the Markdown and, for the first scenario, the chart
/// `<out>/<date>-<tag>.svg` (linked under the Markdown's title); returns the first two paths.
pub fn write_files(r: &Report, out: &Path, tag: &str) -> Result<(PathBuf, PathBuf), BenchError> {
    let mut md = crate::markdown::render(r);
    if let Some(sc) = r.scenarios.first() {
        std::fs::create_dir_all(out)
            .map_err(|e| BenchError::io(format!("create {}", out.display()), e))?;
        let name = format!("{}-{tag}.svg", r.date);
        let path = out.join(&name);
        std::fs::write(&path, crate::svg::render(sc))
            .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
        let link = format!("![latency vs offered rate and peak req/s]({name})\n\n");
        let at = md.find("\n\n").map_or(md.len(), |i| i + 2);
        md.insert_str(at, &link);
    }
    write_pair(out, &r.date, tag, r, &md)
}

/// Writes `<out>/<date>-<tag>.json` (pretty `value`) and `.md` (`markdown`), returning their
/// paths; every scenario's result files go through here.
pub fn write_pair(
    out: &Path,
    date: &str,
    tag: &str,
    value: &impl Serialize,
    markdown: &str,
) -> Result<(PathBuf, PathBuf), BenchError> {
    std::fs::create_dir_all(out)
        .map_err(|e| BenchError::io(format!("create {}", out.display()), e))?;
    let json_path = out.join(format!("{date}-{tag}.json"));
    let md_path = out.join(format!("{date}-{tag}.md"));
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| BenchError::io("serialize report", e.into()))?;
    std::fs::write(&json_path, json + "\n")
        .map_err(|e| BenchError::io(format!("write {}", json_path.display()), e))?;
    std::fs::write(&md_path, markdown)
        .map_err(|e| BenchError::io(format!("write {}", md_path.display()), e))?;
    Ok((json_path, md_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, rps: f64, cpu: f64, p99: f64) -> TargetResult {
        TargetResult {
            name: name.into(),
            peak_rps: Some(rps),
            cpu_us_per_req: Some(cpu),
            open_loop: Some(OpenLoop {
                rate: 1.0,
                achieved_rps: 1.0,
                p50_us: 1.0,
                p90_us: 1.0,
                p99_us: p99,
                p999_us: 1.0,
                max_us: 1.0,
                errors: 0,
                cpu_us_per_req: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn ratios_divide_subject_by_each_peer_and_skip_missing() {
        let mut ts = vec![
            target("direct", 100.0, 10.0, 50.0),
            target("egressd", 50.0, 20.0, 100.0),
            target("haproxy", 40.0, 25.0, 200.0),
        ];
        let r = ratios(&ts, "egressd");
        assert_eq!(r["egressd/direct"].rps, Some(0.5));
        assert_eq!(r["egressd/haproxy"].cpu, Some(0.8));
        assert_eq!(r["egressd/haproxy"].p99_at_same_rate, Some(0.5));
        ts[1].skipped = Some("not built".into());
        assert_eq!(ratios(&ts, "egressd")["egressd/direct"].rps, None);
    }
}
