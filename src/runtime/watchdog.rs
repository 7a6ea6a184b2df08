//! The systemd watchdog, fed only while every shard is alive.
//!
//! Each shard bumps its own slot of a shared `Heartbeat` from a timer task every
//! `beat_period` (a quarter of the watchdog timeout); a separate thread checks every half
//! timeout and sends `WATCHDOG=1` only if every slot advanced since the last ping. A shard
//! stuck in a blocking call or a busy loop stops its timer task, the pings stop, and
//! systemd restarts the process after `WatchdogSec=`. This is not the data path: one
//! relaxed atomic add per shard per period.
//!
//! Owns the heartbeat slots, the check thread and the test-only fault hook
//! `EGRESSD_TEST_STALL_SHARD=<n>` (shard n stops bumping; inert unless set). It must not
//! restart or kill anything itself: that is the service manager's decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::notify::{Notifier, NotifyState};

/// The environment variable of the test-only fault hook.
pub const STALL_SHARD_ENV: &str = "EGRESSD_TEST_STALL_SHARD";

/// One counter per shard, bumped by that shard only.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<[AtomicU64]>);

impl Heartbeat {
    pub fn new(shards: usize) -> Heartbeat {
        Heartbeat((0..shards).map(|_| AtomicU64::new(0)).collect())
    }

    pub fn shards(&self) -> usize {
        self.0.len()
    }

    /// Called by shard `shard` only. Relaxed: the checker needs "it moved", not ordering
    /// with other memory.
    pub fn beat(&self, shard: usize) {
        self.0[shard].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|s| s.load(Ordering::Relaxed)).collect()
    }
}

/// How often a shard bumps its slot: four times per watchdog timeout, so two bumps fall
/// into every check period even when a timer fires late.
pub fn beat_period(watchdog: Duration) -> Duration {
    watchdog / 4
}

/// The shard that `EGRESSD_TEST_STALL_SHARD` stalls, read once. `None` unless set to a
/// shard number.
pub fn stalled_shard() -> Option<usize> {
    static STALLED: OnceLock<Option<usize>> = OnceLock::new();
    *STALLED.get_or_init(|| parse_stall(std::env::var(STALL_SHARD_ENV).ok().as_deref()))
}

fn parse_stall(value: Option<&str>) -> Option<usize> {
    let value = value?;
    match value.trim().parse() {
        Ok(n) => {
            tracing::warn!(
                "{STALL_SHARD_ENV}={n}: test fault hook active, shard {n} will stop heartbeating"
            );
            Some(n)
        }
        Err(_) => {
            tracing::warn!("ignoring {STALL_SHARD_ENV}={value:?}: not a shard number");
            None
        }
    }
}

/// The shard's heartbeat timer task; spawn it detached on shard `shard`'s executor. It
/// runs until the executor ends.
pub async fn heartbeat_task(hb: Heartbeat, shard: usize, period: Duration) {
    heartbeat_loop(hb, shard, period, stalled_shard()).await
}

async fn heartbeat_loop(hb: Heartbeat, shard: usize, period: Duration, stalled: Option<usize>) {
    if stalled == Some(shard) {
        tracing::warn!(shard, "test fault hook: this shard does not heartbeat");
        return;
    }
    loop {
        hb.beat(shard);
        glommio::timer::sleep(period).await;
    }
}

/// The period for `heartbeat_task` when systemd asked for a watchdog; `None` = no
/// watchdog, no heartbeat tasks needed.
pub fn beat_period_from_env() -> Option<Duration> {
    super::notify::watchdog_interval().map(beat_period)
}

/// Starts the check thread when `$WATCHDOG_USEC` asks for one (`None` otherwise), pinging
/// through the process-wide notifier. Order at start-up: `Heartbeat::new(shards)`, start
/// the shards (each spawns `heartbeat_task` with `beat_period_from_env()`), wait until
/// every shard listens, then `arm_from_env` and `notify_ready`: systemd arms its watchdog
/// at READY=1, and a shard still starting would look stuck to an earlier check.
pub fn arm_from_env(hb: &Heartbeat) -> std::io::Result<Option<Watchdog>> {
    let Some(timeout) = super::notify::watchdog_interval() else {
        return Ok(None);
    };
    let notifier = super::notify::notifier().clone();
    let watchdog = Watchdog::spawn(hb.clone(), timeout, notifier)?;
    tracing::info!(
        ?timeout,
        shards = hb.shards(),
        "watchdog armed: every shard must heartbeat"
    );
    Ok(Some(watchdog))
}

/// The check thread. Dropping it (or `stop`) ends the thread.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    checks: u64,
    pings: u64,
    stuck: Vec<usize>,
}

impl Watchdog {
    /// Starts checking every `timeout / 2`, pinging through `notifier`.
    pub fn spawn(
        hb: Heartbeat,
        timeout: Duration,
        notifier: Notifier,
    ) -> std::io::Result<Watchdog> {
        let (stop, stopped) = mpsc::channel();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        // Taken here, not in the thread, so beats made right after `spawn` count.
        let first = hb.snapshot();
        let thread = std::thread::Builder::new()
            .name("egressd-watchdog".into())
            .spawn(move || check_loop(hb, first, timeout / 2, notifier, stopped, shared))?;
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
            state,
        })
    }

    /// Checks done so far (for tests and diagnostics).
    pub fn checks(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.checks)
    }

    /// Pings sent so far.
    pub fn pings(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.pings)
    }

    /// Shards that did not advance at the last check.
    pub fn stuck(&self) -> Vec<usize> {
        self.state
            .lock()
            .map_or_else(|_| Vec::new(), |s| s.stuck.clone())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn check_loop(
    hb: Heartbeat,
    mut at_last_ping: Vec<u64>,
    every: Duration,
    notifier: Notifier,
    stopped: mpsc::Receiver<()>,
    state: Arc<Mutex<State>>,
) {
    let mut was_stuck = false;
    // The channel only ever closes (the sender is dropped): Timeout means "check now".
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let now = hb.snapshot();
        let stuck = stuck_shards(&at_last_ping, &now);
        let healthy = stuck.is_empty();
        // Counters first, so whoever sees a datagram also sees the check that sent it.
        if let Ok(mut s) = state.lock() {
            s.checks += 1;
            s.pings += u64::from(healthy);
            s.stuck.clone_from(&stuck);
        }
        if healthy {
            notifier.send_or_log(&[NotifyState::Watchdog]);
            if was_stuck {
                tracing::info!("every shard heartbeats again; watchdog pings resumed");
                notifier.send_or_log(&[NotifyState::Status("all shards heartbeating")]);
            }
            at_last_ping = now;
        } else {
            tracing::error!(shards = ?stuck, "shard(s) stopped heartbeating; not pinging the watchdog, so the service manager restarts egressd");
            if !was_stuck {
                let msg = format!("shard(s) {stuck:?} stuck; watchdog pings stopped");
                notifier.send_or_log(&[NotifyState::Status(&msg)]);
            }
        }
        was_stuck = !healthy;
    }
}

/// Shards whose slot did not move between `before` and `now`.
fn stuck_shards(before: &[u64], now: &[u64]) -> Vec<usize> {
    before
        .iter()
        .zip(now)
        .enumerate()
        .filter(|(_, (b, n))| b == n)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
#[path = "watchdog_tests.rs"]
mod tests;
