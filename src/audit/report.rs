//! The audit's memory: a sink that reads the watch-mode stream (local or
//! merged from agent pods) and keeps what the report needs.

use crate::protocol::{
    AuditFinding, AuditKeys, AuditRow, AuditTarget, Frame, KeyCount, Line, LineSink, Op, OpCounts,
    Report, Source, Stats, Summary,
};
use std::collections::{BTreeMap, HashMap};

/// (context, node, pid): a process, wherever it runs.
type ProcKey = (String, String, u32);

/// A caller's (function, file, line); all empty when the caller is unknown.
type Site = (String, String, u32);

#[derive(Default)]
struct Row {
    caller: Option<Frame>,
    counts: OpCounts,
    peak_delete_rate: f64,
    deletes_interval: Option<crate::protocol::Interval>,
}

#[derive(Default)]
pub struct Collector {
    targets: Vec<AuditTarget>,
    by_proc: HashMap<ProcKey, usize>,
    /// (target, map type, caller site) -> counts and peak. A site, not a
    /// function: the agent counts per line, and one function that deletes
    /// from two lines (or assigns on one and deletes on another) has a row
    /// for each, each with its own counts.
    rows: BTreeMap<(usize, Option<String>, Site), Row>,
    /// Peak deletes/s of a whole map type, and of a whole caller, per target.
    peak_by_map_type: HashMap<(usize, Option<String>), f64>,
    peak_by_caller: HashMap<(usize, String), f64>,
    /// The latest stats of each source (counts there are totals).
    latest: HashMap<(String, String), Stats>,
    concurrent: Vec<AuditFinding>,
    fatals: Vec<AuditFinding>,
    errors: Vec<AuditFinding>,
    summaries: HashMap<(String, String), Summary>,
    top: usize,
    /// A SIGINT or SIGTERM ended the run before its duration.
    stopped_early: bool,
}

fn key(source: Option<&Source>, pid: u32) -> ProcKey {
    match source {
        Some(s) => (s.context.clone(), s.node.clone(), pid),
        None => (String::new(), String::new(), pid),
    }
}

fn target_name(source: Option<&Source>, pid: u32) -> String {
    match source {
        Some(Source {
            namespace: Some(ns),
            pod: Some(pod),
            container: Some(c),
            ..
        }) => format!("{ns}/{pod}/{c}"),
        Some(s) => format!("{}/{} pid {pid}", s.context, s.node),
        None => format!("pid {pid}"),
    }
}

impl Collector {
    pub fn new(top: usize) -> Collector {
        Collector {
            top,
            ..Default::default()
        }
    }

    fn target(&mut self, source: Option<&Source>, pid: u32) -> usize {
        let k = key(source, pid);
        if let Some(&i) = self.by_proc.get(&k) {
            return i;
        }
        self.targets.push(AuditTarget {
            target: target_name(source, pid),
            pid: Some(pid),
            exe: None,
            go_version: None,
            probes: Vec::new(),
            audited: false,
        });
        self.by_proc.insert(k, self.targets.len() - 1);
        self.targets.len() - 1
    }

    fn name_of(&self, source: Option<&Source>, pid: u32) -> String {
        self.by_proc
            .get(&key(source, pid))
            .map(|&i| self.targets[i].target.clone())
            .unwrap_or_else(|| target_name(source, pid))
    }

    fn take(&mut self, line: &Line, source: Option<&Source>) {
        let src_key = source.map_or((String::new(), String::new()), |s| {
            (s.context.clone(), s.node.clone())
        });
        match line {
            Line::Attached(a) => {
                let i = self.target(source, a.pid);
                let t = &mut self.targets[i];
                t.exe = Some(a.exe.clone());
                t.go_version = Some(a.go_version.clone());
                t.probes = a.probes.clone();
                // An agent says `attached` only once every probe is live.
                t.audited = true;
            }
            Line::Stats(s) => {
                self.stats(s, source);
                self.latest.insert(src_key, s.clone());
            }
            Line::ConcurrentWrite(c) => self.concurrent.push(AuditFinding {
                target: Some(self.name_of(source, c.pid)),
                message: crate::protocol::concurrent_text(c),
            }),
            Line::Fatal(f) => self.fatals.push(AuditFinding {
                target: Some(self.name_of(source, f.pid)),
                message: crate::protocol::fatal_text(f),
            }),
            Line::Error(e) => self.errors.push(AuditFinding {
                target: source.and_then(|s| {
                    Some(format!(
                        "{}/{}/{}",
                        s.namespace.as_ref()?,
                        s.pod.as_ref()?,
                        s.container.as_ref()?
                    ))
                }),
                message: e.message.clone(),
            }),
            Line::Summary(s) => {
                self.summaries.insert(src_key, s.clone());
            }
            Line::Event(_)
            | Line::Detached(_)
            | Line::Report(_)
            | Line::Verdict(_)
            | Line::Check(_) => {}
        }
    }

