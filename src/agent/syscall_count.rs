//! Another process's read and write system calls, the second yardstick
//! `--max-overhead` can weigh its windows by.
//!
//! The process's CPU in a window is read less what its probes are thought to
//! have cost, and where its own map operations come as often as a hit costs
//! (net/http: one every ~2 µs of its CPU), that guess is most of the answer.
//! A service's reads and writes come with its requests, as its map
//! operations do, and no probe adds or takes one: counting them needs no
//! guess at all. The kernel keeps the counts per process (`syscr`, `syscw`
//! in /proc/PID/io), exact, for every read- and write-family call whether it
//! moved bytes or not.

use std::fs::File;
use std::os::unix::fs::FileExt;

pub struct SyscallCount(File);

impl SyscallCount {
    pub fn of(pid: u32) -> Option<SyscallCount> {
        File::open(format!("/proc/{pid}/io")).ok().map(SyscallCount)
    }

    /// Read and write calls so far; None once the process is gone.
    pub fn read(&self) -> Option<u64> {
        let mut buf = [0u8; 512];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        parse(std::str::from_utf8(&buf[..n]).ok()?)
    }
}

fn parse(io: &str) -> Option<u64> {
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some(field("syscr:")? + field("syscw:")?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_and_writes_are_added() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 7\nsyscw: 5\nread_bytes: 0\n";
        assert_eq!(super::parse(io), Some(12));
        assert_eq!(super::parse("rchar: 1\n"), None);
    }

    #[test]
    fn this_process_counts_its_own_calls() {
        let me = super::SyscallCount::of(std::process::id()).unwrap();
        let before = me.read().unwrap();
        for _ in 0..10 {
            let _ = std::fs::read("/proc/self/stat");
        }
        assert!(me.read().unwrap() >= before + 10);
    }
}
