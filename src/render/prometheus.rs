//! `stats` lines as Prometheus metrics (text exposition format 0.0.4).
//!
//! Families, in the order they are written (every sample also carries the
//! caller's extra labels, e.g. `context`, `namespace`, `pod` on a cluster):
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `go_map_ops_total` | counter | `op`, `map_type`, `caller`, `pid` |
//! | `go_map_length` | gauge | `map_type`, `caller`, `pid` |
//! | `go_map_delete_duration_seconds` | histogram | `map_type`, `pid`, `le` |
//! | `go_map_concurrent_writes_total` | counter | |
//! | `mapguard_events_dropped_total` | counter | |
//! | `mapguard_hot_keys_evicted_total` | counter | |
//! | `mapguard_rows_untracked` | gauge | |
//! | `mapguard_series_folded` | gauge | |
//!
//! `go_map_ops_total` always adds up, per op, to the exact kernel count
//! (`stats.ops`): whatever the rows do not cover (the kernel table was full,
//! `rows_untracked`) or the series cap left out is written as one series per
//! op with `map_type="other",caller="other",pid="other"`.
//!
//! The cap (`max_series`) bounds the distinct `(op, map_type, caller, pid)`
//! series of `go_map_ops_total`; `go_map_length` is written only for the
//! `(map_type, caller, pid)` of series that made it under the cap.
//! [`Renderer`] remembers which series it admitted and which it folded, so a
//! series never moves between its own name and `other` from one scrape to the
//! next (which would make `other` go down, and `rate()` read a counter reset).
//! [`exposition`] is the one-shot form: it admits the busiest series first.

use crate::protocol::{Op, OpCounts, Sampling, Stats, StatsRow};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Label values of the series that hold what no named series holds.
pub const OTHER: &str = "other";
/// `map_type` when the type is not known, `caller` when the caller is not.
pub const UNKNOWN: &str = "unknown";

/// The names of every family this module writes, in order (without the
/// `_bucket`/`_sum`/`_count` suffixes of the histogram).
pub const FAMILIES: [&str; 8] = [
    "go_map_ops_total",
    "go_map_length",
    "go_map_delete_duration_seconds",
    "go_map_concurrent_writes_total",
    "mapguard_events_dropped_total",
    "mapguard_hot_keys_evicted_total",
    "mapguard_rows_untracked",
    "mapguard_series_folded",
];

/// The Content-Type of what [`exposition`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders one `stats` line, with `extra_labels` on every sample, and at most
/// `max_series` distinct `(op, map_type, caller, pid)` series of
/// `go_map_ops_total` (the busiest ones; the rest are summed into
/// `caller="other"`). For repeated scrapes of a live run use [`Renderer`],
/// which keeps the choice of series stable.
pub fn exposition(stats: &Stats, extra_labels: &[(&str, &str)], max_series: usize) -> String {
    Renderer::new(max_series).render(stats, extra_labels)
}

/// A series of `go_map_ops_total`, with the extra labels of its source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OpsKey {
    extra: Vec<(String, String)>,
    op: Op,
    map_type: String,
    caller: String,
    pid: u32,
}

/// Renders `stats` lines, remembering across calls which series are under
/// the cap (see the module doc). One `Renderer` per metrics endpoint.
#[derive(Debug, Clone)]
pub struct Renderer {
    max_series: usize,
    admitted: BTreeSet<OpsKey>,
    folded: BTreeSet<OpsKey>,
    /// Every histogram bucket bound seen so far, so every histogram has the
    /// same `le` set in every scrape (`sum by (le)` needs that).
    bounds: BTreeSet<u64>,
    /// `--max-overhead`: the last value of each estimated counter series. An
    /// estimate can be revised down; a counter must not go down.
    floors: BTreeMap<(Vec<(String, String)>, String), u64>,
}

impl Renderer {
    pub fn new(max_series: usize) -> Renderer {
        Renderer {
            max_series,
            admitted: BTreeSet::new(),
            folded: BTreeSet::new(),
            bounds: BTreeSet::new(),
            floors: BTreeMap::new(),
        }
    }

    /// `n`, or the series' last value if that was higher, when estimated.
    fn monotonic(
        &mut self,
        estimated: bool,
        extra: &[(String, String)],
        series: String,
        n: u64,
    ) -> u64 {
        if !estimated {
            return n;
        }
        let floor = self.floors.entry((extra.to_vec(), series)).or_default();
        *floor = (*floor).max(n);
        *floor
    }

