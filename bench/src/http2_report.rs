//! Running the `http2` scenario in interleaved rounds and its result files
//! (`perf-results/<date>-http2.{json,md}`): medians per target and the ratios against
//! sidecar-direct and haproxy.
//!
//! Owns: round order, medians, ratios, the Markdown table. Must not: measure (`http2`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::BenchError;
use crate::http2::{measure, start_origin, Measured, Plan, Target};
use crate::machine::{round3, Machine};

#[derive(Debug, Serialize)]
pub struct Http2Report {
    pub date: String,
    pub started_utc: String,
    pub machine: Machine,
    pub layout: Vec<String>,
    pub medians: Vec<Measured>,
    /// egressd / direct and egressd / haproxy, for req/s and CPU per request.
    pub ratios: BTreeMap<String, f64>,
    pub rounds: Vec<Measured>,
    pub notes: Vec<String>,
}

/// Every target once per round, in `Target::ALL` order, against one origin.
pub fn run(plan: &Plan, rounds: usize, stop: &AtomicBool) -> Result<Vec<Measured>, BenchError> {
    let (origin, h2) = start_origin(plan, stop)?;
    let mut all = Vec::new();
    for round in 0..rounds {
        for target in Target::ALL {
            let m = measure(target, plan, &origin, h2, stop)?;
            tracing::info!(
                ?target,
                round,
                rps = m.rps,
                cpu_us_per_req = m.cpu_us_per_req,
                failed = m.failed,
                "measured"
            );
            all.push(m);
            if stop.load(Ordering::Relaxed) {
                return Err(BenchError::Interrupted);
            }
        }
    }
    Ok(all)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn medians(rounds: &[Measured]) -> Vec<Measured> {
    Target::ALL
        .iter()
        .filter_map(|t| {
            let of: Vec<&Measured> = rounds.iter().filter(|m| m.target == *t).collect();
            let pick = |f: fn(&Measured) -> f64| round3(median(of.iter().map(|m| f(m)).collect()));
            Some(Measured {
                target: *t,
                rps: pick(|m| m.rps),
                succeeded: of.iter().map(|m| m.succeeded).sum(),
                failed: of.iter().map(|m| m.failed).sum(),
                cpu_us_per_req: pick(|m| m.cpu_us_per_req),
                origin_cpu_us_per_req: pick(|m| m.origin_cpu_us_per_req),
                mean_ms: pick(|m| m.mean_ms),
                max_ms: pick(|m| m.max_ms),
            })
            .filter(|_| !of.is_empty())
        })
        .collect()
}

pub fn ratios(medians: &[Measured]) -> BTreeMap<String, f64> {
    let get = |t: Target| medians.iter().find(|m| m.target == t);
    let mut out = BTreeMap::new();
    for (name, egressd) in [
        ("egressd", Target::Egressd),
        ("egressd-h2-upstream", Target::EgressdH2Upstream),
    ] {
        let Some(e) = get(egressd) else { continue };
        if let Some(d) = get(Target::Direct) {
            out.insert(format!("{name}/direct rps"), round3(e.rps / d.rps));
        }
        if let Some(h) = get(Target::Haproxy) {
            out.insert(format!("{name}/haproxy rps"), round3(e.rps / h.rps));
            out.insert(
                format!("{name}/haproxy cpu per req"),
                round3(e.cpu_us_per_req / h.cpu_us_per_req),
            );
        }
    }
    out
}

pub fn markdown(r: &Http2Report) -> String {
    let mut out = format!(
        "# http2, {}\n\nStarted {} UTC on {} ({} logical CPUs).\n\n\
         | target | req/s | proxy CPU µs/req | origin CPU µs/req | mean ms | max ms | failed |\n|---|---|---|---|---|---|---|\n",
        r.date, r.started_utc, r.machine.cpu_model, r.machine.cores
    );
    for m in &r.medians {
        let name = serde_json::to_value(m.target)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            m.rps, m.cpu_us_per_req, m.origin_cpu_us_per_req, m.mean_ms, m.max_ms, m.failed
        );
    }
    out += "\n| ratio | value |\n|---|---|\n";
    for (k, v) in &r.ratios {
        out += &format!("| {k} | {v} |\n");
    }
    for (title, lines) in [("Layout", &r.layout), ("Notes", &r.notes)] {
        out += &format!("\n## {title}\n\n");
        for l in lines {
            out += &format!("- {l}\n");
        }
    }
    out
}
