//! Resource limits and CPU affinity as the kernel reports them: getrlimit/setrlimit for
//! RLIMIT_MEMLOCK and RLIMIT_NOFILE, sched_getaffinity, uname.
//!
//! Owns only the system calls and their translation into plain values. It must not decide
//! whether a value is enough: that judgement lives in `runtime::limits`.

use std::io;
use std::mem::MaybeUninit;

/// The resources egressd cares about before it starts its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Bytes of locked memory (io_uring registered buffers are charged to it).
    Memlock,
    /// Number of open file descriptors.
    Nofile,
}

impl Resource {
    fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
            Resource::Nofile => libc::RLIMIT_NOFILE,
        }
    }
}

/// A limit value: `None` means RLIM_INFINITY.
pub type LimitValue = Option<u64>;

/// Soft and hard limit of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: LimitValue,
    pub hard: LimitValue,
}

fn from_raw(v: libc::rlim_t) -> LimitValue {
    if v == libc::RLIM_INFINITY {
        None
    } else {
        Some(v)
    }
}

fn to_raw(v: LimitValue) -> libc::rlim_t {
    v.unwrap_or(libc::RLIM_INFINITY)
}

/// Reads the soft and hard limit of `res` for this process.
pub fn get(res: Resource) -> io::Result<Rlimit> {
    let mut raw = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `raw` is a valid, writable rlimit for the duration of the call and the
    // resource number is one of the constants libc defines.
    let rc = unsafe { libc::getrlimit(res.raw(), &mut raw) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Rlimit {
        soft: from_raw(raw.rlim_cur),
        hard: from_raw(raw.rlim_max),
    })
}

/// Sets the soft limit of `res` to `soft`, keeping the hard limit. The kernel refuses a
/// soft limit above the hard one (EINVAL) unless the process may raise the hard limit.
pub fn set_soft(res: Resource, soft: LimitValue) -> io::Result<()> {
    let current = get(res)?;
    let raw = libc::rlimit {
        rlim_cur: to_raw(soft),
        rlim_max: to_raw(current.hard),
    };
    // SAFETY: `raw` is a valid, initialised rlimit read by the kernel only during the call.
    let rc = unsafe { libc::setrlimit(res.raw(), &raw) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs in this thread's affinity mask (taskset, cgroup cpusets and Kubernetes' CPU
/// manager all show up here), in ascending order.
pub fn affinity_cpus() -> io::Result<Vec<usize>> {
    let mut set = MaybeUninit::<libc::cpu_set_t>::zeroed();
    // SAFETY: `set` is zero-initialised (a valid empty cpu_set_t), the size passed is its
    // exact size, and pid 0 means the calling thread.
    let rc = unsafe {
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set.as_mut_ptr())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the memory was zeroed above and the kernel filled it on success.
    let set = unsafe { set.assume_init() };
    let max = libc::CPU_SETSIZE as usize;
    // SAFETY: CPU_ISSET only reads the bit `cpu` of `set`, and `cpu` < CPU_SETSIZE.
    let cpus = (0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    Ok(cpus)
}

/// The running kernel's release string (`uname -r`), e.g. `6.1.0-18-amd64`.
pub fn kernel_release() -> io::Result<String> {
    let mut uts = MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: `uts` is a valid, writable utsname for the duration of the call.
    let rc = unsafe { libc::uname(uts.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed above and filled by the kernel on success.
    let uts = unsafe { uts.assume_init() };
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_soft_is_at_most_hard_and_round_trips() {
        let before = get(Resource::Nofile).unwrap();
        if let (Some(s), Some(h)) = (before.soft, before.hard) {
            assert!(s <= h);
        }
        // Setting the soft limit to its current value must succeed and change nothing.
        set_soft(Resource::Nofile, before.soft).unwrap();
        assert_eq!(get(Resource::Nofile).unwrap(), before);
    }

    #[test]
    fn soft_above_hard_is_refused_without_privilege_or_accepted_with_it() {
        let before = get(Resource::Memlock).unwrap();
        if let Some(hard) = before.hard {
            // Root (CAP_SYS_RESOURCE) may not raise a soft limit past the hard one either:
            // setrlimit keeps the hard limit we pass, so soft > hard is always EINVAL.
            let err = set_soft(Resource::Memlock, Some(hard + 4096)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        }
        assert_eq!(get(Resource::Memlock).unwrap(), before);
    }

    #[test]
    fn affinity_is_non_empty_and_matches_available_parallelism() {
        let cpus = affinity_cpus().unwrap();
        assert!(!cpus.is_empty());
        let par = std::thread::available_parallelism().unwrap().get();
        // available_parallelism also honours the affinity mask (and cgroup quotas, which
        // can only lower it).
        assert!(par <= cpus.len(), "{par} > {cpus:?}");
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn kernel_release_matches_procfs() {
        let rel = kernel_release().unwrap();
        let proc = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(rel, proc.trim());
    }
}
