//! Sliding windows over the stats stream: "more than N deletes on one map
//! type (or caller) in W". Fed by every stats line; a rule fires when it
//! crosses its limit and re-arms once the window is back under it.

use crate::policy::{Check, Per, Policy, Rule};
use crate::protocol::{Op, Source, Stats};
use std::collections::{HashMap, VecDeque};

/// One firing: which rule, where, and how many deletes in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub rule: String,
    pub scope: String,
    pub target: String,
    pub deletes: u64,
    pub window_secs: u64,
}

struct Series {
    /// (ts ns, total deletes) — totals since the start, as stats carry them.
    points: VecDeque<(u64, u64)>,
    firing: bool,
}

pub struct Windows {
    rules: Vec<Rule>,
    series: HashMap<(usize, String, String), Series>,
    pub fired: Vec<Firing>,
}

impl Windows {
    pub fn new(policy: &Policy) -> Windows {
        Windows {
            rules: policy.window_rules().cloned().collect(),
            series: HashMap::new(),
            fired: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Feeds one stats line; returns the rules that fired on it.
    pub fn feed(&mut self, s: &Stats, source: Option<&Source>) -> Vec<Firing> {
        let mut new = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            let Check::MaxDeletesInWindow { limit, window, per } = &rule.check else {
                continue;
            };
            // Totals per (target, scope) in this snapshot.
            let mut totals: HashMap<(String, String), u64> = HashMap::new();
            for r in s.rows.iter().filter(|r| r.op == Op::Delete) {
                let map_type = r.map_type.as_deref().unwrap_or("?");
                let func = r.caller.as_ref().map_or("?", |c| c.func.as_str());
                if !rule.covers(map_type, func) {
                    continue;
                }
                let scope = match per {
                    Per::MapType => map_type.to_string(),
                    Per::Caller => func.to_string(),
                };
                let target = match source {
                    Some(Source {
                        namespace: Some(ns),
                        pod: Some(p),
                        container: Some(c),
                        ..
                    }) => {
                        format!("{ns}/{p}/{c}")
                    }
                    Some(src) => format!("{}/{} pid {}", src.context, src.node, r.pid),
                    None => format!("pid {}", r.pid),
                };
                *totals.entry((target, scope)).or_default() += r.count;
            }
            let window_ns = window.as_nanos() as u64;
            for ((target, scope), total) in totals {
                let series = self
                    .series
                    .entry((ri, target.clone(), scope.clone()))
                    .or_insert(Series {
                        points: VecDeque::from([(
                            s.ts.saturating_sub(s.interval_ms * 1_000_000),
                            0,
                        )]),
                        firing: false,
                    });
                series.points.push_back((s.ts, total));
                // Keep one point at or before the window's start as the base.
                while series.points.len() > 2 && series.points[1].0 + window_ns <= s.ts {
                    series.points.pop_front();
                }
                let base = series.points.front().map_or(0, |p| p.1);
                let in_window = total.saturating_sub(base);
                if in_window > *limit && !series.firing {
                    series.firing = true;
                    new.push(Firing {
                        rule: rule.name.clone(),
                        scope,
                        target,
                        deletes: in_window,
                        window_secs: window.as_secs(),
                    });
                } else if in_window <= *limit {
                    series.firing = false;
                }
            }
        }
        self.fired.extend(new.iter().cloned());
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Frame, StatsRow};

    fn stats(ts_s: u64, deletes: u64) -> Stats {
        Stats {
            ts: ts_s * 1_000_000_000,
            interval_ms: 1000,
            rows: vec![StatsRow {
                pid: 7,
                map_type: Some("map[string]int".into()),
                caller: Some(Frame {
                    func: "main.gc".into(),
                    file: "x.go".into(),
                    line: 1,
                }),
                via: None,
                op: Op::Delete,
                count: deletes,
                rate: 0.0,
                map_len: 0,
                pc: None,
                estimate: Default::default(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn fires_once_per_crossing_and_rearms() {
        let policy =
            Policy::from_yaml("rules:\n- {name: storm, max_deletes: 100, window: 5s}").unwrap();
        let mut w = Windows::new(&policy);
        // 30 deletes/s: 150 in any 5 s window once 4 s have passed.
        let mut fired_at = Vec::new();
        for t in 1..=8 {
            if !w.feed(&stats(t, 30 * t), None).is_empty() {
                fired_at.push(t);
            }
        }
        assert_eq!(fired_at, [4], "{:?}", w.fired);
        assert_eq!(w.fired[0].deletes, 120);
        assert_eq!(w.fired[0].scope, "map[string]int");
        // Quiet for a window: re-armed; then another burst fires again.
        for t in 9..=15 {
            assert!(w.feed(&stats(t, 240), None).is_empty());
        }
        assert_eq!(w.feed(&stats(16, 400), None).len(), 1);
    }
}
