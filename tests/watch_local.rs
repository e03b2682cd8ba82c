//! End to end, as a user runs it on one machine: `kubectl-mapguard watch` (live aggregates: rows
//! per map type / caller / op, hot keys, delete latency, concurrent writes, Prometheus metrics),
//! plus the parts of `trace` that belong to the same feature (concurrent_write and fatal lines,
//! `--max-events-per-sec`), on real Go programs built with the toolchains of the matrix, with real
//! uprobes. Each Go program writes down what it did (its truth file); the tests compare exactly.
//!
//! Go programs (tests/go/...):
//! - `hotkeys TRUTH`: known, skewed per-key counts on `map[string]main.score` and
//!   `map[int64]main.score` (7 hot keys each, all totals different, plus 2000 keys touched once).
//! - `keystorm TRUTH`: 5 hot keys, a storm of 50,000 keys used once, the hot keys again.
//! - `mutexwriters TRUTH shared|own [TOTAL]`: 8 goroutines, 5,000,000 writes (or TOTAL),
//!   correctly locked (or one map per goroutine): no concurrent write may be reported.
//! - `recursion TRUTH`: map writes 12000+ frames deep while goroutine stacks grow (are copied)
//!   in the middle of map calls; must survive, and every delete must be timed.
//! - `manymaps N`: one long-lived map with three hot keys and N maps of two keys each, the way a
//!   service makes a map per request.
//! - `racer`: two goroutines write one `map[int]int`; the Go runtime kills it with "concurrent
//!   map writes" (exit status 2).
//! - `maptruth` (trace tests) and `examples/demo` (metrics, table).
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) and the toolchains under /opt/mapguard-go (or
//! `MAPGUARD_GO_DIR`). Without them each test prints a loud SKIP and passes, unless
//! `MAPGUARD_REQUIRE_BPF=1` (CI), which turns every skip into a failure (and requires promtool
//! for the metrics test).
//!
//! Naming the other goroutine of a concurrent write and timing deletes need `--track-writers`
//! (entry + RET probes; each RET probe is single-stepped, ~20 µs): the tests that check those
//! use it, and the default (write-flag) detector is held only to being right when it reports.
//!
//! The Go runtime uses maps too: comparisons with a truth file use `main.*` callers and the
//! program's own (unique) map types; kernel totals (`ops`) are compared as ">= the truth".

#[macro_use]
mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A hung tool fails its test after this.
const TIMEOUT: Duration = Duration::from_secs(240);

const OPS: [&str; 3] = ["delete", "assign", "clear"];

/// `kubectl-mapguard watch -o json --interval 500ms EXTRA -- PROGRAM TRUTH`, which must succeed.
fn watch_ok(v: &Variant, test: &str, extra: &[&str], program_dir: &str) -> Option<Run> {
    let mut args = vec!["watch", "-o", "json", "--interval", "500ms"];
    args.extend_from_slice(extra);
    let r = run_program_t(v, test, &args, program_dir, true, &[], TIMEOUT, &[])?;
    assert!(r.status.success(), "{}: tool failed\n{}", v.name, r.ctx());
    Some(r)
}

fn u(v: &Value, p: &str) -> u64 {
    v.pointer(p)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned integer at {p} in {v}"))
}

fn st<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no array {field:?} in {v}"))
}

fn position(lines: &[Value], v: &Value) -> usize {
    lines
        .iter()
        .position(|l| std::ptr::eq(l, v))
        .expect("line of this run")
}

/// The truth's `total` line: package main's operations per op.
fn truth_total(truth: &[Value]) -> BTreeMap<&'static str, u64> {
    let t = truth_of_kind(truth, "total");
    assert_eq!(t.len(), 1, "truth file has one total line: {t:?}");
    OPS.iter()
        .map(|op| (*op, u(t[0], &format!("/{op}"))))
        .collect()
}

/// (map_type, func, line, op) -> count.
type CallerCounts = BTreeMap<(String, String, u64, String), u64>;

fn truth_callers(truth: &[Value]) -> CallerCounts {
    let mut m = CallerCounts::new();
    for t in truth_of_kind(truth, "caller") {
        let k = (
            st(t, "/map_type").expect("truth map_type").to_string(),
            st(t, "/func").expect("truth func").to_string(),
            u(t, "/line"),
            st(t, "/op").expect("truth op").to_string(),
        );
        *m.entry(k).or_insert(0) += u(t, "/count");
    }
    assert!(!m.is_empty(), "truth file has no caller lines");
    m
}

/// The rows of a stats line with a `main.*` caller, as (map_type, func, line, op) -> count.
fn main_rows(stats: &Value, pid: u64) -> CallerCounts {
    let mut m = CallerCounts::new();
    for r in arr(stats, "rows") {
        let func = st(r, "/caller/func").unwrap_or("");
        if !func.starts_with("main.") {
            continue;
        }
        assert_eq!(u(r, "/pid"), pid, "a row of another process: {r}");
        let k = (
            st(r, "/map_type").unwrap_or("<null>").to_string(),
            func.to_string(),
            r.pointer("/caller/line")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            st(r, "/op").unwrap_or("").to_string(),
        );
        assert!(
            m.insert(k.clone(), u(r, "/count")).is_none(),
            "two rows for {k:?} in one stats line"
        );
    }
    m
}

fn diff_counts(got: &CallerCounts, want: &CallerCounts) -> String {
    let keys: BTreeSet<_> = got.keys().chain(want.keys()).collect();
    let mut s = String::new();
    for k in keys {
        let (g, w) = (got.get(k), want.get(k));
        if g != w {
            s.push_str(&format!("  {k:?}: tool {g:?}, truth {w:?}\n"));
        }
    }
    s
}

