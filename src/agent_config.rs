//! What an agent is asked to probe and report. One plain config whether the
//! agent runs in this process (`--pid`, `-- CMD`) or in a pod, where it
//! travels as the `agent` subcommand's flags ([`AgentConfig::to_argv`]).
//! Built from the command line in `config`; cross-platform, because the
//! cluster side builds agent pods on every OS.

use crate::protocol::Op;
use regex::Regex;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Sorted, no duplicates.
    pub ops: Vec<Op>,
    pub map_type: Option<Regex>,
    pub key: Option<Regex>,
    pub sample_every: u32,
    /// 0: unlimited.
    pub max_events_per_sec: u64,
    pub duration: Option<Duration>,
    pub stack: bool,
    pub max_key_bytes: u32,
    /// Entry + RET probes: writers in flight and delete latency.
    pub track_writers: bool,
    /// Aggregates instead of one line per operation.
    pub watch: Option<WatchConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    pub interval: Duration,
    /// Hot keys shown per map.
    pub top: usize,
    /// Maps whose hot keys are named; the rest are counted and folded.
    pub top_maps: u32,
    /// Keys the kernel's hot-key table holds; 0: no hot keys.
    pub hot_keys_size: u32,
    /// Rows per caller pc rather than per caller line.
    pub by_pc: bool,
    /// `--max-overhead`: probe only in windows that keep the probes' cost at
    /// or under this share of each process's CPU; counts become estimates.
    pub max_overhead: Option<Percent>,
}

/// A percentage from 0.01 to 100, in hundredths so that configs compare
/// exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(u32);

impl Percent {
    /// `2`, `2%`, `0.5`.
    pub fn parse(s: &str) -> Result<Percent, String> {
        let bad = || format!("expected a percentage from 0.01 to 100, like 2 or 2%, got '{s}'");
        let t = s.trim();
        let n: f64 = t
            .strip_suffix('%')
            .unwrap_or(t)
            .trim()
            .parse()
            .map_err(|_| bad())?;
        if !n.is_finite() || !(0.01..=100.0).contains(&n) {
            return Err(bad());
        }
        Ok(Percent((n * 100.0).round() as u32))
    }

    pub fn value(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.value())
    }
}

/// Hot keys keep this many bytes of each key.
const WATCH_KEY_BYTES: u32 = 64;

impl AgentConfig {
    /// `watch` and `delete-audit`: aggregates, no per-event filters.
    pub fn for_watch(
        ops: &[Op],
        duration: Option<Duration>,
        track_writers: bool,
        watch: WatchConfig,
    ) -> AgentConfig {
        AgentConfig {
            ops: normalized(ops),
            map_type: None,
            key: None,
            sample_every: 1,
            max_events_per_sec: 0,
            duration,
            stack: false,
            max_key_bytes: WATCH_KEY_BYTES,
            track_writers,
            watch: Some(watch),
        }
    }

    /// The same run, ending `left` from now (an agent that joins late).
    pub fn ending_in(&self, left: Duration) -> AgentConfig {
        AgentConfig {
            duration: self.duration.map(|_| left),
            ..self.clone()
        }
    }

    /// The `agent` subcommand's flags that say this config (after the
    /// container ids), for agent pods.
    pub fn to_argv(&self) -> Vec<String> {
        let ops: Vec<&str> = self.ops.iter().map(|o| o.as_str()).collect();
        let mut args = vec![
            "--ops".to_string(),
            ops.join(","),
            "--sample".into(),
            self.sample_every.to_string(),
            "--max-key-bytes".into(),
            self.max_key_bytes.to_string(),
        ];
        let mut flag = |name: &str, value: String| args.extend([name.to_string(), value]);
        if let Some(re) = &self.map_type {
            flag("--map-type", re.as_str().into());
        }
        if let Some(re) = &self.key {
            flag("--key", re.as_str().into());
        }
        if let Some(d) = self.duration {
            flag("--duration", millis(d));
        }
        if self.max_events_per_sec > 0 {
            flag("--max-events-per-sec", self.max_events_per_sec.to_string());
        }
        if let Some(w) = &self.watch {
            args.push("--watch".into());
            args.extend(["--interval".into(), millis(w.interval)]);
            args.extend(["--top".into(), w.top.to_string()]);
            args.extend(["--top-maps".into(), w.top_maps.to_string()]);
            args.extend(["--hot-keys-size".into(), w.hot_keys_size.to_string()]);
            if w.by_pc {
                args.push("--by-pc".into());
            }
            if let Some(p) = w.max_overhead {
                args.extend(["--max-overhead".into(), p.to_string()]);
            }
        }
        if self.track_writers {
            args.push("--track-writers".into());
        }
        if self.stack {
            args.push("--stack".into());
        }
        args
    }
}

/// The probes to place: each operation once, in a fixed order.
pub fn normalized(ops: &[Op]) -> Vec<Op> {
    let mut ops = ops.to_vec();
    ops.sort();
    ops.dedup();
    ops
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}
