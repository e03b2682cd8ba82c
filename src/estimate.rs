//! Counts from part of the operations, under `--max-overhead`.
//!
//! The probes of a process are live only in short windows. What a window
//! sees is exact; what the rest of the time did is inferred by a ratio
//! estimator. Its auxiliary variable is the process's own CPU time (a
//! process that does no work does no map operations, so a burst of
//! operations comes with a burst of CPU the windows can be weighed against)
//! or, where they scale tighter, its read and write system calls (a
//! service's come with its requests, and unlike CPU no probe's cost has to
//! be taken out of them). Its variance comes from how much the windows
//! disagree, and it is never narrower than if each operation had been
//! observed independently with the same probability.

use crate::protocol::{Interval, Op, OpCounts, OpIntervals};

/// z of a two-sided 95% interval.
const Z95: f64 = 1.96;

/// What one window saw: the operations its program observed, and every hit
/// of its probes from the agent's first look to its last. The program
/// stops observing when the window's credit is spent and the agent switches
/// the probes off ~150 µs later (measured); the process's CPU and calls are
/// read at the agent's looks, so they are weighed against the hits, which
/// span the same time, and the operations observed are the hits' share.
/// Weighing them against the observed operations read a service 15% low.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub ops: u64,
    pub hits: u64,
}

/// The windows of one process, kept as the sums the estimator needs.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    n: u64,
    /// Hits in the windows (y), with its square.
    sy: f64,
    syy: f64,
    /// Operations observed: `sy` less the hits past a window's credit.
    seen: f64,
    /// Own CPU ns in windows.
    cpu: Yardstick,
    /// Read and write calls in windows.
    calls: Yardstick,
    /// What the probes are estimated to have cost in the windows: own CPU
    /// there is the window's CPU less this, so an error in the cost of a
    /// hit moves every window's own CPU.
    probe_ns: f64,
    /// Operations seen in windows whose probes took 0.8 core or more: a
    /// burst of map operations, whose own CPU is lost in the probes' cost.
    /// Told by the hits' cost over wall time, both exact, not by the
    /// process's CPU clock, which is a tick late (cpu_clock.rs) where a
    /// window lasts a fraction of one.
    swamped_ops: f64,
}

/// One auxiliary variable's sums over the windows: x, x², and x·y.
#[derive(Debug, Clone, Copy, Default)]
struct Yardstick {
    sx: f64,
    sxx: f64,
    sxy: f64,
}

impl Yardstick {
    fn add(&mut self, x: f64, y: f64) {
        self.sx += x;
        self.sxx += x * x;
        self.sxy += x * y;
    }
}

/// A window whose probes cost this much of a core or more is swamped: its
/// own CPU is a quarter of the probes' or less. Not lower: net/http's own
/// map operations come every ~2 µs of its CPU, so a busy service's windows
/// are 40-60% probe (measured), and the cost's error is already priced in
/// `cost_share`; at 0.5 they read as swamped and its estimates as unknown.
const SWAMPED_CORES: f64 = 0.8;
/// Past this share of the operations seen in swamped windows, an estimate
/// is open above: what they stand for cannot be scaled from the CPU they
/// came with, nor from calls a burst of map operations does not make.
const SWAMPED_SHARE: f64 = 0.02;
/// Calls are a yardstick only with this many windows, and this many calls
/// seen in them: a handful of calls says nothing of the ratio.
const MIN_CALL_WINDOWS: u64 = 10;
const MIN_CALLS_SEEN: f64 = 100.0;

/// What a process's windows were weighed against, to scale what they saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaledBy {
    /// Its own CPU time: every process has it, and the probes' cost must be
    /// taken out of it.
    Cpu,
    /// Its read and write system calls: a service's come with its
    /// requests, and no probe adds one.
    Calls,
}

impl ScaledBy {
    pub fn name(self) -> &'static str {
        match self {
            ScaledBy::Cpu => "cpu",
            ScaledBy::Calls => "syscalls",
        }
    }
}

