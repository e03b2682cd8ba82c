//! `--max-overhead PCT`: each process's probes live only in short windows,
//! opened so that what the probes cost it stays at or under PCT % of its own
//! CPU time.
//!
//! The cost of a hit is the trap (calibrated on this machine at start, see
//! `bare::trap_cost_ns`) plus the program's run (the kernel's BPF statistics
//! when they can be had; else an allowance). Every hit is counted per
//! process in the kernel, gated or not, so the cost is known between any two
//! reads. A token bucket holds the budget: PCT % of the process's own CPU
//! flows in, the probes' cost flows out; a window opens on a jittered period
//! when there is credit for a minimal one, and shuts when its predicted span
//! is up or the credit is gone. A window's edges are exact (the gate in the
//! process's slot), however long the attach and detach around it take.

use super::probes::{Probes, SlotCount};
use crate::estimate::{Scale, Windows};
use crate::protocol::Sampling;
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Mean spacing of windows: many windows per interval is what bounds the
/// estimate's variance; each costs an attach and a detach.
const PERIOD: Duration = Duration::from_millis(50);
/// The shortest window worth an attach.
const MIN_WINDOW: Duration = Duration::from_micros(500);
/// Credit, in hits, before the first window of a process: an idle process
/// is not charged a window it cannot afford.
const FIRST_WINDOW_HITS: f64 = 20.0;
/// How often counters are read between deadlines, and while a window is live.
pub const STEP: Duration = Duration::from_millis(5);
const LIVE_STEP: Duration = Duration::from_millis(1);
/// Run-to-run drift of a hit's cost, and the dearer first hits after an
/// attach, relative: the tests' service estimates came out 5-20% low with
/// the calibration alone.
const DRIFT: f64 = 0.25;
/// The least share of a core a live window is assumed to cost when sized.
const RATE_FLOOR: f64 = 0.25;
/// Credit never exceeds this much of the budget: an idle process does not
/// save up for a burst.
const CREDIT_SPAN_NS: f64 = 200e6;
/// Program time per hit when the kernel does not measure it: a third over
/// the dearest watch program measured (BENCHMARKS.md, ~250 ns here),
/// relative to that machine's trap.
const PROGRAM_SHARE_OF_TRAP: f64 = 0.55;

/// How the per-hit cost is known.
pub struct Cost {
    pub trap_ns: f64,
    /// The calibration's own spread, relative.
    trap_spread: f64,
    /// Held while the run lasts: keeps the kernel's BPF run-time statistics on.
    _stats: Option<OwnedFd>,
    measured: bool,
    last_run_ns: Option<u64>,
}

impl Cost {
    /// Calibrates the trap and turns on the kernel's program statistics when
    /// allowed (they are already on when `kernel.bpf_stats_enabled` is 1).
    pub fn calibrate() -> Cost {
        let (trap_ns, trap_spread) = match super::bare::trap_cost_ns() {
            Ok(t) => (t.ns, t.spread),
            Err(e) => {
                eprintln!("warning: --max-overhead: could not calibrate a uprobe hit ({e:#}); assuming 1500 ns");
                (1500.0, 0.5)
            }
        };
        let on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        let stats = if on {
            None
        } else {
            // SAFETY: a plain syscall wrapper; a non-negative result is an fd we own.
            let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let measured = on || stats.is_some();
        Cost {
            trap_ns,
            trap_spread,
            _stats: stats,
            measured,
            last_run_ns: None,
        }
    }

    pub fn describe(&self) -> String {
        if self.measured {
            format!(
                "a uprobe hit costs {:.0} ns here (calibrated) plus the program's run, measured by the kernel",
                self.trap_ns
            )
        } else {
            format!(
                "a uprobe hit costs {:.0} ns here (calibrated) plus an allowance of {:.0} ns for the program (the kernel's BPF statistics need CAP_SYS_ADMIN)",
                self.trap_ns,
                self.trap_ns * PROGRAM_SHARE_OF_TRAP
            )
        }
    }

    /// How far off the cost of one hit may be, relative (one standard
    /// deviation): the calibration's spread, what moves from run to run and
    /// at a window's edges (DRIFT), and the program's share when it is not
    /// measured.
    pub fn relative_error(&self) -> f64 {
        let program = if self.measured {
            0.02
        } else {
            0.3 * PROGRAM_SHARE_OF_TRAP
        };
        (self.trap_spread.powi(2) + DRIFT.powi(2) + program.powi(2)).sqrt()
    }

    /// Program ns since the last call, or None when not measured.
    fn program_ns(&mut self, probes: &Probes<'_>) -> Option<f64> {
        if !self.measured {
            return None;
        }
        let now = probes.program_run_ns()?;
        let before = self.last_run_ns.replace(now)?;
        Some(now.saturating_sub(before) as f64)
    }
}

/// The CPU clock of another process: its threads' run time, in ns.
struct CpuClock(libc::clockid_t);

impl CpuClock {
    fn of(pid: u32) -> Option<CpuClock> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: writes one clockid_t.
        (unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) } == 0)
            .then_some(CpuClock(id))
    }

    fn read(&self) -> Option<u64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a clock id from clock_getcpuclockid and a timespec to write.
        (unsafe { libc::clock_gettime(self.0, &mut ts) } == 0)
            .then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
}