/// Every watch run: `attached` first, `detached` for the pid, a final `stats` line after it,
/// `summary` last; the final stats' `ops` equal the summary's (both exact kernel counts); stats
/// counts never go down from one interval to the next; the table had room for every row, or
/// says how many it could not keep.
fn assert_watch_stream(v: &Variant, r: &Run) {
    let lines = &r.lines;
    let sum = summary(lines);
    assert!(
        kind_is(&lines[0], "attached"),
        "{}: first line {}\n{}",
        v.name,
        lines[0],
        r.ctx()
    );
    let stats = stats_lines(lines);
    assert!(!stats.is_empty(), "{}: no stats line\n{}", v.name, r.ctx());
    let fin = *stats.last().unwrap();
    let fin_i = position(lines, fin);
    let det_i = lines
        .iter()
        .rposition(|l| {
            kind_is(l, "detached") && l.get("pid").and_then(Value::as_u64) == Some(r.pid)
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: no detached line for pid {}\n{}",
                v.name,
                r.pid,
                r.ctx()
            )
        });
    assert!(
        det_i < fin_i && fin_i == lines.len() - 2,
        "{}: want ... detached, final stats, summary; got detached at {det_i}, last stats at \
         {fin_i}, {} lines\n{}",
        v.name,
        lines.len(),
        r.ctx()
    );
    for op in OPS {
        assert_eq!(
            u(fin, &format!("/ops/{op}")),
            summary_op(sum, op),
            "{}: final stats ops.{op} != summary ops.{op}\nstats ops {}\nsummary {sum}",
            v.name,
            fin["ops"]
        );
    }
    // Totals since the start never decrease.
    for w in stats.windows(2) {
        for op in OPS {
            let (a, b) = (
                u(w[0], &format!("/ops/{op}")),
                u(w[1], &format!("/ops/{op}")),
            );
            assert!(a <= b, "{}: stats ops.{op} went down {a} -> {b}", v.name);
        }
        let (a, b) = (u(w[0], "/concurrent_writes"), u(w[1], "/concurrent_writes"));
        assert!(a <= b, "{}: concurrent_writes went down {a} -> {b}", v.name);
    }
    for s in &stats {
        for f in [
            "ts",
            "interval_ms",
            "rows_untracked",
            "hot_keys_evicted",
            "drops",
        ] {
            assert!(
                s.get(f).map(Value::is_u64).unwrap_or(false),
                "{}: stats.{f}: {s}",
                v.name
            );
        }
        for row in arr(s, "rows") {
            let rate = row.get("rate").and_then(Value::as_f64);
            assert!(
                rate.is_some_and(|x| x.is_finite() && x >= 0.0),
                "{}: row rate: {row}",
                v.name
            );
            assert!(
                row.get("map_len").map(Value::is_u64).unwrap_or(false),
                "{row}"
            );
            assert!(OPS.contains(&st(row, "/op").unwrap_or("")), "{row}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1 + 2. hotkeys under `watch -o json --interval 500ms`.

fn hotkeys_run(v: &Variant) -> Option<Arc<Run>> {
    shared_run("watch hotkeys", v, || {
        run_program_t(
            v,
            "watch-hotkeys",
            &["watch", "-o", "json", "--interval", "500ms"],
            "tests/go/hotkeys",
            true,
            &[],
            TIMEOUT,
            &[],
        )
    })
}

/// (map_type -> [(key, deletes, assigns)]) of the truth, most operations first.
fn truth_keys(truth: &[Value]) -> BTreeMap<String, Vec<(String, u64, u64)>> {
    let mut m: BTreeMap<String, Vec<(String, u64, u64)>> = BTreeMap::new();
    for k in truth_of_kind(truth, "key") {
        m.entry(st(k, "/map_type").unwrap().to_string())
            .or_default()
            .push((
                st(k, "/key").unwrap().to_string(),
                u(k, "/deletes"),
                u(k, "/assigns"),
            ));
    }
    for keys in m.values_mut() {
        keys.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
    }
    assert_eq!(m.len(), 2, "hotkeys writes two maps: {:?}", m.keys());
    m
}

/// The stats' hot keys of the program's maps: map_type -> [(key, deletes, assigns)] as listed.
fn hot_keys_by_type(
    v: &Variant,
    stats: &Value,
    pid: u64,
    types: &BTreeSet<String>,
) -> BTreeMap<String, Vec<(String, u64, u64)>> {
    let mut m: BTreeMap<String, Vec<(String, u64, u64)>> = BTreeMap::new();
    let mut maps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for h in arr(stats, "hot_keys") {
        let Some(t) = st(h, "/map_type") else {
            continue;
        };
        if !types.contains(t) {
            continue;
        }
        assert_eq!(u(h, "/pid"), pid, "{}: {h}", v.name);
        maps.entry(t.to_string())
            .or_default()
            .insert(st(h, "/map").unwrap_or("").to_string());
        assert!(
            st(h, "/key_hash").is_some_and(|s| !s.is_empty()),
            "{}: hot key without key_hash: {h}",
            v.name
        );
        assert_eq!(
            h.get("key_truncated").and_then(Value::as_bool),
            Some(false),
            "{h}"
        );
        m.entry(t.to_string()).or_default().push((
            st(h, "/key").unwrap_or("<null>").to_string(),
            u(h, "/deletes"),
            u(h, "/assigns"),
        ));
    }
    for (t, set) in &maps {
        assert_eq!(
            set.len(),
            1,
            "{}: {t} is one map in hotkeys, hot_keys name {set:?}",
            v.name
        );
        assert!(
            set.iter().all(|a| a.starts_with("0x")),
            "{}: map should be a hex address: {set:?}",
            v.name
        );
    }
    m
}

/// 1. The hot keys of each map are exactly the truth's top 5 (default `--top`), most operations
/// first, with exact deletes and assigns; nothing evicted with the default table.
fn hot_keys_exact(v: &Variant) {
    let Some(r) = hotkeys_run(v) else { return };
    assert!(r.status.success(), "{}: tool failed\n{}", v.name, r.ctx());
    assert_watch_stream(v, &r);
    assert_attached(v, &r.lines, r.pid);
    let sum = summary(&r.lines);
    assert_eq!(
        sum.get("exit_status").and_then(Value::as_i64),
        Some(0),
        "{}: {sum}",
        v.name
    );
    assert!(
        stats_lines(&r.lines).len() >= 2,
        "{}: hotkeys runs ~1.4 s: want interval stats lines (--interval 500ms) before the final \
         one\n{}",
        v.name,
        r.ctx()
    );
    let truth = truth_keys(&r.truth);
    let types: BTreeSet<String> = truth.keys().cloned().collect();
    let fin = final_stats(&r.lines);
    assert_eq!(
        u(fin, "/hot_keys_evicted"),
        0,
        "{}: default hot-key table (65536 entries) must hold ~4000 keys\n{}",
        v.name,
        fin["hot_keys_evicted"]
    );
    let got = hot_keys_by_type(v, fin, r.pid, &types);
    for (t, keys) in &truth {
        let want: Vec<(String, u64, u64)> = keys.iter().take(5).cloned().collect();
        let g = got.get(t).cloned().unwrap_or_default();
        assert_eq!(
            g, want,
            "{}: hot keys of {t} (key, deletes, assigns), most operations first: tool vs truth's \
             top 5\nall hot_keys: {}",
            v.name, fin["hot_keys"]
        );
    }
    // Every map's list is ordered and no longer than --top.
    let mut per_map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for h in arr(fin, "hot_keys") {
        per_map
            .entry(format!("{}/{}", u(h, "/pid"), st(h, "/map").unwrap_or("")))
            .or_default()
            .push(u(h, "/deletes") + u(h, "/assigns"));
    }
    for (m, totals) in per_map {
        assert!(
            totals.len() <= 5,
            "{}: --top 5 but map {m} lists {totals:?}",
            v.name
        );
        assert!(
            totals.windows(2).all(|w| w[0] >= w[1]),
            "{}: map {m} hot keys not most-operations-first: {totals:?}",
            v.name
        );
    }
}

/// 1b. `--hot-keys-size 64` (far fewer than the ~4000 distinct keys): `hot_keys_evicted` > 0, so
/// a top list that may miss keys says so; and what is listed is never more than the truth.
fn hot_keys_small_table(v: &Variant) {
    let Some(r) = watch_ok(
        v,
        "watch-hotkeys-table64",
        &["--hot-keys-size", "64"],
        "tests/go/hotkeys",
    ) else {
        return;
    };
    assert_watch_stream(v, &r);
    let fin = final_stats(&r.lines);
    assert!(
        u(fin, "/hot_keys_evicted") > 0,
        "{}: 64 table entries, ~4000 distinct keys, yet hot_keys_evicted == 0: a truncated top \
         list presented as complete\nfinal stats hot_keys: {}",
        v.name,
        fin["hot_keys"]
    );
    let truth = truth_keys(&r.truth);
    let types: BTreeSet<String> = truth.keys().cloned().collect();
    let exact: HashMap<(String, String), (u64, u64)> = truth
        .iter()
        .flat_map(|(t, ks)| {
            ks.iter()
                .map(move |(k, d, a)| ((t.clone(), k.clone()), (*d, *a)))
        })
        .collect();
    for (t, keys) in hot_keys_by_type(v, fin, r.pid, &types) {
        for (k, d, a) in keys {
            let (td, ta) = exact
                .get(&(t.clone(), k.clone()))
                .copied()
                .unwrap_or_else(|| panic!("{}: hot key {k:?} of {t} never used", v.name));
            assert!(
                d <= td && a <= ta,
                "{}: {t} key {k:?}: tool says {d} deletes {a} assigns, truth {td} / {ta}",
                v.name
            );
        }
    }
    // Kernel totals are unaffected by the hot-key table.
    let sum = summary(&r.lines);
    for (op, n) in truth_total(&r.truth) {
        assert!(
            summary_op(sum, op) >= n,
            "{}: ops.{op} < truth {n}: {sum}",
            v.name
        );
    }
    assert_eq!(
        main_rows(fin, r.pid),
        truth_callers(&r.truth),
        "{}: main.* rows",
        v.name
    );
}

/// 1c. `--top 7`: 7 keys per map, the truth's top 7.
fn hot_keys_top_flag(v: &Variant) {
    let Some(r) = watch_ok(v, "watch-hotkeys-top7", &["--top", "7"], "tests/go/hotkeys") else {
        return;
    };
    let truth = truth_keys(&r.truth);
    let types: BTreeSet<String> = truth.keys().cloned().collect();
    let fin = final_stats(&r.lines);
    let got = hot_keys_by_type(v, fin, r.pid, &types);
    for (t, keys) in &truth {
        let want: Vec<_> = keys.iter().take(7).cloned().collect();
        assert_eq!(
            got.get(t).cloned().unwrap_or_default(),
            want,
            "{}: --top 7 of {t}",
            v.name
        );
    }
}

/// 1d. A storm of one-off keys 50 times the table (`--hot-keys-size 1024`, `keystorm`): the
/// table gives up the least-used ways, so the five hot keys stay, with counts exact from their
/// first operation to their last, while the storm is counted as evicted.
fn hot_keys_survive_storm(v: &Variant) {
    let Some(r) = watch_ok(
        v,
        "watch-keystorm",
        &["--hot-keys-size", "1024"],
        "tests/go/keystorm",
    ) else {
        return;
    };
    assert_storm_hot_keys(v, &r, "after the storm");
}

/// 1e. The storm first, then the hot keys: they must get into the table the storm filled, and
/// bring the operations they had while waiting at its door (keystorm pins its map work to one
/// CPU, where the agent's doorkeeper keeps them).
fn hot_keys_after_storm(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "watch-keystorm-late",
        &[
            "watch",
            "-o",
            "json",
            "--interval",
            "500ms",
            "--hot-keys-size",
            "1024",
        ],
        "tests/go/keystorm",
        true,
        &["50000", "late"],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert!(r.status.success(), "{}: tool failed\n{}", v.name, r.ctx());
    assert_storm_hot_keys(v, &r, "that came after the storm");
}

/// keystorm's 5 hot keys are the table's top 5 with their exact counts, and the storm of one-off
/// keys through a 1024-key table is counted as kept out of it.
fn assert_storm_hot_keys(v: &Variant, r: &Run, when: &str) {
    assert_watch_stream(v, r);
    let want: Vec<(String, u64, u64)> = truth_of_kind(&r.truth, "key")
        .iter()
        .map(|k| {
            (
                st(k, "/key").unwrap().to_string(),
                u(k, "/deletes"),
                u(k, "/assigns"),
            )
        })
        .collect();
    assert_eq!(
        want.len(),
        5,
        "keystorm's truth names 5 hot keys: {:?}",
        r.truth
    );
    let fin = final_stats(&r.lines);
    let storm = truth_total(&r.truth)["delete"] - want.iter().map(|k| k.1).sum::<u64>();
    assert!(
        u(fin, "/hot_keys_evicted") + 1024 >= storm,
        "{}: {storm} one-off keys through a 1024-key table, yet only {} evictions counted",
        v.name,
        fin["hot_keys_evicted"]
    );
    let types: BTreeSet<String> = ["map[string]main.tally".to_string()].into();
    let got = hot_keys_by_type(v, fin, r.pid, &types);
    assert_eq!(
        got.get("map[string]main.tally")
            .cloned()
            .unwrap_or_default(),
        want,
        "{}: hot keys {when} (key, deletes, assigns), most operations first\n{}",
        v.name,
        r.ctx()
    );
}

/// 1f. `--hot-keys-size 0`: no hot keys and no key reads, the rows as exact as ever.
fn hot_keys_off(v: &Variant) {
    let Some(r) = watch_ok(
        v,
        "watch-hotkeys-off",
        &["--hot-keys-size", "0"],
        "tests/go/hotkeys",
    ) else {
        return;
    };
    assert_watch_stream(v, &r);
    for s in stats_lines(&r.lines) {
        assert!(
            arr(s, "hot_keys").is_empty() && arr(s, "map_keys").is_empty(),
            "{}: hot keys are off, yet: {s}",
            v.name
        );
        assert_eq!(u(s, "/hot_keys_evicted"), 0, "{}: {s}", v.name);
    }
    let fin = final_stats(&r.lines);
    let (got, want) = (main_rows(fin, r.pid), truth_callers(&r.truth));
    assert_eq!(
        got,
        want,
        "{}: main.* rows\n{}",
        v.name,
        diff_counts(&got, &want)
    );
}

/// 2. Rows: per op, the rows' counts add up to `ops` (when every row fit in the kernel table),
/// and the `main.*` rows are exactly the truth's call sites and counts.
fn rows_match_truth(v: &Variant) {
    let Some(r) = hotkeys_run(v) else { return };
    assert_rows_match_truth(v, &r);
}

/// 2a. `-o yaml`: the same stream as YAML documents, rows as exact.
fn rows_in_yaml(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "watch-hotkeys-yaml",
        &["watch", "-o", "yaml", "--interval", "500ms"],
        "tests/go/hotkeys",
        true,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert_rows_match_truth(v, &r);
}

/// 2a. The same with a row table of one set (MAPGUARD_ROW_SETS=1): eight rows fit, the rest go
/// to the overflow hash, and every row is still exact.
fn rows_overflow_exact(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "watch-hotkeys-rowsets1",
        // Per pc: the kernel's own rows, which are what fill the set.
        &["watch", "-o", "json", "--by-pc", "--interval", "500ms"],
        "tests/go/hotkeys",
        true,
        &[],
        TIMEOUT,
        &[("MAPGUARD_ROW_SETS", "1")],
    ) else {
        return;
    };
    let rows = arr(final_stats(&r.lines), "rows").len();
    assert!(
        rows > 8,
        "{}: {rows} rows fit the 8 ways of a one-set table: the overflow hash went untested",
        v.name
    );
    assert_rows_match_truth(v, &r);
}

fn assert_rows_match_truth(v: &Variant, r: &Run) {
    assert!(r.status.success(), "{}: tool failed\n{}", v.name, r.ctx());
    let fin = final_stats(&r.lines);
    let untracked = u(fin, "/rows_untracked");
    if untracked == 0 {
        for op in OPS {
            let rows: u64 = arr(fin, "rows")
                .iter()
                .filter(|x| st(x, "/op") == Some(op))
                .map(|x| u(x, "/count"))
                .sum();
            assert_eq!(
                rows,
                u(fin, &format!("/ops/{op}")),
                "{}: sum of {op} rows != stats ops.{op} with rows_untracked == 0\nrows: {}",
                v.name,
                fin["rows"]
            );
        }
    } else {
        eprintln!(
            "{}: rows_untracked = {untracked}: row sums not compared",
            v.name
        );
    }
    let want = truth_callers(&r.truth);
    let got = main_rows(fin, r.pid);
    if untracked == 0 {
        assert!(
            got == want,
            "{}: main.* rows (map_type, func, line, op) -> count differ from the truth:\n{}",
            v.name,
            diff_counts(&got, &want)
        );
    } else {
        for (k, g) in &got {
            assert_eq!(Some(g), want.get(k), "{}: row {k:?}", v.name);
        }
    }
    for row in arr(fin, "rows") {
        if st(row, "/caller/func").is_some_and(|f| f.starts_with("main.")) {
            assert!(
                st(row, "/caller/file").is_some_and(|f| f.ends_with("hotkeys/main.go")),
                "{}: caller.file: {row}",
                v.name
            );
        }
    }
    // Kernel totals: at least package main's.
    let sum = summary(&r.lines);
    for (op, n) in truth_total(&r.truth) {
        assert!(
            summary_op(sum, op) >= n && summary_op(sum, op) <= n + 5000,
            "{}: summary ops.{op} vs truth {n}: {sum}",
            v.name
        );
    }
    // Interval lines are consistent with the final one: a main.* row never exceeds the truth.
    for s in stats_lines(&r.lines) {
        for (k, g) in main_rows(s, r.pid) {
            let w = want.get(&k).copied().unwrap_or(0);
            assert!(g <= w, "{}: interval row {k:?} = {g} > truth {w}", v.name);
        }
    }
}

/// 2b. A program that exits before the first interval: the one (final) stats line still names
/// map types and callers (a PIE's load bias must be known without the live process), and its
/// rows and hot keys are exact.
fn rows_after_early_exit(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "watch-hotkeys-early-exit",
        &["watch", "-o", "json", "--interval", "60s"],
        "tests/go/hotkeys",
        true,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert!(r.status.success(), "{}: tool failed\n{}", v.name, r.ctx());
    assert_watch_stream(v, &r);
    assert_eq!(
        stats_lines(&r.lines).len(),
        1,
        "{}: --interval 60s, a ~1.5 s program: only the final stats line",
        v.name
    );
    let fin = final_stats(&r.lines);
    let unresolved: Vec<&Value> = arr(fin, "rows")
        .iter()
        .filter(|x| x.get("caller").is_none_or(Value::is_null) || st(x, "/map_type").is_none())
        .collect();
    let want = truth_callers(&r.truth);
    let got = main_rows(fin, r.pid);
    assert!(
        got == want,
        "{}: main.* rows of the final stats (process already gone) differ from the truth:\n{}\
         rows without caller or map_type: {} of {}, e.g. {:?}",
        v.name,
        diff_counts(&got, &want),
        unresolved.len(),
        arr(fin, "rows").len(),
        unresolved.first()
    );
    let truth = truth_keys(&r.truth);
    let types: BTreeSet<String> = truth.keys().cloned().collect();
    let hot = hot_keys_by_type(v, fin, r.pid, &types);
    for (t, keys) in &truth {
        let want: Vec<_> = keys.iter().take(5).cloned().collect();
        assert_eq!(
            hot.get(t).cloned().unwrap_or_default(),
            want,
            "{}: hot keys of {t} after the process exited",
            v.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. racer: the concurrent write is reported, naming both goroutines and callers, before the
// runtime's fatal error.
//
// Two detectors (README, "Concurrent writes and --track-writers"): always on, the map's write
// flag checked at each write's entry (cheap; may miss a race, and does not know the other
// writer); with `--track-writers`, writers in flight counted per map with entry + RET probes
// (deterministic, names the other goroutine and its caller, and times deletes). The contract's
// "names both goroutines" is tested with `--track-writers`; the default detector is held to what
// it reports being right.

const RACER_MAP_TYPE: &str = "map[int]int";
const RACER_FUNCS: [&str; 2] = ["main.write", "main.remove"];

/// What every racer run shows: the runtime's fatal line, exit status 2, the tool itself fine;
/// returns the index of the fatal line.
fn assert_racer_died(v: &Variant, r: &Run) -> usize {
    assert!(
        !r.stderr.contains("racer: no crash"),
        "{}: the racer ran 30 s without the Go runtime noticing a concurrent write (under the \
         tool; without it, it dies in milliseconds)\n{}",
        v.name,
        r.ctx()
    );
    let sum = summary(&r.lines);
    assert_eq!(
        sum.get("exit_status").and_then(Value::as_i64),
        Some(2),
        "{}: the racer dies with exit status 2\n{}",
        v.name,
        r.ctx()
    );
    // The tool exits as the command did (the summary above, the tool's last
    // line, shows that the tool itself did not fail).
    assert_eq!(
        r.status.code(),
        Some(2),
        "{}: the tool exits with the racer's own status: {}\n{}",
        v.name,
        r.status,
        r.ctx()
    );
    let fatal = of_kind(&r.lines, "fatal")
        .into_iter()
        .find(|f| st(f, "/message") == Some("concurrent map writes"))
        .unwrap_or_else(|| {
            panic!(
                "{}: no fatal line with message \"concurrent map writes\"; fatal lines: {:?}\n{}",
                v.name,
                of_kind(&r.lines, "fatal"),
                r.ctx()
            )
        });
    assert_eq!(u(fatal, "/pid"), r.pid, "{}: {fatal}", v.name);
    position(&r.lines, fatal)
}

/// Checks one concurrent_write line of the racer; `both`: it must also name the other goroutine
/// and its caller.
fn racer_cw_ok(r: &Run, c: &Value, fatal_i: usize, both: bool) -> Result<(), String> {
    if c.get("pid").and_then(Value::as_u64) != Some(r.pid) {
        return Err("pid".into());
    }
    if st(c, "/map_type") != Some(RACER_MAP_TYPE) {
        return Err(format!("map_type is not {RACER_MAP_TYPE}"));
    }
    if !st(c, "/map").is_some_and(|m| m.starts_with("0x")) {
        return Err("map is not a hex address".into());
    }
    if !st(c, "/op").is_some_and(|o| o == "assign" || o == "delete") {
        return Err("op".into());
    }
    if !c.get("ts").map(Value::is_u64).unwrap_or(false) {
        return Err("ts".into());
    }
    let (g, o) = (
        c.get("goid").and_then(Value::as_u64),
        c.get("other_goid").and_then(Value::as_u64),
    );
    match (g, o, both) {
        (Some(g), Some(o), _) if g != o => {}
        (Some(_), None, false) => {}
        _ => {
            return Err(format!(
                "goid {g:?} / other_goid {o:?}: want two different goroutines"
            ))
        }
    }
    let mut fields = vec!["/caller"];
    if both || !c.get("other_caller").is_none_or(Value::is_null) {
        fields.push("/other_caller");
    }
    for f in fields {
        if !st(c, &format!("{f}/func")).is_some_and(|x| RACER_FUNCS.contains(&x)) {
            return Err(format!("{f}.func not in {RACER_FUNCS:?}"));
        }
        if !st(c, &format!("{f}/file")).is_some_and(|x| x.ends_with("racer/main.go")) {
            return Err(format!("{f}.file is not racer/main.go"));
        }
    }
    if position(&r.lines, c) > fatal_i {
        return Err("after the fatal line".into());
    }
    Ok(())
}

/// With `--track-writers`: at least one concurrent_write line names both goroutines and both
/// callers, before the fatal line; and every concurrent_write line is right.
fn assert_racer_reported(v: &Variant, r: &Run) {
    let fatal_i = assert_racer_died(v, r);
    let cws = of_kind(&r.lines, "concurrent_write");
    let why = |both: bool| -> String {
        cws.iter()
            .filter_map(|c| {
                racer_cw_ok(r, c, fatal_i, both)
                    .err()
                    .map(|e| format!("  {c}\n    -> {e}"))
            })
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        cws.iter().any(|c| racer_cw_ok(r, c, fatal_i, true).is_ok()),
        "{}: no concurrent_write line for {RACER_MAP_TYPE} naming both goroutines and both \
         callers ({RACER_FUNCS:?}) before the fatal line (at {fatal_i}); {} concurrent_write \
         lines:\n{}\n{}",
        v.name,
        cws.len(),
        why(true),
        r.ctx()
    );
    assert!(
        cws.iter()
            .all(|c| racer_cw_ok(r, c, usize::MAX, false).is_ok()),
        "{}: wrong concurrent_write lines:\n{}",
        v.name,
        why(false)
    );
}

/// Without `--track-writers`: whatever concurrent_write lines there are (the flag check may miss
/// the race) are right: the racer's map, one of its callers, a known goroutine, before the fatal
/// line; a named other goroutine is a different one.
fn assert_racer_default(v: &Variant, r: &Run) {
    let fatal_i = assert_racer_died(v, r);
    let cws = of_kind(&r.lines, "concurrent_write");
    for c in &cws {
        if let Err(e) = racer_cw_ok(r, c, fatal_i, false) {
            panic!(
                "{}: concurrent_write line {c}\n  -> {e}\n{}",
                v.name,
                r.ctx()
            );
        }
    }
    eprintln!(
        "{}: default detector (no --track-writers): {} concurrent_write lines before the fatal one",
        v.name,
        cws.len()
    );
}

/// watch: stats count the concurrent writes (at least the lines shown).
fn assert_racer_stats(v: &Variant, r: &Run) {
    assert_watch_stream(v, r);
    let fin = final_stats(&r.lines);
    let n = of_kind(&r.lines, "concurrent_write").len() as u64;
    assert!(
        u(fin, "/concurrent_writes") >= n,
        "{}: stats.concurrent_writes {} < concurrent_write lines {n}",
        v.name,
        fin["concurrent_writes"]
    );
}

/// 3a. `trace -o json --track-writers -- racer`.
fn racer_trace(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "trace-racer",
        &["trace", "-o", "json", "--track-writers"],
        "tests/go/racer",
        false,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert_racer_reported(v, &r);
    // The events of the racing writes carry the flag too.
    assert!(
        events(&r.lines)
            .iter()
            .any(|e| e.get("concurrent_write").and_then(Value::as_bool) == Some(true)),
        "{}: no event with concurrent_write: true\n{}",
        v.name,
        r.ctx()
    );
}

/// 3b. `watch -o json --track-writers -- racer`: the same lines, and stats count them.
fn racer_watch(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "watch-racer",
        &[
            "watch",
            "-o",
            "json",
            "--interval",
            "500ms",
            "--track-writers",
        ],
        "tests/go/racer",
        false,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert_racer_reported(v, &r);
    assert_racer_stats(v, &r);
    assert!(
        u(final_stats(&r.lines), "/concurrent_writes") >= 1,
        "{}: stats.concurrent_writes == 0 after a reported concurrent write",
        v.name
    );
}

/// 3c. `trace -o json -- racer` (default detector).
fn racer_trace_default(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "trace-racer-default",
        &["trace", "-o", "json"],
        "tests/go/racer",
        false,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert_racer_default(v, &r);
}

/// 3d. `watch -o json -- racer` (default detector).
fn racer_watch_default(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "watch-racer-default",
        &["watch", "-o", "json", "--interval", "500ms"],
        "tests/go/racer",
        false,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert_racer_default(v, &r);
    assert_racer_stats(v, &r);
}

// ---------------------------------------------------------------------------------------------
// 4. mutexwriters: heavy, correct writers: no concurrent write reported, exact counts.

/// `watch -o json [--track-writers] -- mutexwriters TRUTH MODE TOTAL`.
fn mutexwriters(v: &Variant, mode: &str, track_writers: bool, total_ops: u64) {
    let mut args = vec!["watch", "-o", "json", "--interval", "1s"];
    if track_writers {
        args.push("--track-writers");
    }
    let total_s = total_ops.to_string();
    let tag = format!(
        "watch-mutexwriters-{mode}{}",
        if track_writers { "-tw" } else { "" }
    );
    let Some(r) = run_program_t(
        v,
        &tag,
        &args,
        "tests/go/mutexwriters",
        true,
        &[mode, &total_s],
        Duration::from_secs(900),
        &[],
    ) else {
        return;
    };
    let what = format!("{} ({mode}, track_writers={track_writers})", v.name);
    assert!(r.status.success(), "{what}: tool failed\n{}", r.ctx());
    let sum = summary(&r.lines);
    assert_eq!(
        sum.get("exit_status").and_then(Value::as_i64),
        Some(0),
        "{what}: {sum}"
    );
    assert_watch_stream(v, &r);
    let cws = of_kind(&r.lines, "concurrent_write");
    assert!(
        cws.is_empty(),
        "{what}: {} concurrent_write lines for correctly locked / unshared maps, first: {}",
        cws.len(),
        cws[0]
    );
    assert!(
        of_kind(&r.lines, "fatal").is_empty(),
        "{what}: fatal lines\n{}",
        r.ctx()
    );
    for s in stats_lines(&r.lines) {
        assert_eq!(
            u(s, "/concurrent_writes"),
            0,
            "{what}: stats.concurrent_writes"
        );
    }
    let total = truth_total(&r.truth);
    assert_eq!(
        total.values().sum::<u64>(),
        total_ops,
        "mutexwriters changed? {total:?}"
    );
    let all: u64 = OPS.iter().map(|op| summary_op(sum, op)).sum();
    assert!(
        all >= total_ops,
        "{what}: ops total {all} < {total_ops}: {sum}"
    );
    for (op, n) in &total {
        let got = summary_op(sum, op);
        assert!(
            got >= *n && got <= n + 5000,
            "{what}: summary ops.{op} = {got}, the program did {n}: {sum}"
        );
    }
    let fin = final_stats(&r.lines);
    let want = truth_callers(&r.truth);
    let got = main_rows(fin, r.pid);
    assert!(
        got == want,
        "{what}: main.* rows differ from the truth:\n{}",
        diff_counts(&got, &want)
    );
    if track_writers {
        // Every delete timed (all of them on the program's map type).
        let mt = st(truth_of_kind(&r.truth, "mutexwriters")[0], "/map_type")
            .unwrap()
            .to_string();
        let timed: u64 = arr(fin, "delete_latency")
            .iter()
            .filter(|h| st(h, "/map_type") == Some(mt.as_str()))
            .map(|h| u(h, "/count"))
            .sum();
        assert_eq!(
            timed, total["delete"],
            "{what}: delete_latency count of {mt}"
        );
    }
}

/// 4a. 8 goroutines, one shared map, every write under a sync.Mutex; 5,000,000 writes.
fn mutex_writers_shared(v: &Variant) {
    mutexwriters(v, "shared", false, 5_000_000);
}

/// 4b. 8 goroutines, each on its own map, no lock; 5,000,000 writes.
fn mutex_writers_own(v: &Variant) {
    mutexwriters(v, "own", false, 5_000_000);
}

/// 4c. Shared and locked, with `--track-writers` (in-flight counting must never see two
/// writers): 1,000,000 writes, as each RET probe is single-stepped (~20 µs).
fn mutex_writers_shared_tracked(v: &Variant) {
    mutexwriters(v, "shared", true, 1_000_000);
}

/// 4d. One map per goroutine, with `--track-writers`: 1,000,000 writes.
fn mutex_writers_own_tracked(v: &Variant) {
    mutexwriters(v, "own", true, 1_000_000);
}

// ---------------------------------------------------------------------------------------------
// 5. recursion: stacks copied mid-call; the target survives and every delete is timed.

fn recursion_run(v: &Variant, track_writers: bool) -> Option<Run> {
    let mut args = vec!["watch", "-o", "json", "--interval", "500ms"];
    if track_writers {
        args.push("--track-writers");
    }
    let r = run_program_t(
        v,
        if track_writers {
            "watch-recursion-tw"
        } else {
            "watch-recursion"
        },
        &args,
        "tests/go/recursion",
        true,
        &[],
        Duration::from_secs(600),
        &[],
    )?;
    for bad in ["fatal error", "unexpected return pc", "panic:", "SIGSEGV"] {
        assert!(
            !r.stderr.contains(bad),
            "{}: the traced program crashed ({bad:?})\n{}",
            v.name,
            r.ctx()
        );
    }
    assert!(r.status.success(), "{}: tool failed\n{}", v.name, r.ctx());
    let sum = summary(&r.lines);
    assert_eq!(
        sum.get("exit_status").and_then(Value::as_i64),
        Some(0),
        "{}: the recursion program must survive being probed\n{}",
        v.name,
        r.ctx()
    );
    assert_watch_stream(v, &r);
    let fin = final_stats(&r.lines);
    let want = truth_callers(&r.truth);
    let got = main_rows(fin, r.pid);
    assert!(
        got == want,
        "{}: main.* rows differ from the truth:\n{}",
        v.name,
        diff_counts(&got, &want)
    );
    for h in arr(fin, "delete_latency") {
        let count = u(h, "/count");
        let buckets = arr(h, "buckets");
        if count > 0 {
            assert!(
                !buckets.is_empty(),
                "{}: histogram without buckets: {h}",
                v.name
            );
            assert!(u(h, "/sum_ns") > 0, "{}: sum_ns: {h}", v.name);
        }
        let in_buckets: u64 = buckets.iter().map(|b| u(b, "/count")).sum();
        assert_eq!(in_buckets, count, "{}: bucket counts vs count: {h}", v.name);
        let les: Vec<u64> = buckets.iter().map(|b| u(b, "/le_ns")).collect();
        assert!(
            les.windows(2).all(|w| w[0] < w[1]),
            "{}: le_ns not increasing: {les:?}",
            v.name
        );
    }
    Some(r)
}

/// (map type, deletes) of the recursion truth, and the final stats' delete rows and timed
/// deletes of that type.
fn recursion_counts(r: &Run) -> (String, u64, u64, u64, Vec<Value>) {
    let rec = truth_of_kind(&r.truth, "recursion");
    assert_eq!(rec.len(), 1, "truth: one recursion line");
    let map_type = st(rec[0], "/map_type").unwrap().to_string();
    let deletes = u(rec[0], "/deletes");
    let fin = final_stats(&r.lines);
    let hists: Vec<Value> = arr(fin, "delete_latency")
        .iter()
        .filter(|h| st(h, "/map_type") == Some(map_type.as_str()))
        .cloned()
        .collect();
    for h in &hists {
        assert_eq!(u(h, "/pid"), r.pid, "{h}");
    }
    let timed: u64 = hists.iter().map(|h| u(h, "/count")).sum();
    let row_deletes: u64 = arr(fin, "rows")
        .iter()
        .filter(|x| st(x, "/map_type") == Some(map_type.as_str()) && st(x, "/op") == Some("delete"))
        .map(|x| u(x, "/count"))
        .sum();
    (map_type, deletes, row_deletes, timed, hists)
}

/// 5a. With `--track-writers` (RET probes while stacks move): the target survives, and the
/// delete-latency histogram of the program's map type counts exactly its deletes.
fn recursion_latency(v: &Variant) {
    let Some(r) = recursion_run(v, true) else {
        return;
    };
    let (map_type, deletes, row_deletes, timed, hists) = recursion_counts(&r);
    assert_eq!(
        row_deletes, deletes,
        "{}: delete rows of {map_type}",
        v.name
    );
    assert_eq!(
        timed, deletes,
        "{}: delete_latency count for {map_type} vs the program's {deletes} deletes \
         (a delete whose stack moved mid-call lost or double-counted?)\nhistograms: {hists:?}",
        v.name
    );
    assert!(
        of_kind(&r.lines, "concurrent_write").is_empty(),
        "{}: each goroutine writes its own map: no concurrent write\n{}",
        v.name,
        r.ctx()
    );
    assert_eq!(
        u(final_stats(&r.lines), "/concurrent_writes"),
        0,
        "{}",
        v.name
    );
}

/// 5b. Default probes: the target survives, rows exact; a delete histogram, if any, is never
/// partial.
fn recursion_default(v: &Variant) {
    let Some(r) = recursion_run(v, false) else {
        return;
    };
    let (map_type, deletes, row_deletes, timed, hists) = recursion_counts(&r);
    assert_eq!(
        row_deletes, deletes,
        "{}: delete rows of {map_type}",
        v.name
    );
    assert!(
        timed == 0 || timed == deletes,
        "{}: delete_latency of {map_type} counts {timed} of {deletes} deletes: {hists:?}",
        v.name
    );
}

// ---------------------------------------------------------------------------------------------
// 6. trace --max-events-per-sec: few events, exact counts.

/// Largest burst the kernel token bucket may let through at once: one second's worth (assumed).
const RATE: u64 = 1000;

fn rate_limited_trace(v: &Variant) {
    let Some(r) = run_program_t(
        v,
        "trace-rate",
        &["trace", "-o", "json", "--max-events-per-sec", "1000"],
        "tests/go/maptruth",
        true,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert!(r.status.success(), "{}: tool failed\n{}", v.name, r.ctx());
    let sum = summary(&r.lines);
    assert_eq!(
        sum.get("exit_status").and_then(Value::as_i64),
        Some(0),
        "{}: {sum}",
        v.name
    );
    let evs = events(&r.lines);
    let emitted = u(sum, "/events_emitted");
    assert_eq!(
        emitted,
        evs.len() as u64,
        "{}: events_emitted vs event lines: {sum}",
        v.name
    );
    let limited = sum
        .get("rate_limited")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            panic!("{}: summary without rate_limited: {sum}", v.name);
        });
    assert!(
        limited > 0,
        "{}: maptruth does ~50,000 ops in well under a second: rate_limited must be > 0: {sum}",
        v.name
    );
    let secs = u(sum, "/duration_ms") as f64 / 1000.0;
    let bound = (RATE as f64) * secs * 1.5 + RATE as f64;
    assert!(
        (emitted as f64) <= bound,
        "{}: --max-events-per-sec {RATE} over {secs:.2} s emitted {emitted} events (bound {bound:.0}): \
         {sum}",
        v.name
    );
    // Every operation is accounted for exactly once.
    let total: u64 = OPS.iter().map(|op| summary_op(sum, op)).sum();
    let accounted =
        emitted + u(sum, "/drops") + u(sum, "/sampled_out") + limited + u(sum, "/filtered_out");
    assert_eq!(
        accounted, total,
        "{}: events_emitted + drops + sampled_out + rate_limited + filtered_out != ops total: {sum}",
        v.name
    );
    // Kernel counts are unaffected: at least the truth's, and the runtime adds only a few.
    for (op, n) in truth_counts(&r.truth) {
        let got = summary_op(sum, &op);
        assert!(
            got >= n && got <= n + 5000,
            "{}: summary ops.{op}={got}, truth {n}: {sum}",
            v.name
        );
    }
    // What was emitted is real.
    assert_emitted_are_real(&format!("{}: emitted", v.name), &r.lines, &r.truth, true);
}

// ---------------------------------------------------------------------------------------------
// 7. --metrics-addr: Prometheus text on GET /metrics while watch runs.

/// `watch --metrics-addr 127.0.0.1:PORT --track-writers -- demo 15s` (the delete-duration
/// histogram needs `--track-writers`): GET /metrics is a 200 with the op counters, the demo's
/// delete durations and the drop counter, and passes `promtool check metrics` when promtool is
/// installed (required under MAPGUARD_REQUIRE_BPF=1). The port was free a moment before.
fn metrics_endpoint(v: &Variant) {
    let Some(demo) = traceable(v, "metrics", "examples/demo") else {
        return;
    };
    let promtool = find_in_path("promtool");
    if promtool.is_none() && require_bpf() {
        panic!("MAPGUARD_REQUIRE_BPF=1 but promtool is not installed (Debian: prometheus)");
    }
    let port = free_local_port();
    let addr = format!("127.0.0.1:{port}");
    let d = demo.to_string_lossy().into_owned();
    let mut mg = Mapguard::spawn(&[
        "watch",
        "-o",
        "json",
        "--interval",
        "500ms",
        "--metrics-addr",
        &addr,
        "--track-writers", // delete durations need the RET probes
        "--",
        &d,
        "15s",
    ]);
    mg.wait_for("attached", TIMEOUT, |l| kind_is(l, "attached"));
    mg.wait_for("stats with deletes", Duration::from_secs(30), |l| {
        kind_is(l, "stats")
            && l.pointer("/ops/delete")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                > 0
    });
    let required = [
        "go_map_delete_duration_seconds_bucket{",
        "go_map_delete_duration_seconds_count{",
        "mapguard_events_dropped_total",
    ];
    let value = |l: &str| l.rsplit(' ').next().and_then(|x| x.parse::<f64>().ok());
    let has_delete_ops = |body: &str| {
        body.lines().any(|l| {
            l.starts_with("go_map_ops_total{")
                && l.contains("op=\"delete\"")
                && value(l).is_some_and(|x| x > 0.0)
        })
    };
    // The demo's deletes (map[string]main.User, main.logout) are timed: a +Inf bucket > 0.
    let has_demo_latency = |body: &str| {
        body.lines().any(|l| {
            l.starts_with("go_map_delete_duration_seconds_bucket{")
                && l.contains("map[string]main.User")
                && l.contains("le=\"+Inf\"")
                && value(l).is_some_and(|x| x > 0.0)
        })
    };
    let missing = |body: &str| -> Vec<String> {
        let mut m: Vec<String> = required
            .iter()
            .filter(|r| !body.contains(*r))
            .map(|r| r.to_string())
            .collect();
        if !has_delete_ops(body) {
            m.insert(0, "go_map_ops_total{..op=\"delete\"..} > 0".into());
        }
        if !has_demo_latency(body) {
            m.push(
                "go_map_delete_duration_seconds_bucket{..map[string]main.User..le=\"+Inf\"} > 0"
                    .into(),
            );
        }
        m
    };
    // The exposition is refreshed every interval: give it a few.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_ok: Option<HttpResponse> = None;
    let mut last_err: Option<String> = None;
    let resp = loop {
        match http_get(&addr, "/metrics", Duration::from_secs(5)) {
            Ok(resp) if resp.status == 200 && missing(&resp.body).is_empty() => break resp,
            Ok(resp) => last_ok = Some(resp),
            Err(e) => last_err = Some(e.to_string()),
        }
        if Instant::now() >= deadline {
            let stderr = mg.stderr();
            match &last_ok {
                Some(r) => panic!(
                    "{}: GET http://{addr}/metrics for 10 s: status {}, missing {:?}\nbody:\n{}\n\
                     stderr:\n{stderr}",
                    v.name,
                    r.status,
                    missing(&r.body),
                    r.body
                ),
                None => panic!(
                    "{}: GET http://{addr}/metrics never answered: {last_err:?}\nstderr:\n{stderr}",
                    v.name
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if let Some(ct) = resp.header("content-type") {
        assert!(
            ct.starts_with("text/plain"),
            "{}: Content-Type {ct:?}",
            v.name
        );
    }
    let demo_series = resp
        .body
        .lines()
        .any(|l| l.starts_with("go_map_ops_total{") && l.contains("map[string]main.User"));
    assert!(
        demo_series,
        "{}: no go_map_ops_total series for map[string]main.User:\n{}",
        v.name, resp.body
    );
    match &promtool {
        Some(p) => {
            let mut cmd = Command::new(p);
            cmd.args(["check", "metrics"]);
            let (status, out, err) = run_with_input(cmd, &resp.body);
            assert!(
                status.success(),
                "{}: promtool check metrics failed ({status}):\n{out}{err}\nbody:\n{}",
                v.name,
                resp.body
            );
        }
        None => {
            eprintln!("\n==================== NOTE: promtool not installed: /metrics not linted\n")
        }
    }
    mg.signal("INT");
    let (status, lines, stderr) = mg.finish(TIMEOUT);
    assert!(
        status.success(),
        "{}: watch after Ctrl-C: {status}\n{stderr}",
        v.name
    );
    summary(&lines);
}

// ---------------------------------------------------------------------------------------------
// 8. -o table: blocks of text, no JSON.

fn table_blocks(v: &Variant) {
    let Some(demo) = traceable(v, "watch-table", "examples/demo") else {
        return;
    };
    let d = demo.to_string_lossy().into_owned();
    let (status, stdout, stderr) = run_mapguard_raw(
        &[
            "watch",
            "-o",
            "table",
            "--interval",
            "500ms",
            "--duration",
            "3s",
            "--",
            &d,
            "2s",
        ],
        TIMEOUT,
    );
    assert!(
        status.success(),
        "{}: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        v.name
    );
    for l in stdout.lines() {
        assert!(
            !l.trim_start().starts_with('{'),
            "{}: -o table printed JSON: {l}\nstdout:\n{stdout}",
            v.name
        );
    }
    for want in ["map[string]main.User", "main.logout"] {
        assert!(
            stdout.contains(want),
            "{}: no table block mentions {want}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            v.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One test function per (variant, property), so a failure names both.

variant_tests! {
    go1_22 => "go1.22": [hot_keys_exact, hot_keys_small_table, hot_keys_survive_storm,
        hot_keys_after_storm, rows_match_truth,
        rows_after_early_exit, racer_trace, racer_watch, racer_trace_default, racer_watch_default,
        mutex_writers_shared, mutex_writers_own, mutex_writers_shared_tracked, recursion_latency,
        recursion_default, rate_limited_trace, table_blocks];
    go1_24_noswissmap => "go1.24-noswissmap": [hot_keys_exact, rows_match_truth, racer_trace,
        racer_watch, racer_trace_default, racer_watch_default, mutex_writers_shared,
        mutex_writers_own, mutex_writers_shared_tracked, recursion_latency, recursion_default];
    go1_25 => "go1.25": [hot_keys_exact, hot_keys_small_table, hot_keys_top_flag,
        hot_keys_survive_storm, hot_keys_after_storm, hot_keys_off, rows_match_truth,
        rows_overflow_exact, rows_in_yaml,
        rows_after_early_exit, racer_trace, racer_watch, racer_trace_default, racer_watch_default,
        mutex_writers_shared, mutex_writers_own, mutex_writers_shared_tracked,
        mutex_writers_own_tracked, recursion_latency, recursion_default, rate_limited_trace,
        metrics_endpoint, table_blocks];
    go1_27 => "go1.27": [hot_keys_exact, rows_match_truth, racer_trace, racer_watch,
        racer_trace_default, racer_watch_default, mutex_writers_shared, mutex_writers_own,
        mutex_writers_shared_tracked, recursion_latency, recursion_default];
    go1_22_pie => "go1.22-pie": [hot_keys_exact, rows_after_early_exit];
    go1_25_pie_stripped => "go1.25-pie-stripped": [hot_keys_exact, rows_match_truth,
        rows_after_early_exit, racer_trace, racer_watch, racer_trace_default,
        mutex_writers_shared, mutex_writers_shared_tracked, recursion_latency, recursion_default,
        rate_limited_trace];
}

/// The Go programs' own bookkeeping, without the tool: they build and run with the oldest and
/// newest toolchains, exit as documented, and their truth files hold what the tests expect.
#[test]
fn go_programs_self_check() {
    for name in ["go1.21", "go1.27"] {
        let v = variant(name);
        let tmp = TempDir::new(&format!("selfcheck-{name}"));
        let run = |dir: &str, args: &[&OsStr]| -> Option<(ExitStatus, String)> {
            let bin = build_go(&v, Path::new(dir))?;
            let out = Command::new(&bin)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
            assert!(
                out.stdout.is_empty(),
                "{dir} wrote to stdout: {:?}",
                out.stdout
            );
            Some((
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        };
        let t = tmp.join("hotkeys.jsonl");
        let Some((st_, err)) = run("tests/go/hotkeys", &[t.as_os_str()]) else {
            return;
        };
        assert!(st_.success(), "hotkeys [{name}]: {st_}\n{err}");
        let truth = read_truth(&t);
        let keys = truth_keys(&truth);
        assert_eq!(
            keys["map[string]main.score"][0],
            ("hot-1".to_string(), 2000, 3000)
        );
        assert_eq!(keys["map[int64]main.score"][0].0, "9000000001");
        assert_eq!(keys.values().map(Vec::len).sum::<usize>(), 2 * 2007);
        let total = truth_total(&truth);
        let callers: u64 = truth_callers(&truth).values().sum();
        assert_eq!(callers, total.values().sum::<u64>());

        for mode in ["shared", "own"] {
            let t = tmp.join(format!("mw-{mode}.jsonl"));
            let (st_, err) =
                run("tests/go/mutexwriters", &[t.as_os_str(), OsStr::new(mode)]).unwrap();
            assert!(st_.success(), "mutexwriters {mode} [{name}]: {st_}\n{err}");
            let truth = read_truth(&t);
            assert_eq!(truth_total(&truth).values().sum::<u64>(), 5_000_000);
            let t = tmp.join(format!("mw-{mode}-small.jsonl"));
            let (st_, err) = run(
                "tests/go/mutexwriters",
                &[t.as_os_str(), OsStr::new(mode), OsStr::new("1600")],
            )
            .unwrap();
            assert!(
                st_.success(),
                "mutexwriters {mode} 1600 [{name}]: {st_}\n{err}"
            );
            let truth = read_truth(&t);
            assert_eq!(truth_total(&truth).values().sum::<u64>(), 1600);
            assert_eq!(truth_callers(&truth).values().sum::<u64>(), 1600);
        }

        let t = tmp.join("recursion.jsonl");
        let (st_, err) = run("tests/go/recursion", &[t.as_os_str()]).unwrap();
        assert!(st_.success(), "recursion [{name}]: {st_}\n{err}");
        let truth = read_truth(&t);
        let rec = truth_of_kind(&truth, "recursion");
        assert_eq!(st(rec[0], "/map_type"), Some("map[main.rkey]int"));
        assert_eq!(u(rec[0], "/deletes"), truth_total(&truth)["delete"]);

        let (st_, err) = run("tests/go/racer", &[]).unwrap();
        assert_eq!(st_.code(), Some(2), "racer [{name}]: {st_}\n{err}");
        assert!(
            err.contains("concurrent map writes"),
            "racer [{name}]:\n{err}"
        );
    }
}

/// Rows are what they show: one per (pid, map type, caller function,
/// file:line, op), however many call sites that line has; `--by-pc` keeps
/// one row per site, each with its `pc`.
#[test]
fn one_row_per_caller_line() {
    let v = variant("go1.25");
    let Some(bin) = traceable(&v, "one_row_per_caller_line", "tests/go/sameline") else {
        return;
    };
    let bin = bin.to_string_lossy().into_owned();
    let rows_of = |stats: &Value, func: &str, op: &str| -> Vec<Value> {
        stats["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["caller"]["func"] == func && r["op"] == op)
            .cloned()
            .collect()
    };
    let (status, lines, stderr) = run_mapguard(
        &[
            "watch",
            "-o",
            "json",
            "--interval",
            "1s",
            "--",
            &bin,
            "1000",
        ],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stderr}");
    for s in stats_lines(&lines) {
        let mut keys = BTreeSet::new();
        for r in s["rows"].as_array().unwrap() {
            let key = (
                r["pid"].to_string(),
                r["map_type"].to_string(),
                r["caller"].to_string(),
                r["op"].to_string(),
            );
            assert!(keys.insert(key), "two rows share what they show: {r}");
            assert!(r.get("pc").is_none(), "{r}");
        }
    }
    let last = final_stats(&lines);
    let assigns = rows_of(last, "main.twice", "assign");
    assert_eq!(assigns.len(), 1, "{assigns:?}");
    assert_eq!(assigns[0]["count"], 2000);
    let deletes = rows_of(last, "main.gone", "delete");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0]["count"], 2000);

    let (status, lines, stderr) = run_mapguard(
        &[
            "watch",
            "-o",
            "json",
            "--by-pc",
            "--interval",
            "1s",
            "--",
            &bin,
            "1000",
        ],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stderr}");
    let last = final_stats(&lines);
    let assigns = rows_of(last, "main.twice", "assign");
    assert_eq!(assigns.len(), 2, "{assigns:?}");
    assert!(assigns.iter().all(|r| r["count"] == 1000), "{assigns:?}");
    assert_ne!(assigns[0]["pc"], assigns[1]["pc"]);
    assert!(assigns[0]["pc"].as_str().unwrap().starts_with("0x"));
    assert_eq!(
        assigns[0]["caller"], assigns[1]["caller"],
        "same line, two sites"
    );
}

/// Runs `watch ARGS -- widetypes` in a detached tmux of `cols`×`lines` and
/// returns the screen once a frame is drawn, wrapped lines joined (so a
/// line that wrapped shows as one longer than the screen).
fn watch_in_tmux(cols: usize, lines: usize, args: &[&str]) -> Option<Vec<String>> {
    let Some(tmux) = find_in_path("tmux") else {
        skip("tmux not installed (.ci/setup installs it)");
        return None;
    };
    let bin = build_go(&variant("go1.25"), Path::new("tests/go/widetypes"))?;
    let session = format!("mapguard-fit-{}-{cols}x{lines}", std::process::id());
    let mut cmd = vec![
        mapguard_bin().to_string_lossy().into_owned(),
        "watch".into(),
    ];
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd.extend(["--".into(), bin.to_string_lossy().into_owned(), "20".into()]);
    // A tmux server starting while another one exits can refuse a session
    // once (seen in a CI run): the second try is the test's.
    let new_session = || {
        Command::new(&tmux)
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &cols.to_string(),
                "-y",
                &lines.to_string(),
            ])
            // The pane stays after the command ends, so a failure shows on it.
            .arg(format!("{}; sleep 60", cmd.join(" ")))
            .env("TERM", "xterm")
            .status()
            .unwrap()
    };
    let mut st = new_session();
    if !st.success() {
        std::thread::sleep(Duration::from_millis(300));
        st = new_session();
    }
    assert!(st.success(), "tmux new-session");
    let capture = || {
        let out = Command::new(&tmux)
            .args(["capture-pane", "-p", "-J", "-t", &session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A few frames in: hot keys and every caller have shown up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut frames = 0;
    let mut last = String::new();
    while frames < 3 {
        std::thread::sleep(Duration::from_millis(600));
        let now = capture();
        if now.contains("main.") && now != last {
            frames += 1;
        }
        last = now;
        assert!(Instant::now() < deadline, "no watch frame in tmux:\n{last}");
    }
    let _ = Command::new(&tmux)
        .args(["kill-session", "-t", &session])
        .status();
    Some(last.lines().map(str::to_string).collect())
}

/// On a terminal the `watch` table fits the screen: no line wraps, long map
/// types and function names are shortened in the middle with `…`, and the
/// summary, the rates header and the busiest rows stay on screen; `-o wide`
/// keeps every name whole.
#[test]
fn the_table_fits_the_terminal() {
    if !bpf_available_or_skip("the_table_fits_the_terminal") {
        return;
    }
    for (cols, lines) in [(80, 24), (160, 45)] {
        let Some(screen) = watch_in_tmux(cols, lines, &["--interval", "500ms"]) else {
            return;
        };
        let text = screen.join("\n");
        for l in &screen {
            assert!(
                l.chars().count() <= cols,
                "{cols}x{lines}: a line wraps: {l:?}\n{text}"
            );
        }
        assert!(screen.len() <= lines, "{text}");
        assert!(
            screen[0].contains("deletes,") && screen[0].contains("assigns"),
            "{text}"
        );
        let header = screen
            .iter()
            .position(|l| l.contains("MAP TYPE") && l.contains("CALLER"));
        assert!(
            header.is_some_and(|h| h <= 3),
            "{cols}x{lines}: the rates header:\n{text}"
        );
        let rows: Vec<&String> = screen
            .iter()
            .skip(header.unwrap() + 1)
            .take_while(|l| !l.trim().is_empty())
            .collect();
        assert!(rows.len() >= 2, "{cols}x{lines}: the busiest rows:\n{text}");
        let ours: Vec<&&String> = rows.iter().filter(|r| r.contains("main.")).collect();
        assert!(
            ours.len() >= 4,
            "{cols}x{lines}: widetypes' four callers:\n{text}"
        );
        assert!(
            ours.iter().all(|r| r.contains("(main.go:")),
            "file:line stays whole:\n{text}"
        );
        // The rates of every shown row are on screen.
        assert!(
            screen[header.unwrap()].contains("CLEARS/s"),
            "{cols}x{lines}: the rate columns:\n{text}"
        );
        if cols == 80 {
            assert!(
                ours.iter().all(|r| r.contains('…')),
                "names shortened:\n{text}"
            );
        }
    }
    let Some(screen) = watch_in_tmux(
        100,
        80,
        &["--interval", "500ms", "--top", "1", "-o", "wide"],
    ) else {
        return;
    };
    let text = screen.join("\n");
    assert!(
        text.contains("rememberTheShoppingCartOfThisSessionForLater"),
        "{text}"
    );
    assert!(
        text.contains("SessionIdentifierForTheCheckoutService"),
        "{text}"
    );
}

/// A hot key is (process, map, map type, key): when the GC gives a freed
/// map[string]int's address to a map[string]bool, the same key in each is
/// its own hot key, with its own counts, and each map its own key totals.
#[test]
fn hot_keys_tell_maps_apart_by_type() {
    if !bpf_available_or_skip("hot_keys_tell_maps_apart_by_type") {
        return;
    }
    for name in ["go1.22", "go1.25"] {
        let Some(bin) = build_go(&variant(name), Path::new("tests/go/reuse")) else {
            return;
        };
        let bin = bin.to_string_lossy().into_owned();
        let (status, lines, stderr) = run_mapguard(
            &["watch", "-o", "json", "--interval", "500ms", "--", &bin],
            Duration::from_secs(120),
        );
        assert!(status.success(), "{name}: {stderr}");
        let reused = stderr
            .lines()
            .find_map(|l| l.strip_prefix("reused "))
            .unwrap_or_else(|| panic!("{name}: the program saw no address reuse:\n{stderr}"))
            .to_string();
        let last = final_stats(&lines);
        let same: Vec<&Value> = last["hot_keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["map"] == reused.as_str() && k["key"] == "same")
            .collect();
        let of = |t: &str| same.iter().find(|k| k["map_type"] == t).copied();
        let bools = of("map[string]bool").unwrap_or_else(|| panic!("{name}: {same:?}"));
        let ints = of("map[string]int").unwrap_or_else(|| panic!("{name}: {same:?}"));
        assert_eq!(bools["assigns"], 3, "{name}: {bools}");
        let n = ints["assigns"].as_u64().unwrap();
        assert!(n >= 7 && n % 7 == 0, "{name}: {ints}");
        let totals: Vec<&Value> = last["map_keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["map"] == reused.as_str())
            .collect();
        assert_eq!(
            totals.len(),
            2,
            "{name}: one key total per map type: {totals:?}"
        );
    }
}

/// A service makes a map per request (net/http's header maps): hot keys are named for the
/// `--top-maps` busiest maps only, every other map's keys still count, folded into one
/// `map_keys` entry per process and map type, and the maps left out are counted. The line
/// stays bounded and nothing goes missing.
#[test]
fn hot_keys_name_the_busiest_maps_and_count_the_rest() {
    if !bpf_available_or_skip("hot_keys_name_the_busiest_maps_and_count_the_rest") {
        return;
    }
    const REQUESTS: u64 = 2000;
    for name in ["go1.22", "go1.25"] {
        let Some(bin) = build_go(&variant(name), Path::new("tests/go/manymaps")) else {
            return;
        };
        let bin = bin.to_string_lossy().into_owned();
        let n = REQUESTS.to_string();
        for (extra, top_maps) in [(&["--top-maps", "3"][..], 3), (&[][..], 500)] {
            let mut args = vec!["watch", "-o", "json", "--interval", "500ms"];
            args.extend_from_slice(extra);
            args.extend(["--", &bin, &n]);
            let (status, lines, stderr) = run_mapguard(&args, TIMEOUT);
            assert!(status.success(), "{name} {extra:?}: {stderr}");
            let last = final_stats(&lines);
            assert_eq!(
                u(last, "/hot_keys_evicted"),
                0,
                "{name}: counts below would be floors"
            );
            let named: BTreeSet<(u64, &str)> = arr(last, "hot_keys")
                .iter()
                .map(|k| (u(k, "/pid"), str_at(k, "/map")))
                .collect();
            assert_eq!(
                named.len(),
                top_maps,
                "{name} {extra:?}: maps named {named:?}"
            );
            let sessions: BTreeMap<&str, (u64, u64)> = arr(last, "hot_keys")
                .iter()
                .filter(|k| k["map_type"] == "map[string]main.session")
                .map(|k| (str_at(k, "/key"), (u(k, "/assigns"), u(k, "/deletes"))))
                .collect();
            assert_eq!(
                sessions,
                BTreeMap::from([("cool", (300, 1)), ("hot", (900, 0)), ("warm", (600, 0))]),
                "{name} {extra:?}: the busiest map is named, exactly"
            );
            let map_keys = arr(last, "map_keys");
            let maps: u64 = map_keys.iter().map(|m| u(m, "/maps")).sum();
            let omitted = u(last, "/hot_keys_maps_omitted");
            assert_eq!(
                maps,
                top_maps as u64 + omitted,
                "{name} {extra:?}: {map_keys:?}"
            );
            let requests: Vec<&Value> = map_keys
                .iter()
                .filter(|m| m["map_type"] == "map[string]main.header")
                .collect();
            let sum = |f: &str| requests.iter().map(|m| u(m, f)).sum::<u64>();
            assert_eq!(
                (sum("/maps"), sum("/keys"), sum("/keys_deleted")),
                (REQUESTS, 2 * REQUESTS, REQUESTS),
                "{name} {extra:?}: every request map's keys count"
            );
            let other: Vec<&&Value> = requests.iter().filter(|m| m["map"] == "other").collect();
            assert_eq!(
                other.len(),
                1,
                "{name} {extra:?}: one fold per type: {requests:?}"
            );
            assert!(u(other[0], "/maps") >= REQUESTS - top_maps as u64);
        }
        let (status, out, stderr) = run_mapguard_raw(
            &["watch", "-o", "wide", "--top-maps", "3", "--", &bin, &n],
            TIMEOUT,
        );
        assert!(status.success(), "{name}: {stderr}");
        assert!(
            out.contains("quieter maps with keys not named past --top-maps"),
            "{out}"
        );
    }
}

/// Watch rows name the code that asked, like trace's events: no row's caller
/// is a runtime, reflect or maps frame, and rows reached through one carry
/// it as `via` (JSON) or after the caller (`-o wide`).
#[test]
fn rows_name_the_code_that_asked() {
    let v = variant("go1.26");
    let Some(bin) = traceable(&v, "rows_name_the_code_that_asked", "tests/go/viareflect") else {
        return;
    };
    let bin = bin.to_string_lossy().into_owned();
    let (status, lines, stderr) = run_mapguard(
        &["watch", "-o", "json", "--interval", "1s", "--", &bin, "500"],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stderr}");
    let rows = final_stats(&lines)["rows"].as_array().unwrap().clone();
    for r in &rows {
        let f = r["caller"]["func"].as_str().unwrap_or("");
        assert!(
            !["runtime.", "reflect.", "maps.", "internal/runtime/"]
                .iter()
                .any(|p| f.starts_with(p)),
            "a wrapper as a row's caller: {r}"
        );
    }
    let row = |func: &str, op: &str| {
        rows.iter()
            .find(|r| r["caller"]["func"] == func && r["op"] == op)
            .unwrap_or_else(|| panic!("no {op} row for {func}: {rows:?}"))
            .clone()
    };
    let del = row("main.byReflectInt", "delete");
    assert_eq!(del["count"], 500);
    assert!(
        del["via"]["func"].as_str().unwrap().starts_with("reflect."),
        "{del}"
    );
    let copy = row("main.byCopy", "assign");
    assert_eq!(copy["count"], 1500);
    assert!(
        copy["via"]["func"]
            .as_str()
            .unwrap()
            .starts_with("maps.Copy["),
        "{copy}"
    );
    assert!(row("main.byClear", "assign").get("via").is_none());

    let (status, out, stderr) = run_mapguard_raw(
        &["watch", "-o", "wide", "--interval", "1s", "--", &bin, "500"],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stderr}");
    assert!(
        out.lines()
            .any(|l| l.contains("main.byReflectInt (main.go:") && l.contains(" via reflect.")),
        "{out}"
    );
}

/// A short `--interval` is kept: the stats lines come that often, not at the agent's idle poll.
#[test]
fn a_short_interval_is_kept() {
    let v = variant("go1.25");
    if !bpf_available_or_skip("a_short_interval_is_kept") {
        return;
    }
    let Some(demo) = build_go(&v, Path::new("examples/demo")) else {
        return;
    };
    let (status, lines, stderr) = Mapguard::spawn(&[
        "watch",
        "-o",
        "json",
        "--interval",
        "20ms",
        "--",
        &demo.to_string_lossy(),
        "2s",
    ])
    .finish(TIMEOUT);
    assert!(status.success(), "{stderr}");
    let spacings: Vec<u64> = lines
        .iter()
        .filter(|l| l["kind"] == "stats")
        .map(|l| u(l, "/interval_ms"))
        .collect();
    // 2 s at 20 ms is 100 lines; the idle poll (100 ms) would give at most 20. A loaded machine
    // may run late, so the bound is well under what a kept interval gives.
    assert!(
        spacings.len() >= 40,
        "{} stats lines: {spacings:?}",
        spacings.len()
    );
    let mut sorted = spacings.clone();
    sorted.sort_unstable();
    assert!(
        sorted[sorted.len() / 2] < 50,
        "median interval_ms: {spacings:?}"
    );
}