/// What the spans being scaled held in all, windows and dark spans alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Own CPU ns (probe cost taken out).
    pub own_ns: f64,
    /// Read and write calls; None where they cannot be counted.
    pub calls: Option<f64>,
    /// Whether the probes were off for any of the span.
    pub dark: bool,
}

impl Windows {
    /// One window: its own CPU, the operations it saw, what its probes cost,
    /// how long it was open, and the read and write calls made in it.
    pub fn add(&mut self, own_ns: f64, seen: Seen, probe_ns: f64, wall_ns: f64, calls: f64) {
        // Not floored: a window whose own CPU reads below 0 (its cost
        // over-priced) evens out one that reads above.
        let y = seen.hits.max(seen.ops) as f64;
        self.seen += seen.ops as f64;
        self.probe_ns += probe_ns;
        if probe_ns > SWAMPED_CORES * wall_ns {
            self.swamped_ops += y;
        }
        self.n += 1;
        self.sy += y;
        self.syy += y * y;
        self.cpu.add(own_ns, y);
        self.calls.add(calls, y);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// How the observed operations scale to all of them, given what the
    /// whole span held and the relative error of the cost of one hit: by
    /// calls where they can be counted and scale tighter, else by CPU.
    pub fn scale(&self, total: Totals, cost_error: f64) -> Scale {
        if !total.dark {
            // Nothing to infer: live the whole time.
            return Scale::EXACT;
        }
        let by_cpu = self.by_cpu(total.own_ns, cost_error);
        if self.swamped_ops > SWAMPED_SHARE * self.sy {
            // Neither yardstick holds a burst of nothing but map operations.
            return by_cpu;
        }
        match total.calls.and_then(|c| self.by_calls(c)) {
            Some(by_calls)
                if !by_cpu.bounded()
                    || by_calls.relative_variance(self.seen)
                        < by_cpu.relative_variance(self.seen) =>
            {
                by_calls
            }
            _ => by_cpu,
        }
    }

    fn by_cpu(&self, own_total_ns: f64, cost_error: f64) -> Scale {
        let sx = self.cpu.sx;
        if sx >= own_total_ns {
            // The books say the dark spans did no work, but their CPU is read
            // a tick late and less the probes' estimated cost: a burst there
            // may have been booked as nothing. What was seen is all that is
            // known.
            return Scale {
                fraction: (self.seen / (self.seen + 1.0)).min(0.999),
                design_effect: 1.0,
                cost_share: f64::INFINITY,
                by: ScaledBy::Cpu,
            };
        }
        // Where the probes cost far more than the process's own work in its
        // windows (a loop of nothing but map operations), a small error in
        // the cost of a hit is a large one in the windows' own CPU.
        let swamped = self.swamped_ops > SWAMPED_SHARE * self.sy;
        let cost_share = if sx > 0.0 && !swamped {
            cost_error * self.probe_ns / sx
        } else {
            f64::INFINITY
        };
        let (fraction, design_effect) = self.ratio(&self.cpu, own_total_ns);
        Scale {
            fraction,
            design_effect,
            cost_share,
            by: ScaledBy::Cpu,
        }
    }

    /// By calls, where enough were seen in enough windows and the dark
    /// spans made some: calls all in windows say nothing of what the rest
    /// of the time did.
    fn by_calls(&self, calls_total: f64) -> Option<Scale> {
        let seen = self.calls.sx;
        if self.n < MIN_CALL_WINDOWS || seen < MIN_CALLS_SEEN || seen >= calls_total {
            return None;
        }
        let (fraction, design_effect) = self.ratio(&self.calls, calls_total);
        Some(Scale {
            fraction,
            design_effect,
            cost_share: 0.0,
            by: ScaledBy::Calls,
        })
    }

    /// The share of the operations observed: the windows' share of `total`
    /// by this yardstick, times the share of their hits that were observed.
    /// And the ratio estimator's variance over that of independent thinning
    /// (≥ 1), from how much the windows' ratios disagree.
    fn ratio(&self, x: &Yardstick, total: f64) -> (f64, f64) {
        let (held, design_effect) = self.held(x, total);
        let observed = if self.sy > 0.0 {
            (self.seen / self.sy).min(1.0)
        } else {
            1.0
        };
        (held * observed, design_effect)
    }

    fn held(&self, x: &Yardstick, total: f64) -> (f64, f64) {
        let fraction = x.sx / total;
        let mut design_effect = 1.0;
        if self.n >= 3 && self.sy > 0.0 && x.sx > 0.0 {
            let n = self.n as f64;
            let r = self.sy / x.sx;
            let residual = (self.syy - 2.0 * r * x.sxy + r * r * x.sxx).max(0.0) / (n - 1.0);
            let mean_x = x.sx / n;
            let ratio_var = total * total * (1.0 - fraction) * residual / (n * mean_x * mean_x);
            let estimate = self.sy / fraction;
            let thinning_var = estimate * (1.0 - fraction) / fraction;
            if thinning_var > 0.0 {
                design_effect = (ratio_var / thinning_var).max(1.0);
            }
        }
        (fraction, design_effect)
    }
}

/// Observed counts → estimates, for one process over one span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Share of the process's own CPU time its probes were live for.
    pub fraction: f64,
    /// Variance over that of independent thinning (≥ 1).
    pub design_effect: f64,
    /// Relative error of the estimate that the uncertain cost of a hit
    /// brings (one standard deviation).
    pub cost_share: f64,
    pub by: ScaledBy,
}

