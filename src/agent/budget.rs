//! `--max-overhead PCT`: each process's probes live only in short windows,
//! opened so that what the probes cost it stays at or under PCT % of its own
//! CPU time.
//!
//! The cost of a hit is the trap (calibrated on this machine at start, see
//! `bare::trap_cost_ns`) plus the program's run, which the program times
//! itself per process. Every hit is counted per process in the kernel, gated
//! or not, so the cost is known between any two reads. A token bucket holds
//! the budget: PCT % of the process's own CPU flows in, the probes' cost
//! flows out, and what an interval does not spend is not the next one's; a
//! window opens on a jittered period when there is credit for a minimal one,
//! and shuts when its predicted span is up or the credit is gone.
//!
//! Windows open and shut by writing the probed instructions' byte in the
//! process (breakpoints.rs), in microseconds; where the kernel refuses that,
//! by attaching and detaching the probes, in tens of milliseconds. Either
//! way a window's edges are exact: the gate in the process's slot.

use super::cpu_clock::CpuClock;
use super::probes::{Probes, SlotCount, WindowSwitch};
use super::syscall_count::SyscallCount;
use crate::estimate::{Scale, Seen, Totals, Windows};
use crate::protocol::Sampling;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Mean spacing of windows: many windows per interval is what bounds the
/// estimate's variance. Switched by text a window costs microseconds to open
/// and shut; by links an attach and a detach, tens of milliseconds.
const PERIOD: Duration = Duration::from_millis(10);
const LINK_PERIOD: Duration = Duration::from_millis(50);
/// The shortest window: how late a window is cut (the agent's poll waking
/// in whole milliseconds, and not being scheduled at once) is small beside it.
const MIN_WINDOW: Duration = Duration::from_millis(1);
/// Credit, in hits, below which no window opens: the first one, before
/// the process's rate is known, and any after.
const MIN_WINDOW_HITS: f64 = 20.0;
/// The longest the agent sleeps with processes under the bound. It wakes
/// only for a window's edges and when a process's credit will pay for one:
/// each wakeup costs tens of µs of CPU, and on a small machine much of it
/// lands on the target's cores, where the books cannot see it. Inside a
/// window nothing needs a look: its program shuts it once the hits its
/// credit pays for are spent, and wakes the agent to switch the probes off.
const LONGEST_SLEEP: Duration = Duration::from_millis(100);
/// How far a hit's cost in the target drifts from the calibration, relative:
/// cold caches in a service, the target's own code evicted by the trap, a
/// loaded machine. Measured here on a service-like process, the cost that
/// would have made the estimate exact was 0.8x to 1.3x the one used.
const DRIFT: f64 = 0.25;
/// The least share of a core a live window is assumed to cost when sized.
const RATE_FLOOR: f64 = 0.25;
/// How far back `cpu_rate` looks.
const CPU_RATE_SPAN_NS: f64 = 50e6;
/// A hit's program time before the process's first timed hits: half the
/// trap, about what the dearest watch program took here when cold.
const PROGRAM_SHARE_OF_TRAP: f64 = 0.5;

/// What a hit costs beyond its program, which the program times itself
/// per process (see `slot_count` in the BPF program).
pub struct Cost {
    pub trap_ns: f64,
    /// The calibration's own spread, relative.
    trap_spread: f64,
}

impl Cost {
    pub fn calibrate() -> Cost {
        let (trap_ns, trap_spread) = match super::bare::trap_cost_ns() {
            Ok(t) => (t.ns, t.spread),
            Err(e) => {
                eprintln!("warning: --max-overhead: could not calibrate a uprobe hit ({e:#}); assuming 1500 ns");
                (1500.0, 0.5)
            }
        };
        Cost {
            trap_ns,
            trap_spread,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "a uprobe hit costs {:.0} ns here (calibrated) plus the program's run, which it times itself",
            self.trap_ns
        )
    }