    fn stats(&mut self, s: &Stats, source: Option<&Source>) {
        let mut by_type: HashMap<(usize, Option<String>), f64> = HashMap::new();
        let mut by_caller: HashMap<(usize, String), f64> = HashMap::new();
        for r in &s.rows {
            let t = self.target(source, r.pid);
            let func = r
                .caller
                .as_ref()
                .map_or("?".to_string(), |c| c.func.clone());
            let site = r
                .caller
                .as_ref()
                .map_or_else(Site::default, |c| (c.func.clone(), c.file.clone(), c.line));
            let row = self.rows.entry((t, r.map_type.clone(), site)).or_default();
            row.caller = r.caller.clone();
            // Counts are totals since the start: the latest is the count.
            match r.op {
                Op::Delete => {
                    row.counts.delete = r.count;
                    row.deletes_interval = r.estimate.count_interval;
                }
                Op::Assign => row.counts.assign = r.count,
                Op::Clear => row.counts.clear = r.count,
            }
            if r.op == Op::Delete {
                row.peak_delete_rate = row.peak_delete_rate.max(r.rate);
                *by_type.entry((t, r.map_type.clone())).or_default() += r.rate;
                *by_caller.entry((t, func)).or_default() += r.rate;
            }
        }
        for (k, rate) in by_type {
            let p = self.peak_by_map_type.entry(k).or_default();
            *p = p.max(rate);
        }
        for (k, rate) in by_caller {
            let p = self.peak_by_caller.entry(k).or_default();
            *p = p.max(rate);
        }
    }

    /// Peak deletes/s of a map type in a target (all callers together).
    pub fn peak_map_type(&self, target: &str, map_type: &Option<String>) -> f64 {
        self.peak_by(
            target,
            |&(t, ref m)| (t, m == map_type),
            &self.peak_by_map_type,
        )
    }

    /// Peak deletes/s of a caller function in a target (all map types together).
    pub fn peak_caller(&self, target: &str, func: &str) -> f64 {
        self.peak_by(target, |(t, f)| (*t, f == func), &self.peak_by_caller)
    }

    fn peak_by<K>(
        &self,
        target: &str,
        pick: impl Fn(&K) -> (usize, bool),
        map: &HashMap<K, f64>,
    ) -> f64 {
        map.iter()
            .filter(|(k, _)| {
                let (t, ok) = pick(k);
                ok && self.targets[t].target == target
            })
            .map(|(_, &v)| v)
            .fold(0.0, f64::max)
    }

    /// What was seen in `duration_ms` of the `requested` audit.
    pub fn report(&self, duration_ms: u64, requested: std::time::Duration) -> Report {
        let secs = (duration_ms as f64 / 1000.0).max(1e-9);
        let rows = self
            .rows
            .iter()
            .map(|((t, map_type, _), row)| AuditRow {
                target: self.targets[*t].target.clone(),
                map_type: map_type.clone(),
                caller: row.caller.clone(),
                deletes: row.counts.delete,
                assigns: row.counts.assign,
                clears: row.counts.clear,
                peak_delete_rate: row.peak_delete_rate,
                mean_delete_rate: row.counts.delete as f64 / secs,
                deletes_interval: row.deletes_interval,
            })
            .collect();

        // Keys: from each source's latest stats.
        let mut keys: BTreeMap<(String, Option<String>), AuditKeys> = BTreeMap::new();
        for ((context, node), s) in &self.latest {
            let source = (!context.is_empty()).then(|| Source {
                context: context.clone(),
                node: node.clone(),
                ..Default::default()
            });
            for m in &s.map_keys {
                let target = self.name_of(source.as_ref(), m.pid);
                let k = keys
                    .entry((target.clone(), m.map_type.clone()))
                    .or_insert(AuditKeys {
                        target,
                        map_type: m.map_type.clone(),
                        distinct_keys_deleted: 0,
                        at_least: false,
                        top_deleted: Vec::new(),
                    });
                k.distinct_keys_deleted += m.keys_deleted;
                k.at_least |= s.hot_keys_evicted > 0;
            }
            for h in s.hot_keys.iter().filter(|h| h.deletes > 0) {
                let target = self.name_of(source.as_ref(), h.pid);
                if let Some(k) = keys.get_mut(&(target, h.map_type.clone())) {
                    k.top_deleted.push(KeyCount {
                        key: h.key.clone(),
                        deletes: h.deletes,
                    });
                }
            }
        }
        let keys = keys
            .into_values()
            .filter(|k| k.distinct_keys_deleted > 0)
            .map(|mut k| {
                k.top_deleted
                    .sort_by(|a, b| b.deletes.cmp(&a.deletes).then(a.key.cmp(&b.key)));
                k.top_deleted.truncate(self.top);
                k
            })
            .collect();

        let (ops, estimation) =
            crate::estimate::combine(self.summaries.values().map(|s| (&s.ops, &s.estimation)));
        Report {
            duration_ms,
            ops,
            estimation,
            targets: self.targets.clone(),
            rows,
            keys,
            concurrent_writes: self.concurrent.clone(),
            fatals: self.fatals.clone(),
            errors: self.errors.clone(),
            exit_status: self.summaries.values().find_map(|s| s.exit_status),
            requested_duration_ms: requested.as_millis() as u64,
            interrupted: self.stopped_early,
        }
    }

    /// Whether a summary was seen from every source (the run ended cleanly).
    pub fn summaries(&self) -> usize {
        self.summaries.len()
    }
}

impl LineSink for Collector {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.take(line, None);
        Ok(())
    }

    fn tagged(&mut self, line: &Line, source: &Source) -> std::io::Result<()> {
        self.take(line, Some(source));
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn stopped_early(&mut self) {
        self.stopped_early = true;
    }
}