/// One live window of a process.
struct Open {
    until: Instant,
    since: Instant,
    own_ns: f64,
    cost_ns: f64,
    ops_at_open: [u64; 3],
}

/// One process under the bound.
struct Duty {
    clock: CpuClock,
    last_cpu: u64,
    last: SlotCount,
    tokens: f64,
    /// Probe ns per wall ns while a window is live: how long the next one
    /// can be. Unknown at first: then one minimal window is the guess.
    cost_rate: Option<f64>,
    /// Own CPU ns per wall ns, smoothed: sizes the credit cap.
    own_rate: f64,
    open: Option<Open>,
    next_open: Instant,
    last_step: Instant,
    run: Span,
    interval: Span,
    ended: bool,
}

/// Own CPU, probe cost and windows over a span of time.
#[derive(Default, Clone)]
struct Span {
    own_ns: f64,
    cost_ns: f64,
    windows: Windows,
}

/// What one process's counts scale by, for the run and the last interval.
#[derive(Debug, Clone, Copy)]
pub struct Scales {
    pub run: Scale,
    pub interval: Scale,
    /// Operations seen since it was attached, by op.
    pub observed: [u64; 3],
}

pub struct Budget {
    share: f64,
    pct: f64,
    cost: Cost,
    /// Program ns per hit: the kernel's measure when there is one, else the
    /// allowance.
    program_per_hit: f64,
    procs: HashMap<u32, Duty>,
}

impl Duty {
    /// Reads the process's CPU clock and hit counters and moves the books:
    /// own CPU and probe cost into the run, the interval and a live window,
    /// and the credit. None when the process can no longer be read.
    fn refresh(&mut self, pid: u32, probes: &Probes<'_>, share: f64, per_hit: f64) -> Option<()> {
        let cpu = self.clock.read()?;
        let count = probes.slot_count(pid)?;
        let cost = (count.hits - self.last.hits) as f64 * per_hit;
        let now = Instant::now();
        let wall = now.duration_since(self.last_step).as_nanos() as f64;
        let own = (cpu.saturating_sub(self.last_cpu) as f64 - cost).max(0.0);
        self.last_cpu = cpu;
        self.last = count;
        self.last_step = now;
        if wall > 0.0 {
            let a = (wall / 1e9).min(1.0);
            self.own_rate = self.own_rate * (1.0 - a) + a * own / wall;
        }
        let cap = share * (self.own_rate * CREDIT_SPAN_NS).max(own);
        self.tokens = (self.tokens + share * own - cost).min(cap);
        for span in [&mut self.run, &mut self.interval] {
            span.own_ns += own;
            span.cost_ns += cost;
        }
        if let Some(o) = self.open.as_mut() {
            o.own_ns += own;
            o.cost_ns += cost;
        }
        Some(())
    }