    /// One source: the exposition of `stats` with `extra_labels` on every sample.
    pub fn render(&mut self, stats: &Stats, extra_labels: &[(&str, &str)]) -> String {
        self.render_many(&[(stats, extra_labels)])
    }

    /// Several sources in one exposition (e.g. one `stats` per agent pod, each
    /// with its own `pod` label): each family is written once, with the
    /// samples of every source. Sources with the same extra labels are added
    /// up as one. The cap counts series over all sources; the per-op sums are
    /// exact per source.
    pub fn render_many(&mut self, sources: &[(&Stats, &[(&str, &str)])]) -> String {
        let mut groups: BTreeMap<Vec<(String, String)>, Vec<&Stats>> = BTreeMap::new();
        for (stats, extra) in sources {
            groups.entry(extra_labels(extra)).or_default().push(stats);
        }
        // Groups are written in the order of their labels, whatever the order
        // of the sources.
        let groups: Vec<Group> = groups
            .into_iter()
            .map(|(extra, stats)| Group::new(extra, &stats))
            .collect();

        let mut all: BTreeMap<&OpsKey, u64> = BTreeMap::new();
        for g in &groups {
            all.extend(g.counts.iter().map(|(k, &n)| (k, n)));
        }
        self.admit(&all);
        for g in &groups {
            for h in g.hists.values() {
                self.bounds.extend(h.buckets.keys().copied());
            }
        }
        fill_log2_ladder(&mut self.bounds);

        let mut out = String::with_capacity(4096);
        let estimated = groups.iter().any(|g| g.estimated);

        family(
            &mut out,
            "go_map_ops_total",
            "counter",
            if estimated {
                "ESTIMATED (--max-overhead): Go map operations since the start, by operation, map \
                 type and calling function: the operations observed divided by the observed \
                 fraction (mapguard_observed_fraction), never revised downwards. \
                 caller=\"other\" holds what no other series does."
            } else {
                "Go map operations since the start, by operation, map type and calling function. \
                 Per op the series add up to the exact kernel count; caller=\"other\" holds what no \
                 other series does."
            },
        );
        for g in &groups {
            let mut named = [0u64; 3];
            for (key, &n) in &g.counts {
                if self.admitted.contains(key) {
                    named[op_index(key.op)] += n;
                    let labels = [
                        ("op", key.op.as_str()),
                        ("map_type", &key.map_type),
                        ("caller", &key.caller),
                        ("pid", &key.pid.to_string()),
                    ];
                    let series = format!(
                        "{}|{}|{}|{}",
                        key.op.as_str(),
                        key.map_type,
                        key.caller,
                        key.pid
                    );
                    let n = self.monotonic(g.estimated, &g.extra, series, n);
                    sample(
                        &mut out,
                        "go_map_ops_total",
                        &g.extra,
                        &labels,
                        &n.to_string(),
                    );
                }
            }
            for op in Op::ALL {
                let rest = g.ops.get(op).saturating_sub(named[op_index(op)]);
                let rest = self.monotonic(
                    g.estimated,
                    &g.extra,
                    format!("{}|other", op.as_str()),
                    rest,
                );
                let labels = [
                    ("op", op.as_str()),
                    ("map_type", OTHER),
                    ("caller", OTHER),
                    ("pid", OTHER),
                ];
                sample(
                    &mut out,
                    "go_map_ops_total",
                    &g.extra,
                    &labels,
                    &rest.to_string(),
                );
            }
        }

        family(
            &mut out,
            "go_map_length",
            "gauge",
            "Length, before its last operation, of the last map seen from a map type and calling \
             function (the largest over its operations).",
        );
        for g in &groups {
            let mut gauges: BTreeMap<(&str, &str, u32), u64> = BTreeMap::new();
            for (key, &len) in &g.lengths {
                if self.admitted.contains(key) {
                    let v = gauges
                        .entry((&key.map_type, &key.caller, key.pid))
                        .or_default();
                    *v = (*v).max(len);
                }
            }
            for ((map_type, caller, pid), len) in gauges {
                let labels = [
                    ("map_type", map_type),
                    ("caller", caller),
                    ("pid", &pid.to_string()),
                ];
                sample(
                    &mut out,
                    "go_map_length",
                    &g.extra,
                    &labels,
                    &len.to_string(),
                );
            }
        }

        let name = "go_map_delete_duration_seconds";
        family(
            &mut out,
            name,
            "histogram",
            "Time a Go map delete took, by map type.",
        );
        for g in &groups {
            for ((map_type, pid), h) in &g.hists {
                let pid = pid.to_string();
                let mut cumulative = 0u64;
                for &le_ns in &self.bounds {
                    cumulative += h.buckets.get(&le_ns).copied().unwrap_or(0);
                    let le = ns_as_seconds(le_ns);
                    let labels = [("map_type", map_type.as_str()), ("pid", &pid), ("le", &le)];
                    let value = cumulative.to_string();
                    sample(
                        &mut out,
                        &format!("{name}_bucket"),
                        &g.extra,
                        &labels,
                        &value,
                    );
                }
                // A bucket never holds more than the whole: keep the histogram
                // valid even if a snapshot's count lags its buckets.
                let count = h.count.max(cumulative).to_string();
                let labels = [("map_type", map_type.as_str()), ("pid", &pid)];
                let inf = [labels[0], labels[1], ("le", "+Inf")];
                sample(&mut out, &format!("{name}_bucket"), &g.extra, &inf, &count);
                let sum = ns_as_seconds(h.sum_ns);
                sample(&mut out, &format!("{name}_sum"), &g.extra, &labels, &sum);
                sample(
                    &mut out,
                    &format!("{name}_count"),
                    &g.extra,
                    &labels,
                    &count,
                );
            }
        }

        let folded: Vec<u64> = groups
            .iter()
            .map(|g| g.counts.keys().filter(|k| self.folded.contains(*k)).count() as u64)
            .collect();
        let plain: [(&str, &str, &str, Vec<u64>); 5] = [
            (
                "go_map_concurrent_writes_total",
                "counter",
                if estimated {
                    "Map writes that began while another goroutine was writing the same map (the \
                     race the Go runtime stops a program for: concurrent map writes). Under \
                     --max-overhead only those inside observed windows: a count of what was seen, \
                     not an estimate (see mapguard_observed_fraction)."
                } else {
                    "Map writes that began while another goroutine was writing the same map (the \
                     race the Go runtime stops a program for: concurrent map writes)."
                },
                groups.iter().map(|g| g.concurrent_writes).collect(),
            ),
            (
                "mapguard_events_dropped_total",
                "counter",
                "Events lost because the ring buffer was full (go_map_ops_total stays exact).",
                groups.iter().map(|g| g.drops).collect(),
            ),
            (
                "mapguard_hot_keys_evicted_total",
                "counter",
                "Operations the hot-key table could not count under their key (a key waiting at a full set, or pushed out); non-zero means a top-keys list may miss a key.",
                groups.iter().map(|g| g.hot_keys_evicted).collect(),
            ),
            (
                "mapguard_rows_untracked",
                "gauge",
                "(pid, map type, caller, op) combinations the kernel table had no room for; \
                 their operations are counted under caller=\"other\".",
                groups.iter().map(|g| g.rows_untracked).collect(),
            ),
            (
                "mapguard_series_folded",
                "gauge",
                "go_map_ops_total series the series cap summed into caller=\"other\".",
                folded,
            ),
        ];
        for (name, kind, help, values) in plain {
            family(&mut out, name, kind, help);
            for (g, v) in groups.iter().zip(values) {
                sample(&mut out, name, &g.extra, &[], &v.to_string());
            }
        }
        if estimated {
            self.sampling_families(&mut out, &groups);
        }
        out
    }