/// Past this relative error from the cost of a hit, an estimate is not
/// bounded at all: its interval is open above.
const UNBOUNDED_COST_SHARE: f64 = 0.5;

impl Scale {
    pub const EXACT: Scale = Scale {
        fraction: 1.0,
        design_effect: 1.0,
        cost_share: 0.0,
        by: ScaledBy::Cpu,
    };

    /// The estimate's variance over its square, for `observed` seen.
    fn relative_variance(&self, observed: f64) -> f64 {
        if self.fraction <= 0.0 || observed <= 0.0 {
            return f64::INFINITY;
        }
        self.design_effect * (1.0 - self.fraction) / (self.fraction * observed)
            + self.cost_share.powi(2)
    }

    /// Whether estimates at this scale can be bounded (see `cost_share`).
    pub fn bounded(&self) -> bool {
        self.fraction > 0.0 && self.cost_share < UNBOUNDED_COST_SHARE
    }

    /// The share observed, where it is known: a swamped or mis-booked span
    /// has a `fraction` (even below 0, the probes' cost over-priced) that
    /// means nothing, and saying so beats printing it.
    pub fn known_fraction(&self) -> Option<f64> {
        self.bounded().then(|| self.fraction.min(1.0))
    }

    /// The estimate of a count of which `observed` were seen, its variance,
    /// and its 95% interval.
    pub fn estimate(&self, observed: u64) -> Estimate {
        if self.fraction >= 1.0 {
            return Estimate::exact(observed);
        }
        if !self.bounded() {
            // What was seen is all that is known: a floor, not a scaled
            // number whose factor means nothing (seen: 2,095,016 printed
            // for a loop that did some 70 million).
            return Estimate {
                observed,
                value: observed as f64,
                variance: f64::INFINITY,
            };
        }
        let f = self.fraction;
        let y = observed as f64;
        // Zero seen still bounds the truth: the rule of three's 95% upper
        // bound on a thinned count, carried as a variance.
        let y_for_var = if observed == 0 {
            (3.0 / Z95).powi(2)
        } else {
            y
        };
        let value = if self.fraction > 0.0 { y / f } else { y };
        Estimate {
            observed,
            value,
            variance: self.design_effect * y_for_var * (1.0 - f) / (f * f)
                + (value * self.cost_share).powi(2),
        }
    }
}

