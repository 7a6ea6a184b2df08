//! CPU time of the calling thread, for benches and per-shard accounting.
//! Owns nothing; reads getrusage(RUSAGE_THREAD) only.

use std::io;
use std::time::Duration;

use super::cvt;

/// User + system CPU time consumed so far by the calling thread.
pub fn thread_cpu_time() -> io::Result<Duration> {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage through a pointer to a live local.
    cvt(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) })?;
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    #[test]
    fn grows_with_work() {
        let before = super::thread_cpu_time().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(super::thread_cpu_time().unwrap() > before);
    }
}