    /// `--max-overhead`: per process, the share observed and what probing costs it.
    fn sampling_families(&self, out: &mut String, groups: &[Group]) {
        let families: [(&str, &str, fn(&Sampling) -> f64); 2] = [
            (
                "mapguard_observed_fraction",
                "Share of the process's operations its probes observed (--max-overhead), its \
                 work weighed by its own CPU time or by its read and write system calls: \
                 go_map_ops_total is observed operations divided by it; hot \
                 keys and concurrent writes are those of the observed windows only. NaN where \
                 it cannot be known (a loop of nothing but map operations): the counts are then \
                 what was seen, a floor.",
                |s| s.observed_fraction.unwrap_or(f64::NAN),
            ),
            (
                "mapguard_probe_overhead_percent",
                "What the probes are estimated to have cost the process over the last interval, \
                 in percent of its own CPU time (held at or under --max-overhead).",
                |s| s.overhead_pct,
            ),
        ];
        for (name, help, value) in families {
            family(out, name, "gauge", help);
            for g in groups {
                for s in &g.sampling {
                    let pid = s.pid.to_string();
                    sample(
                        out,
                        name,
                        &g.extra,
                        &[("pid", &pid)],
                        &format!("{}", value(s)),
                    );
                }
            }
        }
    }

    /// Decides which of this scrape's series get their own name: those admitted
    /// before keep it, those folded before stay folded, and new ones are
    /// admitted busiest first while there is room. Series no longer present
    /// (their process is gone) free their place.
    fn admit(&mut self, counts: &BTreeMap<&OpsKey, u64>) {
        self.admitted.retain(|k| counts.contains_key(k));
        self.folded.retain(|k| counts.contains_key(k));
        let mut new: Vec<(&OpsKey, u64)> = counts
            .iter()
            .filter(|(k, _)| !self.admitted.contains(**k) && !self.folded.contains(**k))
            .map(|(k, &n)| (*k, n))
            .collect();
        new.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (key, _) in new {
            if self.admitted.len() < self.max_series {
                self.admitted.insert(key.clone());
            } else {
                self.folded.insert(key.clone());
            }
        }
    }
}