/// One estimated count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub observed: u64,
    pub value: f64,
    pub variance: f64,
}

impl Default for Estimate {
    fn default() -> Self {
        Estimate::exact(0)
    }
}

impl Estimate {
    pub fn exact(n: u64) -> Estimate {
        Estimate {
            observed: n,
            value: n as f64,
            variance: 0.0,
        }
    }

    pub fn count(&self) -> u64 {
        self.value.round() as u64
    }

    pub fn add(&mut self, o: &Estimate) {
        self.observed += o.observed;
        self.value += o.value;
        self.variance += o.variance;
    }

    /// 95%, never below what was seen; unbounded above when nothing could be
    /// observed.
    pub fn interval(&self) -> Interval {
        let sd = self.variance.sqrt();
        let lo = (self.value - Z95 * sd).max(self.observed as f64).round() as u64;
        let hi = sd
            .is_finite()
            .then(|| (self.value + Z95 * sd).round() as u64);
        (lo.min(self.count()), hi.map(|h| h.max(self.count())))
    }

    /// Recovers an estimate from its wire form, for adding estimates of
    /// different agents: the variance from the interval's upper half.
    pub fn from_wire(observed: u64, count: u64, interval: Interval) -> Estimate {
        let variance = match interval.1 {
            Some(hi) => ((hi.saturating_sub(count)) as f64 / Z95).powi(2),
            None => f64::INFINITY,
        };
        Estimate {
            observed,
            value: count as f64,
            variance,
        }
    }
}

/// Per-op estimates as the protocol carries them.
#[derive(Debug, Clone, Copy)]
pub struct OpEstimates(pub [Estimate; 3]);

impl Default for OpEstimates {
    fn default() -> Self {
        OpEstimates([Estimate::exact(0); 3])
    }
}

impl OpEstimates {
    pub fn get_mut(&mut self, op: Op) -> &mut Estimate {
        &mut self.0[op as usize]
    }

    pub fn add(&mut self, o: &OpEstimates) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            a.add(b);
        }
    }

    pub fn counts(&self) -> OpCounts {
        let mut c = OpCounts::default();
        for op in Op::ALL {
            c.add(op, self.0[op as usize].count());
        }
        c
    }

    pub fn observed(&self) -> OpCounts {
        let mut c = OpCounts::default();
        for op in Op::ALL {
            c.add(op, self.0[op as usize].observed);
        }
        c
    }

    pub fn intervals(&self) -> OpIntervals {
        OpIntervals {
            delete: self.0[Op::Delete as usize].interval(),
            assign: self.0[Op::Assign as usize].interval(),
            clear: self.0[Op::Clear as usize].interval(),
        }
    }

    pub fn from_wire(counts: &OpCounts, observed: &OpCounts, iv: &OpIntervals) -> OpEstimates {
        let mut e = OpEstimates::default();
        for op in Op::ALL {
            e.0[op as usize] = Estimate::from_wire(observed.get(op), counts.get(op), iv.get(op));
        }
        e
    }

    /// What a line says of these estimates besides the counts.
    pub fn estimation(
        &self,
        sampling: Vec<crate::protocol::Sampling>,
    ) -> crate::protocol::Estimation {
        crate::protocol::Estimation {
            estimated: true,
            observed_fraction: Some(self.observed_fraction()),
            ops_observed: Some(self.observed()),
            ops_interval: Some(self.intervals()),
            sampling,
        }
    }

    /// Operations seen ÷ operations estimated: the share of all of them that
    /// was observed; None when an estimate is open above (its count is only
    /// what was seen, so the share would read as everything).
    pub fn observed_fraction(&self) -> Option<f64> {
        if self.0.iter().any(|e| !e.variance.is_finite()) {
            return None;
        }
        let seen: u64 = self.0.iter().map(|e| e.observed).sum();
        let all: f64 = self.0.iter().map(|e| e.value).sum();
        Some(if all <= 0.0 {
            1.0
        } else {
            (seen as f64 / all).min(1.0)
        })
    }
}