    /// How far off the cost of one hit may be, relative (one standard
    /// deviation): the calibration's spread, and what moves from run to run
    /// and between processes (DRIFT).
    pub fn relative_error(&self) -> f64 {
        (self.trap_spread.powi(2) + DRIFT.powi(2)).sqrt()
    }
}

/// One live window of a process.
struct Open {
    until: Instant,
    since: Instant,
    /// Hits before it opened, and the hits its credit pays for.
    hits_at_open: u64,
    allowance: u64,
    /// Hits before it first opened (`hits_at_open` moves when a window is
    /// extended with new credit).
    hits_at_begin: u64,
    own_ns: f64,
    cost_ns: f64,
    calls: f64,
    ops_at_open: [u64; 3],
}

/// One process under the bound.
struct Duty {
    clock: CpuClock,
    last_cpu: u64,
    /// Its read and write calls, where /proc/PID/io can be read.
    syscalls: Option<SyscallCount>,
    last_calls: u64,
    last: SlotCount,
    tokens: f64,
    /// Probe ns per wall ns while a window is live: how long the next one
    /// can be. Unknown at first: then one minimal window is the guess.
    cost_rate: Option<f64>,
    /// All its CPU (own and probes) per wall ns, over the last tens of ms.
    cpu_rate: f64,
    open: Option<Open>,
    next_open: Instant,
    last_step: Instant,
    run: Span,
    interval: Span,
    ended: bool,
    /// How its windows are switched, as last seen while it was traced.
    switch: WindowSwitch,
    /// Program ns per hit, as its latest timed hits took.
    prog_per_hit: f64,
}

/// Own CPU, probe cost and windows over a span of time.
#[derive(Clone)]
struct Span {
    own_ns: f64,
    cost_ns: f64,
    /// Read and write calls; None once a read of them failed.
    calls: Option<f64>,
    windows: Windows,
    /// Wall ns with no window open.
    dark_ns: f64,
}

impl Span {
    fn new(calls: bool) -> Span {
        Span {
            own_ns: 0.0,
            cost_ns: 0.0,
            calls: calls.then_some(0.0),
            windows: Windows::default(),
            dark_ns: 0.0,
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            own_ns: self.own_ns,
            calls: self.calls,
            dark: self.dark_ns > 0.0,
        }
    }
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
    procs: HashMap<u32, Duty>,
}

impl Duty {
    /// Reads the process's CPU clock and hit counters and moves the books:
    /// own CPU and probe cost into the run, the interval and a live window,
    /// and the credit. None when the process can no longer be read.
    /// `calls`: whether to read the process's calls too. Only a window's
    /// edges and an interval's end need them (what a read brings is booked
    /// where the books are at that read), so the look that only moves the
    /// credit before a decision skips the dearer /proc read.
    fn refresh(
        &mut self,
        pid: u32,
        probes: &Probes<'_>,
        share: f64,
        trap: f64,
        calls: bool,
    ) -> Option<()> {
        let cpu = self.clock.read()?;
        let count = probes.slot_count(pid)?;
        let hits = (count.hits - self.last.hits) as f64;
        let (prog_ns, runs) = (
            (count.prog_ns - self.last.prog_ns) as f64,
            count.prog_runs - self.last.prog_runs,
        );
        // Runs preempted mid-way were not timed: they cost what the others did.
        if runs > 0 {
            self.prog_per_hit = prog_ns / runs as f64;
        }
        let cost = hits * (trap + self.prog_per_hit);
        let now = Instant::now();
        let wall = now.duration_since(self.last_step).as_nanos() as f64;
        // Not floored at 0: the process's clock lags (cpu_clock.rs), and a
        // read that charges hits whose CPU the next read brings is evened
        // out by that read.
        let own = cpu.saturating_sub(self.last_cpu) as f64 - cost;
        self.last_cpu = cpu;
        let read = if calls {
            self.syscalls.as_ref().map(SyscallCount::read)
        } else {
            None
        };
        let calls = match read {
            _ if self.syscalls.is_none() => None,
            // Not read this time: the next read books them.
            None => Some(0.0),
            Some(Some(n)) => {
                let d = n.saturating_sub(self.last_calls) as f64;
                self.last_calls = n;
                Some(d)
            }
            // Unreadable now: weighed by CPU alone from here on.
            Some(None) => {
                self.syscalls = None;
                None
            }
        };
        self.last = count;
        self.last_step = now;
        if wall > 0.0 {
            let b = (wall / CPU_RATE_SPAN_NS).min(1.0);
            self.cpu_rate = self.cpu_rate * (1.0 - b) + b * (own + cost) / wall;
        }
        // No cap: credit lasts to the end of its interval (see `interval`),
        // so a nearly idle process can still save up for one window.
        self.tokens += share * own - cost;
        let dark = if self.open.is_none() { wall } else { 0.0 };
        for span in [&mut self.run, &mut self.interval] {
            span.own_ns += own;
            span.cost_ns += cost;
            span.dark_ns += dark;
            span.calls = span.calls.zip(calls).map(|(a, b)| a + b);
        }
        if let Some(o) = self.open.as_mut() {
            o.own_ns += own;
            o.cost_ns += cost;
            o.calls += calls.unwrap_or(0.0);
        }
        Some(())
    }

