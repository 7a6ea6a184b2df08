//! Running the `passthrough` scenario in interleaved rounds and writing its results
//! (`perf-results/<date>-passthrough.{json,md}`), only when the run was clean: every target
//! measured, every bulk byte counted at the origin, no failed connection.
//!
//! Owns: round order, medians, the report's shape and Markdown table.
//! Must not: measure (`passthrough`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error::BenchError;
use crate::machine::Machine;
use crate::passthrough::{measure, Measured, Plan, Target};

/// A target that could not run, with why.
pub type Skipped = (Target, String);

#[derive(Debug, Serialize)]
pub struct PassthroughReport {
    pub date: String,
    pub started_utc: String,
    pub machine: Machine,
    pub layout: Vec<String>,
    /// Median per target over the rounds.
    pub medians: Vec<Measured>,
    /// Every round, in run order.
    pub rounds: Vec<Measured>,
    /// Targets that could not run, with why.
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
}

/// Runs `rounds` rounds of every target in `Target::ALL` order.
pub fn run(
    plan: &Plan,
    rounds: usize,
    stop: &AtomicBool,
) -> Result<(Vec<Measured>, Vec<Skipped>), BenchError> {
    let mut all = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    for round in 0..rounds {
        for target in Target::ALL {
            if skipped.iter().any(|(t, _)| *t == target) {
                continue;
            }
            match measure(target, plan, stop) {
                Ok(m) => {
                    tracing::info!(?target, round, gbit_s = m.bulk_gbit_s, cpu_s_per_gb = ?m.bulk_cpu_s_per_gb, conn_s = m.conn_per_s, cpu_us_per_conn = ?m.conn_cpu_us_per_conn, errors = m.errors, "measured");
                    all.push(m);
                }
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(e) => {
                    tracing::warn!(?target, error = %e, "skipped");
                    skipped.push((target, e.to_string()));
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Err(BenchError::Interrupted);
            }
        }
    }
    Ok((all, skipped))
}

/// The median round of each target (by bulk Gbit/s for bulk fields, by conn/s for the rest).
pub fn medians(rounds: &[Measured]) -> Vec<Measured> {
    Target::ALL
        .iter()
        .filter_map(|t| {
            let mut mine: Vec<&Measured> = rounds.iter().filter(|m| m.target == *t).collect();
            if mine.is_empty() {
                return None;
            }
            mine.sort_by(|a, b| a.bulk_gbit_s.total_cmp(&b.bulk_gbit_s));
            let bulk = mine[mine.len() / 2];
            mine.sort_by(|a, b| a.conn_per_s.total_cmp(&b.conn_per_s));
            let conn = mine[mine.len() / 2];
            Some(Measured {
                target: *t,
                bulk_bytes: bulk.bulk_bytes,
                bulk_gbit_s: bulk.bulk_gbit_s,
                bulk_cpu_s_per_gb: bulk.bulk_cpu_s_per_gb,
                connections: conn.connections,
                conn_per_s: conn.conn_per_s,
                conn_cpu_us_per_conn: conn.conn_cpu_us_per_conn,
                errors: mine.iter().map(|m| m.errors).sum(),
            })
        })
        .collect()
}

/// A run is clean when every target ran and nothing failed.
pub fn is_clean(r: &PassthroughReport) -> bool {
    r.skipped.is_empty()
        && r.rounds.iter().all(|m| m.errors == 0)
        && r.medians.len() == Target::ALL.len()
}

pub fn markdown(r: &PassthroughReport) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}"));
    let mut out = format!(
        "# passthrough, {}\n\nStarted {} UTC on {} ({} logical CPUs).\n\n",
        r.date, r.started_utc, r.machine.cpu_model, r.machine.cores
    );
    out += "| target | bulk Gbit/s | proxy CPU-s/GB | conn/s | proxy CPU µs/conn | errors |\n|---|---|---|---|---|---|\n";
    for m in &r.medians {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            serde_json::to_value(m.target)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            m.bulk_gbit_s,
            opt(m.bulk_cpu_s_per_gb),
            m.conn_per_s,
            opt(m.conn_cpu_us_per_conn),
            m.errors
        );
    }
    for (t, why) in &r.skipped {
        out += &format!("\nSkipped {t:?}: {why}\n");
    }
    out += "\n## Layout\n\n";
    for l in &r.layout {
        out += &format!("- {l}\n");
    }
    out += "\n## Notes\n\n";
    for n in &r.notes {
        out += &format!("- {n}\n");
    }
    out
}

pub fn write_files(r: &PassthroughReport, out: &Path) -> Result<(PathBuf, PathBuf), BenchError> {
    crate::report::write_pair(out, &r.date, "passthrough", r, &markdown(r))
}