fn ops_key(extra: &[(String, String)], row: &StatsRow) -> OpsKey {
    OpsKey {
        extra: extra.to_vec(),
        op: row.op,
        map_type: label_or_unknown(row.map_type.as_deref()),
        caller: label_or_unknown(row.caller.as_ref().map(|f| f.func.as_str())),
        pid: row.pid,
    }
}

/// A histogram of one (map type, pid): bucket counts by exclusive upper bound.
#[derive(Debug, Default)]
struct Hist {
    buckets: BTreeMap<u64, u64>,
    count: u64,
    sum_ns: u64,
}

/// The sources that share one set of extra labels, added up.
struct Group {
    extra: Vec<(String, String)>,
    ops: OpCounts,
    counts: BTreeMap<OpsKey, u64>,
    lengths: BTreeMap<OpsKey, u64>,
    hists: BTreeMap<(String, u32), Hist>,
    concurrent_writes: u64,
    drops: u64,
    hot_keys_evicted: u64,
    rows_untracked: u64,
    estimated: bool,
    sampling: Vec<Sampling>,
}

impl Group {
    fn new(extra: Vec<(String, String)>, sources: &[&Stats]) -> Group {
        let mut g = Group {
            extra,
            ops: OpCounts::default(),
            counts: BTreeMap::new(),
            lengths: BTreeMap::new(),
            hists: BTreeMap::new(),
            concurrent_writes: 0,
            drops: 0,
            hot_keys_evicted: 0,
            rows_untracked: 0,
            estimated: false,
            sampling: Vec::new(),
        };
        for stats in sources {
            for op in Op::ALL {
                g.ops.add(op, stats.ops.get(op));
            }
            // A caller is its function: rows that differ only by file:line
            // are one series.
            for row in &stats.rows {
                let key = ops_key(&g.extra, row);
                *g.counts.entry(key.clone()).or_default() += row.count;
                let len = g.lengths.entry(key).or_default();
                *len = (*len).max(row.map_len);
            }
            for h in &stats.delete_latency {
                let key = (label_or_unknown(h.map_type.as_deref()), h.pid);
                let e = g.hists.entry(key).or_default();
                for b in &h.buckets {
                    *e.buckets.entry(b.le_ns).or_default() += b.count;
                }
                e.count += h.count;
                e.sum_ns += h.sum_ns;
            }
            g.concurrent_writes += stats.concurrent_writes;
            g.drops += stats.drops;
            g.hot_keys_evicted += stats.hot_keys_evicted;
            g.rows_untracked += stats.rows_untracked;
            g.estimated |= stats.estimation.estimated;
            g.sampling.extend(stats.estimation.sampling.iter().cloned());
        }
        g
    }
}