    /// Ends a live window: what it saw goes into the run and the interval.
    /// The books were refreshed just before, with the gate already shut.
    fn shut(&mut self) {
        let Some(o) = self.open.take() else {
            return;
        };
        let seen: u64 = self
            .last
            .ops
            .iter()
            .zip(o.ops_at_open.iter())
            .map(|(a, b)| a - b)
            .sum();
        for span in [&mut self.run, &mut self.interval] {
            span.windows.add(o.own_ns, seen, o.cost_ns);
        }
    }

    fn begin(&mut self, until: Instant) {
        let now = Instant::now();
        self.open = Some(Open {
            until,
            since: now,
            own_ns: 0.0,
            cost_ns: 0.0,
            ops_at_open: self.last.ops,
        });
    }
}

impl Budget {
    pub fn new(pct: f64) -> Budget {
        let cost = Cost::calibrate();
        eprintln!("max-overhead {pct}%: {}", cost.describe());
        Budget {
            // Aimed a fifth under the bound: a window is cut at the next
            // read after its credit runs out, never exactly at it.
            share: 0.8 * pct / 100.0,
            pct,
            program_per_hit: cost.trap_ns * PROGRAM_SHARE_OF_TRAP,
            cost,
            procs: HashMap::new(),
        }
    }

    fn per_hit(&self) -> f64 {
        self.cost.trap_ns + self.program_per_hit
    }

    /// Puts a just-attached process under the bound (its probes disarmed).
    pub fn add(&mut self, pid: u32, probes: &Probes<'_>) {
        let Some(clock) = CpuClock::of(pid) else {
            return;
        };
        let now = Instant::now();
        self.procs.insert(
            pid,
            Duty {
                last_cpu: clock.read().unwrap_or(0),
                clock,
                last: probes.slot_count(pid).unwrap_or_default(),
                tokens: 0.0,
                cost_rate: None,
                own_rate: 0.0,
                open: None,
                next_open: now,
                last_step: now,
                run: Span::default(),
                interval: Span::default(),
                ended: false,
            },
        );
    }

    /// When the agent must next look: the soonest window edge, at most STEP away.
    pub fn next_deadline(&self) -> Instant {
        let mut at = Instant::now() + STEP;
        for d in self.procs.values().filter(|d| !d.ended) {
            let edge = match &d.open {
                Some(o) => o.until.min(Instant::now() + LIVE_STEP),
                None => d.next_open,
            };
            at = at.min(edge);
        }
        at
    }

