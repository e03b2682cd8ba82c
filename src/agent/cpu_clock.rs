//! Another process's CPU time, as `--max-overhead` weighs its windows by.
//!
//! The kernel adds up what the process's threads had been charged at their
//! last tick or switch: a thread that is running is up to a tick behind
//! (4 ms at HZ=250). A thread's own clock would be exact, but the kernel
//! lets only the process itself read those. A millisecond window can so
//! read as no CPU at all, or as several: nothing here floors or trims a
//! reading, so that one read's lag is made good by the next one's.

pub struct CpuClock(libc::clockid_t);

impl CpuClock {
    pub fn of(pid: u32) -> Option<CpuClock> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: writes one clockid_t.
        (unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) } == 0)
            .then_some(CpuClock(id))
    }

    /// The process's CPU ns so far; None once it is gone.
    pub fn read(&self) -> Option<u64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a clock id from clock_getcpuclockid and a timespec to write.
        (unsafe { libc::clock_gettime(self.0, &mut ts) } == 0)
            .then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
}