/// Several lines' totals added up (agents of a cluster run, the summaries
/// of an audit): exact ones as they are, estimated ones with their
/// variances added. The result is estimated when any part is.
pub fn combine<'a>(
    parts: impl IntoIterator<Item = (&'a OpCounts, &'a crate::protocol::Estimation)>,
) -> (OpCounts, crate::protocol::Estimation) {
    let mut total = OpEstimates::default();
    let mut sampling = Vec::new();
    let mut estimated = false;
    for (ops, e) in parts {
        let part = match (&e.ops_observed, &e.ops_interval) {
            (Some(seen), Some(iv)) if e.estimated => OpEstimates::from_wire(ops, seen, iv),
            _ => {
                let mut exact = OpEstimates::default();
                for op in Op::ALL {
                    *exact.get_mut(op) = Estimate::exact(ops.get(op));
                }
                exact
            }
        };
        estimated |= e.estimated;
        sampling.extend(e.sampling.iter().cloned());
        total.add(&part);
    }
    if !estimated {
        return (total.counts(), crate::protocol::Estimation::default());
    }
    (total.counts(), total.estimation(sampling))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window whose every hit was observed.
    fn seen(ops: u64) -> Seen {
        Seen { ops, hits: ops }
    }

    /// Totals with no calls counted: scaled by CPU alone.
    fn cpu(own_ns: f64, dark: bool) -> Totals {
        Totals {
            own_ns,
            calls: None,
            dark,
        }
    }

    #[test]
    fn steady_windows_scale_by_the_cpu_share() {
        let mut w = Windows::default();
        for _ in 0..20 {
            w.add(1_000.0, seen(10), 100.0, 1e6, 0.0);
        }
        let s = w.scale(cpu(2_000_000.0, true), 0.0);
        assert!((s.fraction - 0.01).abs() < 1e-12);
        assert_eq!(s.design_effect, 1.0);
        let e = s.estimate(200);
        assert_eq!(e.count(), 20_000);
        let (lo, hi) = e.interval();
        assert!(lo < 20_000 && hi.unwrap() > 20_000);
        // Independent thinning: sd = sqrt(20000 * 0.99 / 0.01) ≈ 1407.
        assert!((hi.unwrap() as f64 - 20_000.0 - 1.96 * 1407.1).abs() < 5.0);
    }

    #[test]
    fn windows_that_disagree_widen_the_interval() {
        let mut calm = Windows::default();
        let mut bursty = Windows::default();
        for i in 0..20 {
            calm.add(1_000.0, seen(10), 100.0, 1e6, 0.0);
            bursty.add(
                1_000.0,
                seen(if i % 2 == 0 { 0 } else { 20 }),
                100.0,
                1e6,
                0.0,
            );
        }
        let (c, b) = (
            calm.scale(cpu(2e6, true), 0.0),
            bursty.scale(cpu(2e6, true), 0.0),
        );
        assert!(b.design_effect > 5.0, "{b:?}");
        assert!(b.estimate(200).variance > c.estimate(200).variance);
    }

    #[test]
    fn windows_the_probes_dominate_are_not_bounded() {
        // 20 windows of 10 ops whose own CPU (100 ns) is a tenth of what the
        // probes cost there: a 5% error in the cost is 50% in the estimate.
        let mut w = Windows::default();
        for _ in 0..20 {
            w.add(100.0, seen(10), 1_000.0, 1e6, 0.0);
        }
        let s = w.scale(cpu(1e6, true), 0.05);
        assert!(!s.bounded(), "{s:?}");
        assert_eq!(s.estimate(200).interval().1, None);
        let mut fine = Windows::default();
        for _ in 0..20 {
            fine.add(10_000.0, seen(10), 1_000.0, 1e6, 0.0);
        }
        assert!(fine.scale(cpu(1e6, true), 0.05).bounded());
    }

    #[test]
    fn a_swamped_phase_opens_the_estimate_even_beside_calm_ones() {
        // A calm service's windows (own CPU well above the probes') and a
        // burst's few windows where the probes are nearly all of the CPU:
        // the burst's many operations cannot be scaled from its lost own
        // CPU, however well the calm windows pin the rest.
        let mut w = Windows::default();
        for _ in 0..200 {
            w.add(50_000.0, seen(10), 30_000.0, 1e6, 0.0);
        }
        assert!(w.scale(cpu(1e9, true), 0.25).bounded());
        // A window that saw a few hits while the process slept, its own CPU
        // read as nothing (the clock's lag): not swamped.
        w.add(0.0, seen(2), 6_000.0, 1e6, 0.0);
        assert!(w.scale(cpu(1e9, true), 0.25).bounded());
        for _ in 0..5 {
            w.add(10_000.0, seen(500), 900_000.0, 1e6, 0.0);
        }
        let s = w.scale(cpu(1e9, true), 0.25);
        assert!(!s.bounded(), "{s:?}");
        assert_eq!(s.estimate(4_500).interval().1, None);
        assert_eq!(
            s.known_fraction(),
            None,
            "a share that means nothing is not given"
        );
    }

    #[test]
    fn calls_weigh_the_windows_where_they_scale_tighter() {
        // A service: 40 windows of 20 operations and 40 calls each, their CPU
        // half probe; a fiftieth of its calls and CPU fell in windows.
        let mut w = Windows::default();
        for i in 0..40 {
            let wobble = if i % 2 == 0 { 0.8 } else { 1.2 };
            w.add(40_000.0 * wobble, seen(20), 40_000.0, 1e5, 40.0);
        }
        let totals = Totals {
            own_ns: 50.0 * 40.0 * 40_000.0,
            calls: Some(50.0 * 40.0 * 40.0),
            dark: true,
        };
        let s = w.scale(totals, 0.3);
        assert_eq!(s.by, ScaledBy::Calls, "{s:?}");
        assert!((s.fraction - 0.02).abs() < 1e-9, "{s:?}");
        let (lo, hi) = s.estimate(800).interval();
        assert!(lo > 36_000 && hi.unwrap() < 44_000, "{lo} {hi:?}");
        // The same windows where calls cannot be counted: by CPU, whose
        // uncertain probe cost is most of each window's.
        let by_cpu = w.scale(
            Totals {
                calls: None,
                ..totals
            },
            0.3,
        );
        assert_eq!(by_cpu.by, ScaledBy::Cpu);
        assert!(by_cpu.estimate(800).variance > 10.0 * s.estimate(800).variance);
        // Calls all made inside the windows say nothing of the dark spans.
        let inside = w.scale(
            Totals {
                calls: Some(1600.0),
                ..totals
            },
            0.3,
        );
        assert_eq!(inside.by, ScaledBy::Cpu);
    }

    #[test]
    fn a_burst_is_open_above_whatever_the_calls_say() {
        let mut w = Windows::default();
        for _ in 0..40 {
            w.add(40_000.0, seen(20), 40_000.0, 1e5, 40.0);
        }
        for _ in 0..5 {
            w.add(10_000.0, seen(500), 900_000.0, 1e6, 0.0);
        }
        let s = w.scale(
            Totals {
                own_ns: 1e9,
                calls: Some(1e5),
                dark: true,
            },
            0.3,
        );
        assert!(!s.bounded(), "{s:?}");
    }

    #[test]
    fn hits_past_a_windows_credit_are_weighed_too() {
        // Each window's credit paid for 15 of its 20 hits: the last 5 came
        // before the agent switched it off, with their CPU and calls.
        let mut w = Windows::default();
        for _ in 0..40 {
            w.add(40_000.0, Seen { ops: 15, hits: 20 }, 40_000.0, 1e5, 40.0);
        }
        let s = w.scale(
            Totals {
                own_ns: 1e9,
                calls: Some(80_000.0),
                dark: true,
            },
            0.3,
        );
        // 1/50 of the calls in windows, 3/4 of their hits observed.
        assert!((s.fraction - 0.02 * 0.75).abs() < 1e-9, "{s:?}");
        assert_eq!(s.estimate(600).count(), 40_000);
    }

    #[test]
    fn own_cpu_read_below_zero_is_no_share_at_all() {
        // A loop of nothing but deletes: each window's probes cost 1.3 ms
        // and its own work 13 µs, so a cost of a hit priced 2% high books
        // the windows' own CPU below zero (seen: a share of -0.0007).
        let mut w = Windows::default();
        for _ in 0..40 {
            w.add(-13_000.0, seen(490), 1_300_000.0, 1.32e6, 0.0);
        }
        let s = w.scale(cpu(3.8e9, true), 0.25);
        assert_eq!(s.known_fraction(), None, "{s:?}");
        let mut ops = OpEstimates::default();
        *ops.get_mut(Op::Delete) = s.estimate(19_600);
        assert_eq!(
            ops.observed_fraction(),
            None,
            "not 1.0: the rest is not known"
        );
        let e = ops.estimation(vec![]);
        let json = serde_json::to_value(&e).unwrap();
        assert!(json["observed_fraction"].is_null() && json.get("observed_fraction").is_some());
        let back: crate::protocol::Estimation = serde_json::from_value(json).unwrap();
        assert_eq!(back.observed_fraction, Some(None), "null survives the wire");
        let mut fine = OpEstimates::default();
        *fine.get_mut(Op::Delete) = Scale {
            fraction: 0.25,
            design_effect: 1.0,
            cost_share: 0.0,
            by: ScaledBy::Cpu,
        }
        .estimate(100);
        assert_eq!(fine.observed_fraction(), Some(0.25));
    }

    #[test]
    fn live_the_whole_time_is_exact() {
        let mut w = Windows::default();
        w.add(5e6, seen(7), 10.0, 1e7, 0.0);
        let e = w.scale(cpu(5e6, false), 0.05).estimate(7);
        assert_eq!((e.count(), e.interval()), (7, (7, Some(7))));
        // Dark spans whose books say they did nothing: nothing bounds what
        // they did (their CPU may have been booked short).
        let e = w.scale(cpu(5e6, true), 0.05).estimate(7);
        assert_eq!(e.interval(), (7, None));
    }

    #[test]
    fn nothing_seen_still_has_an_upper_bound_and_never_observed_has_none() {
        let e = Scale {
            fraction: 0.1,
            design_effect: 1.0,
            cost_share: 0.0,
            by: ScaledBy::Cpu,
        }
        .estimate(0);
        let (lo, hi) = e.interval();
        assert_eq!(lo, 0);
        assert!(hi.unwrap() >= 25 && hi.unwrap() <= 30, "{hi:?}");
        let never = Scale {
            fraction: 0.0,
            design_effect: 1.0,
            cost_share: 0.0,
            by: ScaledBy::Cpu,
        }
        .estimate(0);
        assert_eq!(never.interval(), (0, None));
    }

    #[test]
    fn sums_add_variances_and_survive_the_wire() {
        let s = Scale {
            fraction: 0.05,
            design_effect: 2.0,
            cost_share: 0.0,
            by: ScaledBy::Cpu,
        };
        let (a, b) = (s.estimate(100), s.estimate(300));
        let mut sum = a;
        sum.add(&b);
        let back = Estimate::from_wire(a.observed, a.count(), a.interval());
        assert!((back.variance - a.variance).abs() / a.variance < 0.01);
        assert_eq!(sum.count(), 8000);
        assert!(sum.interval().0 >= 400);
    }
}
