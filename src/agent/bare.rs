//! `bench-bare-probe -- CMD` (hidden): the benchmark's baseline. Attaches a
//! count-only program (bpf/bare.bpf.c) at exactly the probe points mapguard
//! uses, runs CMD to its end, and reports the hit count.

use super::launch::{self, HeldChild};
use crate::gobin::GoBinary;
use crate::protocol::Op;
use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::UprobeMultiOpts;
use std::mem::MaybeUninit;
use std::time::Duration;

mod skel {
    #![allow(clippy::all, dead_code, non_camel_case_types, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/bare.skel.rs"));
}

fn load(
    storage: &mut MaybeUninit<libbpf_rs::OpenObject>,
    user_reads: u32,
) -> Result<skel::BareSkel<'_>> {
    let mut open = skel::BareSkelBuilder::default()
        .open(storage)
        .context("opening the bare BPF object")?;
    open.maps
        .rodata_data
        .as_deref_mut()
        .ok_or_else(|| anyhow!("the bare BPF object has no read-only data section"))?
        .user_reads = user_reads;
    open.load().context("loading the bare BPF object")
}

pub struct BareRun {
    pub hits: u64,
    pub exit_status: i32,
}

/// `user_reads`: words of the process's stack each hit reads (0 to 3).
pub fn run(argv: &[String], ops: &[Op], user_reads: u32) -> Result<BareRun> {
    let cmd = argv
        .first()
        .ok_or_else(|| anyhow!("no command given after --"))?;
    let path = launch::resolve_command(cmd)?;
    let bin = GoBinary::open(&path)?;
    super::check_permitted()?;
    let offsets: Vec<usize> = bin
        .probe_points()
        .iter()
        .filter(|p| ops.contains(&p.op))
        .map(|p| p.file_offset as usize)
        .collect();
    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage, user_reads)?;
    let mut child = HeldChild::spawn(&path, argv, None)?;
    let opts = UprobeMultiOpts {
        offsets,
        ..Default::default()
    };
    let _link = skel
        .progs
        .count_hit
        .attach_uprobe_multi_with_opts(child.pid as i32, &path, "", opts)
        .map_err(|e| anyhow!("attaching the bare probe: {e}"))?;
    child.release()?;
    child.resume();
    let status = loop {
        if let Some(status) = child.try_wait() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let hits = super::probes::percpu_sum(&skel.maps.hits, 0);
    Ok(BareRun {
        hits,
        exit_status: status,
    })
}

// A function of the agent's own whose first instruction is the one mapguard
// probes in Go (`push rbp`, which the kernel emulates): a hit on it costs
// what a hit on a map function costs, less the program's run.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.mapguard_calibration_site,\"ax\",@progbits",
    ".globl mapguard_calibration_site",
    ".type mapguard_calibration_site,@function",
    ".p2align 5",
    "mapguard_calibration_site:",
    "push rbp",
    "mov rbp, rsp",
    "pop rbp",
    "ret",
    ".size mapguard_calibration_site, .-mapguard_calibration_site",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn mapguard_calibration_site();
}

/// Calls of the calibration site per batch, and batches per side.
const CALLS: u32 = 20_000;
const BATCHES: usize = 7;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Bytes written between calls of a cold batch: more than the caches keep.
const COLD_BYTES: usize = 1 << 20;

/// Per call, with the caches cold (a megabyte written between calls, as a
/// process that works between map operations does) or hot.
#[cfg(target_arch = "x86_64")]
fn batch_ns(mut cold: Option<&mut [u8]>) -> f64 {
    let calls = if cold.is_some() { CALLS / 20 } else { CALLS };
    let t0 = thread_cpu_ns();
    let mut cooling = 0;
    for i in 0..calls {
        if let Some(buf) = cold.as_deref_mut() {
            let c0 = thread_cpu_ns();
            for b in buf.iter_mut().step_by(64) {
                *b = b.wrapping_add(i as u8);
            }
            std::hint::black_box(&buf);
            cooling += thread_cpu_ns() - c0;
        }
        // SAFETY: the site only pushes and pops rbp and returns.
        unsafe { mapguard_calibration_site() };
    }
    (thread_cpu_ns() - t0 - cooling) as f64 / f64::from(calls)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Where the calibration site is in the agent's executable file.
#[cfg(target_arch = "x86_64")]
fn site_in_file() -> Result<(std::path::PathBuf, usize)> {
    let addr = mapguard_calibration_site as *const () as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off), Some(_dev), Some(_inode), Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi), Ok(off)) = (
            usize::from_str_radix(lo, 16),
            usize::from_str_radix(hi, 16),
            usize::from_str_radix(off, 16),
        ) else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            return Ok((path.into(), addr - lo + off));
        }
    }
    Err(anyhow!("the calibration site is in no file mapping"))
}

/// What one uprobe hit costs here, beyond the program's own run.
#[derive(Debug, Clone, Copy)]
pub struct Trap {
    pub ns: f64,
    /// Spread of the batches, relative to `ns` (one standard deviation).
    pub spread: f64,
}

/// The CPU one uprobe hit costs the process hit on this machine, beyond the
/// program's own run: the trap, the emulated instruction and the way back.
/// Measured on the agent's own thread (thread CPU time, so preemption does
/// not count), from interleaved batches with and without the probe.
#[cfg(target_arch = "x86_64")]
pub fn trap_cost_ns() -> Result<Trap> {
    let (path, offset) = site_in_file()?;
    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage, 0)?;
    let mut bare = Vec::with_capacity(BATCHES);
    let mut hit = Vec::with_capacity(BATCHES);
    let mut cold_bare = Vec::with_capacity(BATCHES);
    let mut cold_hit = Vec::with_capacity(BATCHES);
    let mut buf = vec![0u8; COLD_BYTES];
    for _ in 0..BATCHES {
        bare.push(batch_ns(None));
        cold_bare.push(batch_ns(Some(&mut buf)));
        let opts = UprobeMultiOpts {
            offsets: vec![offset],
            ..Default::default()
        };
        let link = skel
            .progs
            .count_hit
            .attach_uprobe_multi_with_opts(std::process::id() as i32, &path, "", opts)
            .map_err(|e| anyhow!("attaching the calibration probe: {e}"))?;
        hit.push(batch_ns(None));
        cold_hit.push(batch_ns(Some(&mut buf)));
        drop(link);
    }
    let hits = super::probes::percpu_sum(&skel.maps.hits, 0);
    let wanted = u64::from(CALLS + CALLS / 20) * BATCHES as u64;
    if hits < wanted {
        bail!("the calibration probe fired {hits} times of {wanted}");
    }
    let diff = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(h, b)| h - b).collect() };
    let (hot, cold) = (diff(&hit, &bare), diff(&cold_hit, &cold_bare));
    // A hit between other work (a service) finds the trap's code and data
    // out of cache; one in a loop of map operations finds them hot. The
    // middle is the cost, half the difference its uncertainty, beside the
    // batches' own spread.
    let (h, c) = (median(hot.clone()), median(cold));
    let ns = ((h + c) / 2.0).max(1.0);
    let n = hot.len() as f64;
    let mean = hot.iter().sum::<f64>() / n;
    let sd = (hot.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let spread = ((sd / ns).powi(2) + ((c - h).abs() / 2.0 / ns).powi(2)).sqrt();
    Ok(Trap { ns, spread })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn trap_cost_ns() -> Result<Trap> {
    bail!("calibration is implemented for x86_64 only")
}
