//! What every scenario does before it measures: take the machine snapshot (before pinning,
//! so the notes show the CPUs the run was given), turn Ctrl-C/SIGTERM into a stop flag,
//! check the layout's CPUs, pin this thread (the load generator) and stamp the run's date.
//!
//! Owns: that preamble, once. Must not: start processes or choose what to measure.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::BenchError;
use crate::machine::Snapshot;

pub struct Launch {
    pub snapshot: Snapshot,
    /// Set by SIGINT/SIGTERM; every phase checks it and every spawned process dies with
    /// its guard.
    pub stop: Arc<AtomicBool>,
    /// UTC `YYYY-MM-DD`, the result files' prefix.
    pub date: String,
    pub started_utc: String,
}

/// The preamble for a run with the load generator on `loadgen_cpu` and the processes under
/// test on `target_cpu` (spawned processes are re-pinned by taskset).
pub fn prepare(loadgen_cpu: usize, target_cpu: usize) -> Result<Launch, BenchError> {
    let snapshot = Snapshot::take();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| BenchError::io("install signal handler", e))?;
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    for cpu in [loadgen_cpu, target_cpu] {
        if !cores.iter().any(|c| c.id == cpu) {
            return Err(BenchError::Machine(format!(
                "CPU {cpu} is not in this process's affinity mask"
            )));
        }
    }
    if loadgen_cpu == target_cpu {
        return Err(BenchError::Usage(
            "--loadgen-cpu and --target-cpu must differ".into(),
        ));
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: loadgen_cpu }) {
        return Err(BenchError::Machine(format!(
            "cannot pin to CPU {loadgen_cpu}"
        )));
    }
    let now = time::OffsetDateTime::now_utc();
    Ok(Launch {
        snapshot,
        stop,
        date: now
            .format(time::macros::format_description!("[year]-[month]-[day]"))
            .unwrap_or_default(),
        started_utc: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })
}
