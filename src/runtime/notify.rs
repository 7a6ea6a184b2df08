//! Service-manager notifications (sd_notify protocol): READY, STATUS, RELOADING, STOPPING
//! and WATCHDOG datagrams to `$NOTIFY_SOCKET`, and the watchdog interval from
//! `$WATCHDOG_USEC`/`$WATCHDOG_PID`.
//!
//! Owns the socket address and the message format (the `sd-notify` crate's `NotifyState`).
//! It must not decide *when* egressd is ready or healthy: the runtime calls `notify_ready`
//! once every shard listens, and `watchdog` decides whether to ping. Without
//! `$NOTIFY_SOCKET` (not under systemd) every call is a silent no-op.
//!
//! The address is read once, not per call as `sd_notify::notify` does, so the watchdog
//! thread never races a change of the environment, and tests can aim a `Notifier` at their
//! own socket without touching the process-wide environment.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

pub use sd_notify::NotifyState;

/// Where notifications go; `None` when not started by a service manager.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`: a path, or `@name` for an abstract socket (systemd uses both).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|v| {
            let bytes = v.as_encoded_bytes();
            let addr = match bytes.strip_prefix(b"@") {
                Some(name) => SocketAddr::from_abstract_name(name),
                None => SocketAddr::from_pathname(Path::new(&v)),
            };
            addr.inspect_err(|e| tracing::warn!(socket = ?v, error = %e, "ignoring NOTIFY_SOCKET"))
                .ok()
        });
        Notifier { target }
    }

    /// A notifier aimed at a socket file (tests, or a supervisor other than systemd).
    pub fn to_path(path: &Path) -> io::Result<Notifier> {
        Ok(Notifier {
            target: Some(SocketAddr::from_pathname(path)?),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram with one `KEY=value` line per state. Ok(()) when disabled.
    pub fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        let sock = UnixDatagram::unbound()?;
        let sent = sock.send_to_addr(msg.as_bytes(), target)?;
        if sent != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short notify datagram",
            ));
        }
        Ok(())
    }

    /// Like `send`, but a failure is only logged: a lost notification must not stop the
    /// gateway (systemd then times out the start or the watchdog, which is the right outcome).
    pub fn send_or_log(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = self.send(states) {
            tracing::warn!(error = %e, "could not notify the service manager");
        }
    }
}

/// The process-wide notifier, from the environment at first use.
pub fn notifier() -> &'static Notifier {
    static NOTIFIER: OnceLock<Notifier> = OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env)
}

/// `READY=1`: call once every shard's listeners accept, and again after each reload.
pub fn notify_ready() {
    notifier().send_or_log(&[NotifyState::Ready]);
}

/// `STATUS=...`: one line shown by `systemctl status`.
pub fn notify_status(status: &str) {
    notifier().send_or_log(&[NotifyState::Status(status)]);
}

/// `STOPPING=1`: call when the drain starts (SIGTERM).
pub fn notify_stopping() {
    notifier().send_or_log(&[NotifyState::Stopping]);
}

/// `RELOADING=1` with `MONOTONIC_USEC` (systemd 253+ wants the timestamp): call on SIGHUP
/// before building the new state, then `notify_ready` once it is switched in (or kept).
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notifier().send_or_log(&[NotifyState::Reloading, now]),
        Err(_) => notifier().send_or_log(&[NotifyState::Reloading]),
    }
}

/// The watchdog timeout systemd enforces (`WatchdogSec=`), or `None` when there is none
/// for this process. As sd_watchdog_enabled(3): `$WATCHDOG_USEC` must be a positive
/// number, and `$WATCHDOG_PID`, when set, must be our pid.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_env_follows_sd_watchdog_enabled() {
        let s = Duration::from_secs;
        assert_eq!(parse_watchdog(Some("30000000"), None, 7), Some(s(30)));
        assert_eq!(parse_watchdog(Some("30000000"), Some("7"), 7), Some(s(30)));
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("30000000"), Some("x"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
    }

    #[test]
    fn messages_arrive_as_key_value_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let n = Notifier::to_path(&path).unwrap();
        assert!(n.is_enabled());
        n.send(&[
            NotifyState::Ready,
            NotifyState::Status("2 shards listening"),
        ])
        .unwrap();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=2 shards listening\n");
    }

    #[test]
    fn abstract_socket_names_are_supported() {
        let name = format!(
            "egressd-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let n = Notifier { target: Some(addr) };
        n.send(&[NotifyState::Watchdog]).unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_succeeds() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.send(&[NotifyState::Ready]).unwrap();
    }

    #[test]
    fn missing_listener_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::to_path(&dir.path().join("nobody-here")).unwrap();
        assert!(n.send(&[NotifyState::Ready]).is_err());
        n.send_or_log(&[NotifyState::Ready]);
    }
}