    /// Reads every process's counters, moves its credit, and opens or shuts
    /// windows that are due.
    pub fn step(&mut self, probes: &mut Probes<'_>) {
        let before: u64 = self.procs.values().map(|d| d.last.hits).sum();
        let pids: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, d)| !d.ended)
            .map(|(&p, _)| p)
            .collect();
        let (share, per_hit) = (self.share, self.per_hit());
        for &pid in &pids {
            let d = self.procs.get_mut(&pid).expect("listed above");
            d.refresh(pid, probes, share, per_hit);
        }
        // The program's measured time is one number for every process: its
        // mean per hit prices the next reads.
        let hits = self.procs.values().map(|d| d.last.hits).sum::<u64>() - before;
        if let Some(ns) = self.cost.program_ns(probes) {
            if hits >= 1000 {
                self.program_per_hit = 0.5 * self.program_per_hit + 0.5 * ns / hits as f64;
            }
        }
        for pid in pids {
            self.decide(pid, probes);
        }
    }

    fn decide(&mut self, pid: u32, probes: &mut Probes<'_>) {
        let (share, per_hit) = (self.share, self.per_hit());
        let d = self
            .procs
            .get_mut(&pid)
            .expect("stepped processes are known");
        let now = Instant::now();
        match &d.open {
            Some(o) if now >= o.until || d.tokens <= 0.0 => {
                let live = now.duration_since(o.since).as_nanos().max(1) as f64;
                let rate = o.cost_ns / live;
                d.cost_rate = Some(d.cost_rate.map_or(rate, |r| 0.5 * r + 0.5 * rate));
                // Credit left and a cheap process: the window goes on.
                if d.tokens > 0.0 && now >= o.until {
                    let span = d.tokens / d.cost_rate.unwrap_or(1.0).max(RATE_FLOOR);
                    if span >= PERIOD.as_nanos() as f64 {
                        if let Some(o) = d.open.as_mut() {
                            o.until = now + PERIOD;
                        }
                        return;
                    }
                }
                let _ = probes.open(pid, false);
                d.refresh(pid, probes, share, per_hit);
                d.shut();
                probes.disarm(pid);
                d.next_open = now + jittered(PERIOD);
            }
            None if now >= d.next_open => {
                d.next_open = now + jittered(PERIOD);
                let rate = d.cost_rate.unwrap_or(0.0);
                let min_cost = rate * MIN_WINDOW.as_nanos() as f64;
                // The first window is minimal, opened once there is credit
                // for a few hits: it is how the cost rate is learnt.
                let needed = match d.cost_rate {
                    Some(_) => min_cost.max(1.0),
                    None => FIRST_WINDOW_HITS * per_hit,
                };
                if d.tokens < needed {
                    return;
                }
                // The rate may jump while the window is live (an idle process
                // starts a burst): it is sized as if its probes could take
                // at least RATE_FLOOR of a core.
                let span = match d.cost_rate {
                    Some(r) => {
                        Duration::from_nanos((d.tokens / r.max(RATE_FLOOR)).min(1e12) as u64)
                            .clamp(MIN_WINDOW, PERIOD)
                    }
                    None => MIN_WINDOW,
                };
                if let Err(e) = probes.arm(pid) {
                    eprintln!("warning: pid {pid}: opening an observation window: {e:#}");
                    return;
                }
                // The attach takes milliseconds the window must not count:
                // the books start again right before the gate opens.
                d.refresh(pid, probes, share, per_hit);
                if probes.open(pid, true).is_err() {
                    probes.disarm(pid);
                    return;
                }
                d.begin(Instant::now() + span);
            }
            _ => {}
        }
    }

    /// Closes the books of a process about to be detached (it ended, or
    /// the run is over).
    pub fn end(&mut self, pid: u32, probes: &mut Probes<'_>) {
        let (share, per_hit) = (self.share, self.per_hit());
        if let Some(d) = self.procs.get_mut(&pid).filter(|d| !d.ended) {
            let _ = probes.open(pid, false);
            d.refresh(pid, probes, share, per_hit);
            d.shut();
            probes.disarm(pid);
            d.ended = true;
        }
    }

    /// Ends the interval: each process's scales, and what `stats` says of it.
    /// A window live across the boundary is split in two.
    pub fn interval(&mut self, probes: &Probes<'_>) -> (HashMap<u32, Scales>, Vec<Sampling>) {
        let (share, per_hit) = (self.share, self.per_hit());
        let mut scales = HashMap::new();
        let mut sampling = Vec::new();
        for (&pid, d) in self.procs.iter_mut() {
            if !d.ended {
                d.refresh(pid, probes, share, per_hit);
            }
            if let Some(until) = d.open.as_ref().map(|o| o.until) {
                d.shut();
                d.begin(until);
            }
            let err = self.cost.relative_error();
            let run = d.run.windows.scale(d.run.own_ns, err);
            // An interval with no window of its own is read at the run's rate.
            let interval = if d.interval.windows.count() == 0 && d.interval.own_ns > 0.0 {
                run
            } else {
                d.interval.windows.scale(d.interval.own_ns, err)
            };
            scales.insert(
                pid,
                Scales {
                    run,
                    interval,
                    observed: d.last.ops,
                },
            );
            {
                sampling.push(Sampling {
                    pid,
                    observed_fraction: run.fraction,
                    windows: d.run.windows.count(),
                    cpu_ms: d.run.own_ns / 1e6,
                    probe_cpu_ms: d.run.cost_ns / 1e6,
                    overhead_pct: if d.interval.own_ns > 0.0 {
                        100.0 * d.interval.cost_ns / d.interval.own_ns
                    } else {
                        0.0
                    },
                    max_overhead_pct: self.pct,
                });
            }
            d.interval = Span::default();
        }
        sampling.sort_by_key(|s| s.pid);
        (scales, sampling)
    }
}

/// `p` × a uniform factor in [0.5, 1.5): windows on a fixed period would
/// alias with a workload's own period.
fn jittered(p: Duration) -> Duration {
    p.mul_f64(0.5 + fastrand::f64())
}
