//! The bench crate's only `unsafe`: a timerfd for sub-millisecond send schedules, the
//! kernel's clock-tick rate for /proc CPU times, and SIGKILL by PID for stray descendants.
//!
//! Owns: thin wrappers, each call checked and each block with a SAFETY comment.
//! Must not: hold policy (when to arm, whom to kill); callers decide.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking monotonic timerfd. epoll_wait's timeout has millisecond resolution (mio
/// rounds up), which would bunch an open-loop schedule into 1 ms bursts; a timerfd wakes the
/// loop at the nanosecond the next request is due.
pub struct TimerFd {
    fd: OwnedFd,
}

impl TimerFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; a negative return is checked below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Fires once, `after` from now (a zero duration would disarm, so it is raised to 1 ns).
    pub fn arm_after(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the fd is open and owned by self; `spec` lives across the call; a null
        // old_value is allowed.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes pending expirations so the fd stops being readable.
    pub fn drain(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: the buffer is 8 writable bytes, as timerfd reads require; EAGAIN (nothing
        // pending) is the expected non-error outcome and needs no handling.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                expirations.as_mut_ptr().cast(),
                expirations.len(),
            );
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Clock ticks per second for utime/stime in /proc/PID/stat (USER_HZ, almost always 100).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// SIGKILL one process by PID. Used only for descendants of processes this run spawned.
pub fn kill_pid(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 1 {
        return Err(io::Error::other("refusing to signal pid <= 1"));
    }
    // SAFETY: kill takes no pointers; pid > 1 excludes process groups and init.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets this thread's timer slack to 1 ns. The default 50 µs lets the kernel fire a timerfd
/// late to batch wake-ups, which the open-loop schedule would record as latency.
pub fn minimize_timer_slack() -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's RLIMIT_NOFILE to at least `want` (soft and hard; raising the hard
/// limit needs CAP_SYS_RESOURCE, so without it the soft limit goes up to the hard one).
/// Children inherit the result. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let wanted = libc::rlimit {
        rlim_cur: want.max(lim.rlim_cur),
        rlim_max: want.max(lim.rlim_max),
    };
    // SAFETY: setrlimit reads one rlimit from a struct that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(wanted.rlim_cur);
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(capped.rlim_cur)
}