/// The kernel writes only the buckets that hold something; when the bounds
/// are powers of two (log2 buckets), every power of two between the smallest
/// and the largest is written, so `histogram_quantile` interpolates inside
/// one bucket rather than across a gap.
fn fill_log2_ladder(bounds: &mut BTreeSet<u64>) {
    let (Some(&lo), Some(&hi)) = (bounds.first(), bounds.last()) else {
        return;
    };
    if !bounds.iter().all(|b| b.is_power_of_two()) {
        return;
    }
    let mut b = lo;
    while b < hi {
        b <<= 1;
        bounds.insert(b);
    }
}

fn op_index(op: Op) -> usize {
    match op {
        Op::Delete => 0,
        Op::Assign => 1,
        Op::Clear => 2,
    }
}

fn label_or_unknown(s: Option<&str>) -> String {
    match s {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => UNKNOWN.to_string(),
    }
}

/// Names the series labels take; an extra label by one of these names is
/// written as `exported_NAME`, as Prometheus itself does on a clash.
const RESERVED: [&str; 5] = ["op", "map_type", "caller", "pid", "le"];

/// Extra labels made safe: names sanitized to `[a-zA-Z_][a-zA-Z0-9_]*`
/// (`__` prefixes are Prometheus's own), clashes renamed, repeats dropped.
fn extra_labels(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in extra {
        let mut n: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
            n.insert(0, '_');
        }
        while n.starts_with("__") {
            n.remove(0);
        }
        if RESERVED.contains(&n.as_str()) {
            n = format!("exported_{n}");
        }
        if !out.iter().any(|(m, _)| *m == n) {
            out.push((n, value.to_string()));
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(
    out: &mut String,
    name: &str,
    extra: &[(String, String)],
    labels: &[(&str, &str)],
    value: &str,
) {
    out.push_str(name);
    let all = extra
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(labels.iter().copied());
    let mut first = true;
    for (n, v) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Label values escape backslash, double quote and newline (and nothing else).
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Exact decimal seconds of a nanosecond count: 1024 -> "0.000001024",
/// 2_000_000_000 -> "2".
fn ns_as_seconds(ns: u64) -> String {
    let (s, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return s.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{s}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Frame, LatencyBucket, LatencyHistogram};

    fn row(pid: u32, map_type: Option<&str>, func: Option<&str>, op: Op, count: u64) -> StatsRow {
        StatsRow {
            pid,
            map_type: map_type.map(str::to_string),
            caller: func.map(|f| Frame {
                func: f.into(),
                file: "/src/main.go".into(),
                line: 42,
            }),
            via: None,
            op,
            count,
            rate: 0.0,
            map_len: count * 2,
            pc: None,
            estimate: Default::default(),
        }
    }

    /// `name{labels} value` lines of one metric name, as (labels, value).
    fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (n, labels) = match series.find('{') {
                    Some(i) => (&series[..i], &series[i..]),
                    None => (series, ""),
                };
                (n == name).then_some((labels, value))
            })
            .collect()
    }

    fn op_sum(text: &str, op: &str) -> u64 {
        samples(text, "go_map_ops_total")
            .into_iter()
            .filter(|(l, _)| l.contains(&format!("op=\"{op}\"")))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum()
    }

    fn stats() -> Stats {
        Stats {
            ops: OpCounts {
                delete: 100,
                assign: 50,
                clear: 1,
            },
            rows: vec![
                row(1, Some("map[string]int"), Some("main.a"), Op::Delete, 60),
                row(1, Some("map[string]int"), Some("main.b"), Op::Delete, 30),
                row(2, None, None, Op::Assign, 45),
            ],
            rows_untracked: 2,
            ..Default::default()
        }
    }

    #[test]
    fn untracked_operations_go_to_other_and_sums_are_exact() {
        let text = exposition(&stats(), &[], 100);
        assert_eq!(op_sum(&text, "delete"), 100);
        assert_eq!(op_sum(&text, "assign"), 50);
        assert_eq!(op_sum(&text, "clear"), 1);
        assert!(text.contains(
            "go_map_ops_total{op=\"delete\",map_type=\"other\",caller=\"other\",pid=\"other\"} 10\n"
        ));
        assert!(text.contains(
            "go_map_ops_total{op=\"assign\",map_type=\"unknown\",caller=\"unknown\",pid=\"2\"} 45\n"
        ));
        assert!(text.contains("mapguard_rows_untracked 2\n"));
    }

    #[test]
    fn cap_keeps_the_busiest_and_folds_the_rest() {
        let text = exposition(&stats(), &[], 1);
        let named: Vec<_> = samples(&text, "go_map_ops_total")
            .into_iter()
            .filter(|(l, _)| !l.contains("caller=\"other\""))
            .collect();
        assert_eq!(named.len(), 1, "{text}");
        assert!(named[0].0.contains("main.a"));
        assert_eq!(op_sum(&text, "delete"), 100);
        assert_eq!(op_sum(&text, "assign"), 50);
        assert!(text.contains("mapguard_series_folded 2\n"));
        // Lengths only for the admitted series.
        assert_eq!(samples(&text, "go_map_length").len(), 1);
        // A cap of zero folds everything.
        let text = exposition(&stats(), &[], 0);
        assert_eq!(samples(&text, "go_map_ops_total").len(), 3);
        assert_eq!(op_sum(&text, "delete"), 100);
    }

    #[test]
    fn renderer_keeps_its_choice_between_scrapes() {
        let mut r = Renderer::new(1);
        let first = stats();
        r.render(&first, &[]);
        // main.b overtakes main.a: main.a keeps its series, main.b stays folded,
        // so "other" never goes down.
        let mut second = first.clone();
        second.rows[1].count = 90;
        second.ops.delete = 160;
        let text = r.render(&second, &[]);
        assert!(text.contains("caller=\"main.a\",pid=\"1\"} 60\n"), "{text}");
        assert!(!text.contains("main.b"), "{text}");
        assert_eq!(op_sum(&text, "delete"), 160);
        // A series that is gone frees its place.
        let mut third = second.clone();
        third.rows.remove(0);
        let text = r.render(&third, &[]);
        assert!(!text.contains("main.a"), "{text}");
        assert_eq!(op_sum(&text, "delete"), 160);
    }

    #[test]
    fn histogram_is_cumulative_in_seconds_with_shared_bounds() {
        let mut s = Stats {
            delete_latency: vec![
                LatencyHistogram {
                    pid: 1,
                    map_type: Some("map[int]int".into()),
                    count: 6,
                    sum_ns: 5000,
                    buckets: vec![
                        LatencyBucket {
                            le_ns: 2048,
                            count: 2,
                        },
                        LatencyBucket {
                            le_ns: 1024,
                            count: 4,
                        },
                    ],
                },
                LatencyHistogram {
                    pid: 2,
                    map_type: None,
                    count: 1,
                    sum_ns: 3_000_000_000,
                    buckets: vec![LatencyBucket {
                        le_ns: 4096,
                        count: 1,
                    }],
                },
            ],
            ..Default::default()
        };
        let text = exposition(&s, &[], 10);
        let b = samples(&text, "go_map_delete_duration_seconds_bucket");
        let want = [
            (
                "{map_type=\"map[int]int\",pid=\"1\",le=\"0.000001024\"}",
                "4",
            ),
            (
                "{map_type=\"map[int]int\",pid=\"1\",le=\"0.000002048\"}",
                "6",
            ),
            (
                "{map_type=\"map[int]int\",pid=\"1\",le=\"0.000004096\"}",
                "6",
            ),
            ("{map_type=\"map[int]int\",pid=\"1\",le=\"+Inf\"}", "6"),
            ("{map_type=\"unknown\",pid=\"2\",le=\"0.000001024\"}", "0"),
            ("{map_type=\"unknown\",pid=\"2\",le=\"0.000002048\"}", "0"),
            ("{map_type=\"unknown\",pid=\"2\",le=\"0.000004096\"}", "1"),
            ("{map_type=\"unknown\",pid=\"2\",le=\"+Inf\"}", "1"),
        ];
        assert_eq!(b, want);
        // A gap between log2 bounds is filled.
        s.delete_latency[1].buckets[0].le_ns = 16384;
        let text = exposition(&s, &[], 10);
        let les: Vec<_> = samples(&text, "go_map_delete_duration_seconds_bucket")
            .into_iter()
            .filter(|(l, _)| l.contains("pid=\"2\""))
            .map(|(l, v)| (l.rsplit_once("le=").unwrap().1, v))
            .collect();
        assert_eq!(
            les,
            [
                ("\"0.000001024\"}", "0"),
                ("\"0.000002048\"}", "0"),
                ("\"0.000004096\"}", "0"),
                ("\"0.000008192\"}", "0"),
                ("\"0.000016384\"}", "1"),
                ("\"+Inf\"}", "1"),
            ]
        );
        assert!(text.contains(
            "go_map_delete_duration_seconds_sum{map_type=\"map[int]int\",pid=\"1\"} 0.000005\n"
        ));
        assert!(
            text.contains("go_map_delete_duration_seconds_sum{map_type=\"unknown\",pid=\"2\"} 3\n")
        );
        assert!(text
            .contains("go_map_delete_duration_seconds_count{map_type=\"unknown\",pid=\"2\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped_and_extra_labels_are_everywhere() {
        let mut s = stats();
        s.rows[0].map_type = Some("map[string]\"q\\\n".into());
        let text = exposition(
            &s,
            &[("pod", "web-\"1\""), ("pid", "x"), ("9bad-name", "v")],
            10,
        );
        assert!(
            text.contains("map_type=\"map[string]\\\"q\\\\\\n\""),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.contains("pod=\"web-\\\"1\\\"\",exported_pid=\"x\",_9bad_name=\"v\""),
                "{line}"
            );
        }
    }

    #[test]
    fn every_family_has_help_and_type_once_and_output_is_deterministic() {
        let a = exposition(&stats(), &[("pod", "p")], 10);
        let mut reversed = stats();
        reversed.rows.reverse();
        assert_eq!(a, exposition(&reversed, &[("pod", "p")], 10));
        for name in FAMILIES {
            assert_eq!(a.matches(&format!("# HELP {name} ")).count(), 1, "{name}");
            assert_eq!(a.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        }
    }

    #[test]
    fn several_sources_share_families() {
        let s = stats();
        let a: &[(&str, &str)] = &[("pod", "a")];
        let b: &[(&str, &str)] = &[("pod", "b")];
        let text = Renderer::new(100).render_many(&[(&s, a), (&s, b)]);
        assert_eq!(text.matches("# TYPE go_map_ops_total ").count(), 1);
        assert_eq!(op_sum(&text, "delete"), 200);
        let pod_b: u64 = samples(&text, "go_map_ops_total")
            .into_iter()
            .filter(|(l, _)| l.contains("pod=\"b\"") && l.contains("op=\"delete\""))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum();
        assert_eq!(pod_b, 100);
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(ns_as_seconds(0), "0");
        assert_eq!(ns_as_seconds(1), "0.000000001");
        assert_eq!(ns_as_seconds(1024), "0.000001024");
        assert_eq!(ns_as_seconds(1_500_000_000), "1.5");
        assert_eq!(ns_as_seconds(u64::MAX), "18446744073.709551615");
    }

    #[test]
    fn estimates_say_so_and_never_go_down() {
        let mut st = stats();
        st.estimation = crate::protocol::Estimation {
            estimated: true,
            observed_fraction: Some(Some(0.01)),
            sampling: vec![Sampling {
                pid: 7,
                observed_fraction: Some(0.01),
                overhead_pct: 1.5,
                max_overhead_pct: 2.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut r = Renderer::new(100);
        let first = r.render(&st, &[]);
        assert!(
            first.contains("# HELP go_map_ops_total ESTIMATED (--max-overhead)"),
            "{first}"
        );
        assert!(first.contains("observed windows"));
        assert_eq!(
            samples(&first, "mapguard_observed_fraction"),
            [("{pid=\"7\"}", "0.01")]
        );
        assert_eq!(
            samples(&first, "mapguard_probe_overhead_percent"),
            [("{pid=\"7\"}", "1.5")]
        );
        // A revised estimate below the last one keeps the counter where it was.
        let before = op_sum(&first, "delete");
        for row in st.rows.iter_mut() {
            row.count /= 2;
        }
        st.ops.delete /= 2;
        let second = r.render(&st, &[]);
        assert_eq!(op_sum(&second, "delete"), before);
        // Exact mode has neither the gauges nor the word.
        let exact = Renderer::new(100).render(&stats(), &[]);
        assert!(!exact.contains("ESTIMATED") && !exact.contains("mapguard_observed_fraction"));
    }
}