    /// Mean spacing of its windows.
    fn period(&self) -> Duration {
        match self.switch {
            WindowSwitch::Text => PERIOD,
            WindowSwitch::Link => LINK_PERIOD,
        }
    }

    /// Shuts a live window: gate, books, probes off.
    fn close(&mut self, pid: u32, probes: &mut Probes<'_>, share: f64, trap: f64) {
        let _ = probes.open(pid, None);
        self.refresh(pid, probes, share, trap, true);
        self.shut();
        probes.disarm(pid);
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
        let hits = self.last.hits - o.hits_at_begin;
        let wall = o.since.elapsed().as_nanos() as f64;
        for span in [&mut self.run, &mut self.interval] {
            span.windows
                .add(o.own_ns, Seen { ops: seen, hits }, o.cost_ns, wall, o.calls);
        }
    }

    fn begin(&mut self, until: Instant, allowance: u64) {
        let now = Instant::now();
        self.open = Some(Open {
            until,
            since: now,
            hits_at_open: self.last.hits,
            allowance,
            hits_at_begin: self.last.hits,
            own_ns: 0.0,
            cost_ns: 0.0,
            calls: 0.0,
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
            cost,
            procs: HashMap::new(),
        }
    }

    /// Puts a just-attached process under the bound (its probes disarmed).
    pub fn add(&mut self, pid: u32, probes: &Probes<'_>) {
        let Some(clock) = CpuClock::of(pid) else {
            return;
        };
        let now = Instant::now();
        let syscalls = SyscallCount::of(pid);
        let last_calls = syscalls.as_ref().and_then(SyscallCount::read);
        let calls = last_calls.is_some();
        self.procs.insert(
            pid,
            Duty {
                last_cpu: clock.read().unwrap_or(0),
                clock,
                syscalls: syscalls.filter(|_| calls),
                last_calls: last_calls.unwrap_or(0),
                last: probes.slot_count(pid).unwrap_or_default(),
                tokens: 0.0,
                cost_rate: None,
                cpu_rate: 0.0,
                open: None,
                next_open: now,
                last_step: now,
                run: Span::new(calls),
                interval: Span::new(calls),
                ended: false,
                switch: probes.window_switch(pid),
                prog_per_hit: self.cost.trap_ns * PROGRAM_SHARE_OF_TRAP,
            },
        );
    }

    /// When the agent must next look: the soonest window edge, at most
    /// LONGEST_SLEEP away.
    pub fn next_deadline(&self) -> Instant {
        let mut at = Instant::now() + LONGEST_SLEEP;
        for d in self.procs.values().filter(|d| !d.ended) {
            let edge = match &d.open {
                Some(o) => o.until,
                None => d.next_open,
            };
            at = at.min(edge);
        }
        at
    }

    /// Reads every process's counters, moves its credit, and opens or shuts
    /// windows that are due.
    pub fn step(&mut self, probes: &mut Probes<'_>) {
        let pids: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, d)| !d.ended)
            .map(|(&p, _)| p)
            .collect();
        let (share, trap) = (self.share, self.cost.trap_ns);
        for &pid in &pids {
            let d = self.procs.get_mut(&pid).expect("listed above");
            if d.open.is_none() {
                probes.settle(pid);
            }
            d.switch = probes.window_switch(pid);
            d.refresh(pid, probes, share, trap, false);
        }
        for pid in pids {
            self.decide(pid, probes);
        }
    }

    fn decide(&mut self, pid: u32, probes: &mut Probes<'_>) {
        let (share, trap) = (self.share, self.cost.trap_ns);
        let d = self
            .procs
            .get_mut(&pid)
            .expect("stepped processes are known");
        let now = Instant::now();
        let period = d.period();
        let per_hit = trap + d.prog_per_hit;
        match &d.open {
            Some(o)
                if now >= o.until
                    || d.tokens <= 0.0
                    || d.last.hits - o.hits_at_open >= o.allowance =>
            {
                let live = now.duration_since(o.since).as_nanos() as f64;
                // A window shut right after it opened says little of the
                // rate, and a few hits over a microsecond would claim more
                // cores than the machine has, shutting out every window after.
                if live >= MIN_WINDOW.as_nanos() as f64 / 4.0 {
                    let rate = (o.cost_ns / live).min(cores());
                    d.cost_rate = Some(d.cost_rate.map_or(rate, |r| 0.5 * r + 0.5 * rate));
                }
                // Credit left and a cheap process: the window goes on, with
                // what its credit pays for now.
                if d.tokens > 0.0 && now >= o.until {
                    let span = d.tokens / d.cost_rate.unwrap_or(1.0).max(RATE_FLOOR);
                    let allowance = hits_for(d.tokens, per_hit);
                    if span >= period.as_nanos() as f64
                        && probes.open(pid, Some(allowance as u32)).is_ok()
                    {
                        let hits = d.last.hits;
                        if let Some(o) = d.open.as_mut() {
                            o.until = now + period;
                            o.hits_at_open = hits;
                            o.allowance = allowance;
                        }
                        return;
                    }
                }
                d.close(pid, probes, share, trap);
                d.next_open = now + jittered(period);
            }
            None if now >= d.next_open => {
                d.next_open = now + jittered(period);
                // A window's probes cannot cost more than the process burns in
                // all: a rate learnt in a burst does not shut out the calm
                // that follows it.
                let rate = d.cost_rate.map_or(0.0, |r| r.min(d.cpu_rate));
                let min_cost = rate * MIN_WINDOW.as_nanos() as f64;
                // Never for less than a few hits: a window costs what its
                // credit pays for plus the hits between its program shutting
                // it and the agent switching the probes off, which a burst
                // makes dear. The first, before the rate is known, is minimal.
                let needed = min_cost.max(MIN_WINDOW_HITS * per_hit);
                if d.tokens < needed {
                    // Not before the credit can pay, at the rate the process
                    // burns CPU now (all its own: no probe is live).
                    let accrual = share * d.cpu_rate;
                    let wait = if accrual > 0.0 {
                        Duration::from_nanos(((needed - d.tokens) / accrual).min(1e12) as u64)
                    } else {
                        LONGEST_SLEEP
                    };
                    d.next_open += wait.min(LONGEST_SLEEP);
                    return;
                }
                // The rate may jump while the window is live (an idle process
                // starts a burst): it is sized as if its probes could take
                // at least RATE_FLOOR of a core.
                let span = match d.cost_rate {
                    Some(_) => {
                        Duration::from_nanos((d.tokens / rate.max(RATE_FLOOR)).min(1e12) as u64)
                            .clamp(MIN_WINDOW, period)
                    }
                    None => MIN_WINDOW,
                };
                if let Err(e) = probes.arm(pid) {
                    eprintln!("warning: pid {pid}: opening an observation window: {e:#}");
                    return;
                }
                // Switching the probes on takes time (milliseconds by links)
                // the window must not count: the books start again right
                // before the gate opens.
                d.refresh(pid, probes, share, trap, true);
                let allowance = hits_for(d.tokens, per_hit);
                if probes.open(pid, Some(allowance as u32)).is_err() {
                    probes.disarm(pid);
                    return;
                }
                d.begin(Instant::now() + span, allowance);
            }
            _ => {}
        }
    }

    /// Closes the books of a process about to be detached (it ended, or
    /// the run is over).
    pub fn end(&mut self, pid: u32, probes: &mut Probes<'_>) {
        let (share, trap) = (self.share, self.cost.trap_ns);
        if let Some(d) = self.procs.get_mut(&pid).filter(|d| !d.ended) {
            d.close(pid, probes, share, trap);
            d.ended = true;
        }
    }

    /// Ends the interval: each process's scales, and what `stats` says of it.
    /// A window live at the boundary is shut: its credit would not outlive
    /// the interval anyway.
    pub fn interval(&mut self, probes: &mut Probes<'_>) -> (HashMap<u32, Scales>, Vec<Sampling>) {
        let (share, trap) = (self.share, self.cost.trap_ns);
        let mut scales = HashMap::new();
        let mut sampling = Vec::new();
        for (&pid, d) in self.procs.iter_mut() {
            if d.open.is_some() {
                d.close(pid, probes, share, trap);
                d.next_open = Instant::now() + jittered(d.period());
            } else if !d.ended {
                d.refresh(pid, probes, share, trap, true);
            }
            let err = self.cost.relative_error();
            let run = d.run.windows.scale(d.run.totals(), err);
            // An interval with no window of its own is read at the run's rate.
            let interval = if d.interval.windows.count() == 0 && d.interval.own_ns > 0.0 {
                run
            } else {
                d.interval.windows.scale(d.interval.totals(), err)
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
                    observed_fraction: run.known_fraction(),
                    scaled_by: run.by.name().into(),
                    windows: d.run.windows.count(),
                    cpu_ms: d.run.own_ns / 1e6,
                    probe_cpu_ms: d.run.cost_ns / 1e6,
                    overhead_pct: if d.interval.own_ns > 0.0 {
                        100.0 * d.interval.cost_ns / d.interval.own_ns
                    } else {
                        0.0
                    },
                    max_overhead_pct: self.pct,
                    window_switch: match d.switch {
                        WindowSwitch::Text => "text",
                        WindowSwitch::Link => "link",
                    }
                    .into(),
                });
            }
            d.interval = Span::new(d.syscalls.is_some());
            // The bound holds interval by interval: credit one did not spend
            // is not the next one's (a debt is: the run stays under too).
            d.tokens = d.tokens.min(0.0);
        }
        sampling.sort_by_key(|s| s.pid);
        (scales, sampling)
    }
}

/// The hits `credit` ns pay for at `per_hit` ns each; at least one, so an
/// open window sees something.
fn hits_for(credit: f64, per_hit: f64) -> u64 {
    (credit / per_hit.max(1.0)).clamp(1.0, u32::MAX as f64) as u64
}

/// The most CPU ns a process can burn per wall ns. Asked once: the standard
/// library reads the cgroup's files for it, a dozen calls each time.
fn cores() -> f64 {
    static CORES: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64))
}

/// `p` × a uniform factor in [0.5, 1.5): windows on a fixed period would
/// alias with a workload's own period.
fn jittered(p: Duration) -> Duration {
    p.mul_f64(0.5 + fastrand::f64())
}
