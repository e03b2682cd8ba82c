//! End to end, as a user runs it on one machine: `kubectl-mapguard trace` on real Go programs
//! (tests/go/maptruth) built with every Go toolchain of the matrix (tests/common `variants()`),
//! with real uprobes. maptruth writes down every map operation it performs (its "truth file");
//! the tests compare the tool's JSON lines with it exactly.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) and the toolchains under /opt/mapguard-go (or
//! `MAPGUARD_GO_DIR`). Without them each test prints a loud SKIP and passes, unless
//! `MAPGUARD_REQUIRE_BPF=1` (CI), which turns every skip into a failure.
//!
//! The Go runtime and standard library use maps too, so the tool also reports operations whose
//! caller is not in package main. Comparisons with the truth use only `main.*` callers; the
//! summary's exact kernel counts are compared with ALL events received.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A hung tool fails its test after this.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Checks for BPF and builds maptruth; None when the test must skip.
fn setup(v: &Variant, test: &str) -> Option<PathBuf> {
    traceable(v, test, "tests/go/maptruth")
}

/// maptruth, a scratch directory and the truth file's path in it; None when the test must skip.
fn with_truth(v: &Variant, test: &str) -> Option<(PathBuf, TempDir, PathBuf)> {
    let bin = setup(v, test)?;
    let tmp = TempDir::new(&format!("{test}-{}", v.name));
    let truth = tmp.join("truth.jsonl");
    Some((bin, tmp, truth))
}

/// Runs `kubectl-mapguard trace -o json EXTRA -- maptruth TRUTH SCENARIO` to its end.
fn traced(v: &Variant, test: &str, extra: &[&str], scenario: &str) -> Option<Run> {
    let mut args = vec!["trace", "-o", "json"];
    args.extend_from_slice(extra);
    run_program_t(
        v,
        test,
        &args,
        "tests/go/maptruth",
        true,
        &[scenario],
        TIMEOUT,
        &[],
    )
}

/// The plain run (`trace -o json -- maptruth TRUTH`), shared by the tests that only read it. A
/// failed run is remembered, so the other tests of that variant fail at once instead of
/// re-running (and perhaps re-hanging) it.
fn base_run(v: &Variant) -> Option<Arc<Run>> {
    shared_run("trace", v, || traced(v, "base", &[], "all"))
}

fn is_op(e: &Value, op: &str) -> bool {
    e.get("op").and_then(Value::as_str) == Some(op)
}

// ---------------------------------------------------------------------------------------------
// Properties of the plain run.

/// attached (version, map layout, probes) before any event, detached at exit, summary last with
/// exit_status 0, tool exits 0.
fn attached_and_lifecycle(v: &Variant) {
    let Some(r) = base_run(v) else { return };
    assert!(
        r.status.success(),
        "{}: tool failed: {}\n{}",
        v.name,
        r.status,
        r.ctx()
    );
    assert_attached(v, &r.lines, r.pid);
    let exe = str_at(of_kind(&r.lines, "attached")[0], "/exe");
    assert!(
        exe.ends_with("/maptruth"),
        "{}: attached.exe {exe:?}",
        v.name
    );
    let det: Vec<&Value> = of_kind(&r.lines, "detached")
        .into_iter()
        .filter(|d| d.get("pid").and_then(Value::as_u64) == Some(r.pid))
        .collect();
    assert_eq!(
        det.len(),
        1,
        "{}: one detached line for pid {}\n{}",
        v.name,
        r.pid,
        r.ctx()
    );
    let sum = summary(&r.lines);
    assert_eq!(
        sum.get("exit_status").and_then(Value::as_i64),
        Some(0),
        "{}: {sum}",
        v.name
    );
    assert!(
        sum.get("duration_ms").map(Value::is_u64).unwrap_or(false),
        "{}: {sum}",
        v.name
    );
    // Every event belongs to the traced process.
    for e in events(&r.lines) {
        assert_eq!(
            e.get("pid").and_then(Value::as_u64),
            Some(r.pid),
            "{}: {e}",
            v.name
        );
    }
}

/// The heart of it: main.* events == truth (op, map_type, func, line, goid, key), including the
/// init-time assign and the first statement of main (no event lost at start-up).
fn events_match_truth(v: &Variant) {
    let Some(r) = base_run(v) else { return };
    assert!(r.status.success(), "{}: {}\n{}", v.name, r.status, r.ctx());
    assert_events_match_truth(v, &r.lines, &r.truth);
    let funcs: Vec<&str> = main_events(&r.lines)
        .iter()
        .map(|e| caller_func(e))
        .collect();
    assert!(
        funcs.contains(&"main.initAssign"),
        "{}: the init-time assign was lost",
        v.name
    );
    assert!(
        funcs.contains(&"main.firstAssign"),
        "{}: main's first statement was lost",
        v.name
    );
}

/// summary.ops == events received per op (all callers), drops == 0.
fn summary_counts_exact(v: &Variant) {
    let Some(r) = base_run(v) else { return };
    assert_summary_exact(v, &r.lines);
    let sum = summary(&r.lines);
    for (op, n) in truth_counts(&r.truth) {
        assert!(
            summary_op(sum, &op) >= n,
            "{}: summary.ops.{op} < the truth's {n}: {sum}",
            v.name
        );
    }
}

/// map_len == len(m) before the operation.
fn map_len_matches(v: &Variant) {
    let Some(r) = base_run(v) else { return };
    assert_map_len_matches_truth(v, &r.lines, &r.truth);
}

/// Key encodings that need care: JSON escapes, UTF-8, the empty string, extreme integers.
fn key_encodings(v: &Variant) {
    let Some(r) = base_run(v) else { return };
    let keys: Vec<String> = main_events(&r.lines)
        .iter()
        .filter_map(|e| e.get("key").and_then(Value::as_str).map(str::to_string))
        .collect();
    for k in [
        "quo\"te",
        "back\\slash",
        "tab\there",
        "ключ-ü",
        "new\nline",
        "",
        "-2147483648",
        "4294967295",
        "-9223372036854775808",
        "18446744073709551615",
    ] {
        assert!(
            keys.iter().any(|x| x == k),
            "{}: no event with key {k:?}",
            v.name
        );
    }
    for e in main_events(&r.lines) {
        let map = e.get("map").and_then(Value::as_str).unwrap_or("");
        assert!(
            map.starts_with("0x"),
            "{}: map should be a hex address: {e}",
            v.name
        );
        if !is_op(e, "clear") {
            assert_eq!(
                e.get("key_truncated").and_then(Value::as_bool),
                Some(false),
                "{e}"
            );
            let hash = e.get("key_hash").and_then(Value::as_str).unwrap_or("");
            assert!(
                hash.starts_with("0x"),
                "{}: key_hash should be hex: {e}",
                v.name
            );
        } else {
            assert!(
                e.get("key").is_none() || e["key"].is_null(),
                "{}: clear with key {e}",
                v.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties that need their own run.

/// `--pid`: attach to a running process, then make it work; the run ends when it exits.
fn pid_attach(v: &Variant) {
    let Some((bin, _tmp, truth_path)) = with_truth(v, "pid_attach") else {
        return;
    };
    let mut go = GoProc::spawn(&bin, &[truth_path.as_os_str(), OsStr::new("wait")]);
    let pid = go.pid().to_string();
    let mut mg = Mapguard::spawn(&["trace", "-o", "json", "--pid", &pid]);
    let gp = go.pid() as u64;
    mg.wait_for_pid("attached", "attached", gp, TIMEOUT);
    go.trigger();
    let st = go.wait(TIMEOUT);
    assert!(st.success(), "{}: maptruth exited {st}", v.name);
    let (status, lines, stderr) = mg.finish(TIMEOUT);
    assert!(
        status.success(),
        "{}: tool exited {status}\nstderr:\n{stderr}",
        v.name
    );
    assert_protocol_v1(&lines);
    assert_attached(v, &lines, gp);
    let truth = read_truth(&truth_path);
    assert_events_match_truth(v, &lines, &truth);
    assert_summary_exact(v, &lines);
    let det = of_kind(&lines, "detached");
    assert!(
        det.iter()
            .any(|d| d.get("pid").and_then(Value::as_u64) == Some(gp)),
        "{}: no detached line for pid {gp}",
        v.name
    );
}

/// `--stack`: every main.* event has a stack holding its caller (same line) and, on the main
/// goroutine after init, main.main.
fn stack(v: &Variant) {
    let Some(r) = traced(v, "stack", &["--stack"], "all") else {
        return;
    };
    assert!(r.status.success(), "{}\n{}", v.name, r.ctx());
    let evs = main_events(&r.lines);
    assert!(!evs.is_empty(), "{}: no main.* events\n{}", v.name, r.ctx());
    for e in evs {
        let frames = e.get("stack").and_then(Value::as_array).unwrap_or_else(|| {
            panic!("{}: --stack event without a stack: {e}", v.name);
        });
        let f = |fr: &Value| {
            fr.get("func")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let names: Vec<String> = frames.iter().map(f).collect();
        let caller = caller_func(e);
        let line = e.pointer("/caller/line").and_then(Value::as_u64);
        assert!(
            frames
                .iter()
                .any(|fr| f(fr) == caller && fr.get("line").and_then(Value::as_u64) == line),
            "{}: stack lacks the caller {caller}:{line:?}: {names:?}",
            v.name
        );
        let goid = e.get("goid").and_then(Value::as_u64);
        if goid == Some(1) && caller != "main.initAssign" {
            assert!(
                names.iter().any(|n| n == "main.main"),
                "{}: no main.main in {names:?}",
                v.name
            );
        }
        if caller == "main.initAssign" {
            assert!(
                names.iter().any(|n| n.starts_with("main.init")),
                "{}: init-time stack {names:?}",
                v.name
            );
        }
        if caller == "main.workerInt" || caller == "main.workerStr" {
            assert!(
                names.iter().any(|n| n.starts_with("main.runWorkers")),
                "{}: goroutine stack {names:?}",
                v.name
            );
        }
        for fr in frames {
            assert!(
                fr.get("file").is_some() && fr.get("line").is_some(),
                "frame {fr}"
            );
        }
    }
}

/// `--ops delete`: only deletes, all of them.
fn ops_delete_only(v: &Variant) {
    let Some(r) = traced(v, "ops_delete", &["--ops", "delete"], "all") else {
        return;
    };
    assert!(r.status.success(), "{}\n{}", v.name, r.ctx());
    for e in events(&r.lines) {
        assert!(
            is_op(e, "delete"),
            "{}: --ops delete let through {e}",
            v.name
        );
    }
    let truth: Vec<Value> = r
        .truth
        .iter()
        .filter(|t| is_op(t, "delete"))
        .cloned()
        .collect();
    assert_events_match_truth(v, &r.lines, &truth);
    let sum = summary(&r.lines);
    let n = events(&r.lines).len() as u64;
    assert_eq!(summary_op(sum, "delete"), n, "{}: summary {sum}", v.name);
    assert_eq!(
        sum.get("drops").and_then(Value::as_u64),
        Some(0),
        "{}: {sum}",
        v.name
    );
}

/// `--key RE`: only events whose formatted key matches; strings and integers alike.
fn key_filter(v: &Variant) {
    // The same language as the regex, spelled out.
    let re = "^(secret-|w3-1[0-9]$|-42$|-4993$)";
    let matches = |k: &str| {
        k.starts_with("secret-")
            || (k.len() == 5 && k.starts_with("w3-1") && k.as_bytes()[4].is_ascii_digit())
            || k == "-42"
            || k == "-4993"
    };
    let Some(r) = traced(v, "key_filter", &["--key", re], "all") else {
        return;
    };
    assert!(r.status.success(), "{}\n{}", v.name, r.ctx());
    for e in events(&r.lines) {
        let k = e.get("key").and_then(Value::as_str);
        assert!(
            k.map(matches).unwrap_or(false),
            "{}: --key {re:?} let through {e}",
            v.name
        );
    }
    let truth: Vec<Value> = r
        .truth
        .iter()
        .filter(|t| {
            t.get("key")
                .and_then(Value::as_str)
                .map(matches)
                .unwrap_or(false)
        })
        .cloned()
        .collect();
    // secret-token-1/2 assigned once; w3-10..19 assigned and deleted (goroutine); -42: an
    // absent delete in delI64; -4993: worker 0's map[int] key (assign + delete).
    assert_eq!(truth.len(), 2 + 20 + 3, "maptruth changed? fix this test");
    assert_events_match_truth(v, &r.lines, &truth);
    let sum = summary(&r.lines);
    for op in ["delete", "assign"] {
        let n = truth.iter().filter(|t| is_op(t, op)).count() as u64;
        assert!(
            summary_op(sum, op) >= n,
            "{}: summary.ops.{op} < {n}: {sum}",
            v.name
        );
    }
    if let Some(f) = sum.get("filtered_out").and_then(Value::as_u64) {
        assert!(f > 0, "{}: --key filtered nothing out? {sum}", v.name);
    }
}

/// `--map-type RE` (unstripped builds: they know the type names).
fn map_type_filter(v: &Variant) {
    let re = r"^map\[int32\]string$";
    let Some(r) = traced(v, "map_type_filter", &["--map-type", re], "all") else {
        return;
    };
    assert!(r.status.success(), "{}\n{}", v.name, r.ctx());
    for e in events(&r.lines) {
        assert_eq!(
            e.get("map_type").and_then(Value::as_str),
            Some("map[int32]string"),
            "{}: --map-type {re:?} let through {e}",
            v.name
        );
    }
    let truth: Vec<Value> = r
        .truth
        .iter()
        .filter(|t| t.get("map_type").and_then(Value::as_str) == Some("map[int32]string"))
        .cloned()
        .collect();
    assert_events_match_truth(v, &r.lines, &truth);
    // The range-delete idiom on that map is one clear.
    assert_eq!(
        events(&r.lines)
            .iter()
            .filter(|e| is_op(e, "clear"))
            .count(),
        1,
        "{}",
        v.name
    );
}

/// `--sample 10`: about a tenth of the events, while summary.ops stays exact.
fn sample(v: &Variant) {
    let Some(r) = traced(v, "sample", &["--sample", "10"], "all") else {
        return;
    };
    assert!(r.status.success(), "{}\n{}", v.name, r.ctx());
    let sum = summary(&r.lines);
    let total: u64 = ["delete", "assign", "clear"]
        .iter()
        .map(|op| summary_op(sum, op))
        .sum();
    let emitted = events(&r.lines).len() as u64;
    assert_eq!(
        sum.get("events_emitted").and_then(Value::as_u64),
        Some(emitted),
        "{sum}"
    );
    assert_eq!(
        sum.get("drops").and_then(Value::as_u64),
        Some(0),
        "{}: {sum}",
        v.name
    );
    let tenth = total as f64 / 10.0;
    assert!(
        (emitted as f64) > tenth * 0.7 && (emitted as f64) < tenth * 1.3,
        "{}: --sample 10 emitted {emitted} of {total} ops: {sum}",
        v.name
    );
    // Kernel counts are exact: at least the truth's, and the runtime adds only a few.
    for (op, n) in truth_counts(&r.truth) {
        let got = summary_op(sum, &op);
        assert!(
            got >= n && got <= n + 5000,
            "{}: summary.ops.{op}={got}, truth {n}",
            v.name
        );
    }
    if let Some(so) = sum.get("sampled_out").and_then(Value::as_u64) {
        assert!(
            so + emitted <= total && so > 0,
            "{}: sampled_out: {sum}",
            v.name
        );
    }
    // What was emitted is real.
    assert_emitted_are_real(&format!("{}: sampled", v.name), &r.lines, &r.truth, false);
}

/// `--max-key-bytes 8`: long string keys cut to 8 bytes with key_truncated, short ones whole.
fn max_key_bytes(v: &Variant) {
    let Some(r) = traced(v, "max_key_bytes", &["--max-key-bytes", "8"], "all") else {
        return;
    };
    assert!(r.status.success(), "{}\n{}", v.name, r.ctx());
    // Functions on map[string]int, whose keys are all ASCII.
    let funcs = [
        "main.initAssign",
        "main.firstAssign",
        "main.assignStr",
        "main.delStr",
        "main.incStr",
    ];
    let in_scope = |f: &str| funcs.contains(&f);
    type K = (OpKey, bool);
    let mut want: BTreeMap<K, i64> = BTreeMap::new();
    for t in r
        .truth
        .iter()
        .filter(|t| in_scope(t["func"].as_str().unwrap()))
    {
        let mut k = truth_key(t, false);
        let full = k.key.clone().unwrap();
        let cut = full.len() > 8;
        k.key = Some(full[..full.len().min(8)].to_string());
        *want.entry((k, cut)).or_insert(0) += 1;
    }
    let mut got: BTreeMap<K, i64> = BTreeMap::new();
    for e in main_events(&r.lines)
        .into_iter()
        .filter(|e| in_scope(caller_func(e)))
    {
        let cut = e
            .get("key_truncated")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        *got.entry((event_key(e, false), cut)).or_insert(0) += 1;
    }
    assert!(
        got.keys()
            .any(|(k, cut)| k.key.as_deref() == Some("a-very-l") && *cut),
        "{}: the 40-byte key should appear as \"a-very-l\" with key_truncated=true",
        v.name
    );
    assert_counts_eq(&format!("{}: --max-key-bytes 8", v.name), &got, &want);
}

/// `-o table`: a header line, then one row per event.
fn table_output(v: &Variant) {
    let Some((bin, _tmp, truth_path)) = with_truth(v, "table") else {
        return;
    };
    let (b, t) = (
        bin.to_string_lossy().into_owned(),
        truth_path.to_string_lossy().into_owned(),
    );
    let (status, stdout, stderr) = run_mapguard_raw(
        &["trace", "-o", "table", "--ops", "clear", "--", &b, &t],
        TIMEOUT,
    );
    assert!(status.success(), "{}: {status}\nstderr:\n{stderr}", v.name);
    let truth = read_truth(&truth_path);
    let clears = truth.iter().filter(|t| is_op(t, "clear")).count();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty(),
        "{}: no table output; stderr:\n{stderr}",
        v.name
    );
    let header = lines[0];
    assert!(
        header.to_ascii_lowercase().contains("op"),
        "{}: header? {header:?}",
        v.name
    );
    assert!(
        !header.contains("main."),
        "{}: first line is not a header: {header:?}",
        v.name
    );
    for l in &lines {
        assert!(
            serde_json::from_str::<Value>(l).is_err(),
            "table output has JSON: {l}"
        );
    }
    // Rows mentioning "clear": at least the program's own clears (the runtime may add a few).
    let rows = lines[1..].iter().filter(|l| l.contains("clear")).count();
    assert!(
        rows >= clears && rows <= clears + 50,
        "{}: {clears} clears in main, the table has {rows} clear rows:\n{stdout}",
        v.name
    );
}

/// `--no-headers`: the same table, rows only.
fn table_no_headers(v: &Variant) {
    let Some((bin, _tmp, truth_path)) = with_truth(v, "table-no-headers") else {
        return;
    };
    let (b, t) = (
        bin.to_string_lossy().into_owned(),
        truth_path.to_string_lossy().into_owned(),
    );
    let (status, stdout, stderr) = run_mapguard_raw(
        &[
            "trace",
            "-o",
            "wide",
            "--no-headers",
            "--ops",
            "clear",
            "--",
            &b,
            &t,
        ],
        TIMEOUT,
    );
    assert!(status.success(), "{}: {status}\nstderr:\n{stderr}", v.name);
    let clears = read_truth(&truth_path)
        .iter()
        .filter(|t| is_op(t, "clear"))
        .count();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().all(|l| l.contains("clear")),
        "{}: --no-headers, yet a line that is not a clear row:\n{stdout}",
        v.name
    );
    assert!(
        lines.len() >= clears && lines.len() <= clears + 50,
        "{}: {clears} clears in main, {} rows:\n{stdout}",
        v.name,
        lines.len()
    );
}

/// `-o yaml`: every protocol line as a YAML document after `---`, with the same content
/// `-o json` has: exact kernel counts, one document per event, the program's keys.
fn yaml_output(v: &Variant) {
    let Some((bin, _tmp, truth_path)) = with_truth(v, "yaml") else {
        return;
    };
    let (b, t) = (
        bin.to_string_lossy().into_owned(),
        truth_path.to_string_lossy().into_owned(),
    );
    let (status, stdout, stderr) =
        run_mapguard_raw(&["trace", "-o", "yaml", "--", &b, &t], TIMEOUT);
    assert!(status.success(), "{}: {status}\nstderr:\n{stderr}", v.name);
    let docs = yaml_docs(&stdout);
    assert_protocol_v1(&docs);
    let truth = read_truth(&truth_path);
    let sum = summary(&docs);
    for op in ["delete", "assign", "clear"] {
        let n = truth.iter().filter(|t| is_op(t, op)).count() as u64;
        assert!(
            summary_op(sum, op) >= n,
            "{}: summary ops.{op} {} < the program's own {n}",
            v.name,
            summary_op(sum, op)
        );
    }
    let events = of_kind(&docs, "event");
    assert_eq!(
        events.len() as u64,
        sum["events_emitted"].as_u64().unwrap_or(u64::MAX),
        "{}: one document per event emitted",
        v.name
    );
    let keys: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e.get("key").and_then(Value::as_str))
        .collect();
    for t in truth.iter().filter(|t| is_op(t, "delete")) {
        if let Some(k) = t.get("key").and_then(Value::as_str) {
            assert!(keys.contains(k), "{}: deleted key {k:?} missing", v.name);
        }
    }
}

/// `-- CMD`: the command's exit status is reported.
fn exit_status_reported(v: &Variant) {
    let Some(r) = traced(v, "exit_status", &[], "exit3") else {
        return;
    };
    let sum = summary(&r.lines);
    assert_eq!(
        sum.get("exit_status").and_then(Value::as_i64),
        Some(3),
        "{}: {sum}\n{}",
        v.name,
        r.ctx()
    );
    assert_ne!(
        r.status.code(),
        Some(2),
        "{}: not a tool error\n{}",
        v.name,
        r.ctx()
    );
}

/// `--duration`: a run on a process that keeps running ends by itself with a summary.
fn duration_ends_run(v: &Variant) {
    let Some((bin, _tmp, truth_path)) = with_truth(v, "duration") else {
        return;
    };
    let go = GoProc::spawn(&bin, &[truth_path.as_os_str(), OsStr::new("hold")]);
    let pid = go.pid().to_string();
    let started = std::time::Instant::now();
    let (status, lines, stderr) = run_mapguard(
        &["trace", "-o", "json", "--duration", "2s", "--pid", &pid],
        TIMEOUT,
    );
    assert!(status.success(), "{}: {status}\nstderr:\n{stderr}", v.name);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "ended before --duration"
    );
    let sum = summary(&lines);
    let ms = sum.get("duration_ms").and_then(Value::as_u64).unwrap_or(0);
    assert!(ms >= 1900, "{}: duration_ms {ms}: {sum}", v.name);
    assert_attached(v, &lines, go.pid() as u64);
    drop(go);
}

/// A long-running program: its events show up while it runs (not only when it exits), and
/// Ctrl-C ends the trace with a summary and exit 0, leaving the program running.
fn live_events_and_ctrl_c(v: &Variant) {
    if !bpf_available_or_skip(&format!("live [{}]", v.name)) {
        return;
    }
    let Some(demo) = build_go(v, Path::new("examples/demo")) else {
        return;
    };
    let go = GoProc::spawn(&demo, &[OsStr::new("60s")]);
    let pid = go.pid().to_string();
    // Sampled down to a trickle of a few events a second, far below any batch the kernel side
    // waits for before waking the reader: they must still arrive promptly.
    let mut mg = Mapguard::spawn(&[
        "trace", "-o", "json", "--ops", "delete", "--sample", "500", "--pid", &pid,
    ]);
    mg.wait_for("attached", TIMEOUT, |l| kind_is(l, "attached"));
    let ev = mg.wait_for("live delete event", Duration::from_secs(10), |l| {
        kind_is(l, "event") && caller_func(l) == "main.logout"
    });
    assert_eq!(ev.get("op").and_then(Value::as_str), Some("delete"), "{ev}");
    assert_eq!(
        ev.get("map_type").and_then(Value::as_str),
        Some("map[string]main.User"),
        "{ev}"
    );
    assert!(
        ev.get("key")
            .and_then(Value::as_str)
            .is_some_and(|k| k.starts_with("user-")),
        "{ev}"
    );
    mg.signal("INT");
    let (status, lines, stderr) = mg.finish(TIMEOUT);
    assert!(
        status.success(),
        "{}: Ctrl-C should end the trace cleanly: {status}\n{stderr}",
        v.name
    );
    let sum = summary(&lines);
    assert!(summary_op(sum, "delete") >= 1, "{sum}");
    assert_eq!(
        summary_op(sum, "assign"),
        0,
        "--ops delete probes nothing else: {sum}"
    );
    let det = of_kind(&lines, "detached");
    assert!(
        det.iter()
            .any(|d| d.get("reason").and_then(Value::as_str) == Some("interrupted")),
        "{det:?}"
    );
    assert!(
        discover_alive(go.pid()),
        "the traced program must survive the tracer's exit"
    );
    drop(go);
}

fn discover_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------------
// One test function per (variant, property), so a failure names both.

variant_tests! {
    go1_21 => "go1.21": [attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, sample];
    go1_22 => "go1.22": [live_events_and_ctrl_c, attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, key_filter,
        map_type_filter, sample, max_key_bytes, table_output];
    go1_23 => "go1.23": [attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, sample,
        exit_status_reported];
    go1_24 => "go1.24": [attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, key_filter,
        map_type_filter, sample, max_key_bytes];
    go1_24_noswissmap => "go1.24-noswissmap": [attached_and_lifecycle, events_match_truth,
        summary_counts_exact, map_len_matches, key_encodings, pid_attach, stack, ops_delete_only,
        key_filter, sample, max_key_bytes];
    go1_25 => "go1.25": [live_events_and_ctrl_c, attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, key_filter,
        map_type_filter, sample, max_key_bytes, table_output, table_no_headers, yaml_output,
        exit_status_reported,
        duration_ends_run];
    go1_26 => "go1.26": [attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, key_filter,
        map_type_filter, sample];
    go1_27 => "go1.27": [attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, key_filter,
        map_type_filter, sample, max_key_bytes];
    go1_22_stripped => "go1.22-stripped": [attached_and_lifecycle, events_match_truth,
        summary_counts_exact, map_len_matches, key_encodings, pid_attach, stack, key_filter,
        max_key_bytes];
    go1_26_stripped => "go1.26-stripped": [attached_and_lifecycle, events_match_truth,
        summary_counts_exact, map_len_matches, key_encodings, pid_attach, stack, key_filter];
    go1_22_pie => "go1.22-pie": [attached_and_lifecycle, events_match_truth, summary_counts_exact,
        map_len_matches, key_encodings, pid_attach, stack, ops_delete_only, map_type_filter];
    go1_25_pie_stripped => "go1.25-pie-stripped": [attached_and_lifecycle, events_match_truth,
        summary_counts_exact, map_len_matches, key_encodings, pid_attach, stack, key_filter,
        max_key_bytes, table_output, duration_ends_run];
    go1_26_cgo_stripped => "go1.26-cgo-stripped": [attached_and_lifecycle, events_match_truth,
        summary_counts_exact, map_len_matches, key_encodings, pid_attach, stack];
    go1_27_cgo_pie_stripped => "go1.27-cgo-pie-stripped": [attached_and_lifecycle,
        events_match_truth, summary_counts_exact, map_len_matches, key_encodings, pid_attach,
        stack];
}

/// Every variant of the matrix has its module above.
#[test]
fn matrix_is_covered() {
    let src = include_str!("trace_local.rs");
    for v in variants() {
        assert!(
            src.contains(&format!("=> \"{}\"", v.name)),
            "variant {} has no tests",
            v.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: exit 2 and ONE line on stderr, never a panic or backtrace.

fn assert_clean_error(what: &str, status: ExitStatus, stdout_events: usize, stderr: &str) {
    assert_eq!(
        status.code(),
        Some(2),
        "{what}: exit code {status}, want 2; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: want exactly one stderr line, got:\n{stderr}"
    );
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "Stack backtrace",
    ] {
        assert!(
            !stderr.contains(bad),
            "{what}: stderr shows a crash ({bad}):\n{stderr}"
        );
    }
    assert_eq!(stdout_events, 0, "{what}: events on stdout");
    eprintln!("{what}: {}", lines[0]);
}

fn error_run(what: &str, cmd: Command) {
    let p = Mapguard::spawn_cmd(cmd, false);
    let (status, _lines, stderr) = p.finish(TIMEOUT);
    assert_clean_error(what, status, 0, &stderr);
}

fn trace_cmd(args: &[&str]) -> Command {
    let mut all = vec!["trace", "-o", "json"];
    all.extend_from_slice(args);
    mapguard_command(&all)
}

#[test]
fn error_no_such_pid() {
    // pid_max is at most 2^22: this pid cannot exist.
    error_run("--pid 99999999", trace_cmd(&["--pid", "99999999"]));
}

#[test]
fn error_pid_not_go() {
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = sleeper.id().to_string();
    let res =
        std::panic::catch_unwind(|| error_run("--pid of sleep(1)", trace_cmd(&["--pid", &pid])));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    if let Err(e) = res {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn error_cmd_not_go() {
    let t = which("true");
    error_run("-- true (not Go)", trace_cmd(&["--", &t, "x"]));
}

#[test]
fn error_cmd_not_found() {
    error_run(
        "-- /nonexistent",
        trace_cmd(&["--", "/nonexistent/mapguard-no-such-binary"]),
    );
}

#[test]
fn error_binary_not_readable() {
    // A Go binary cut short: an ELF header and nothing the tool can use.
    let v = variant("go1.25");
    let Some(bin) = maptruth(&v) else { return };
    let tmp = TempDir::new("truncated");
    let cut = tmp.join("maptruth-truncated");
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len().min(4096)]).unwrap();
    let _ = Command::new("chmod").arg("0755").arg(&cut).status();
    let c = cut.to_string_lossy().into_owned();
    error_run("-- truncated Go binary", trace_cmd(&["--", &c, "x"]));
}

#[test]
fn error_not_permitted_cmd() {
    let v = variant("go1.25");
    let Some(bin) = maptruth(&v) else { return };
    if !have_setpriv_and_root() {
        return;
    }
    let tmp = TempDir::new("noperm");
    let truth = tmp.join("truth.jsonl");
    error_run(
        "not permitted (uid 65534, -- CMD)",
        as_nobody(&[
            "trace",
            "-o",
            "json",
            "--",
            &bin.to_string_lossy(),
            &truth.to_string_lossy(),
        ]),
    );
    assert!(
        !truth.exists(),
        "the command must not run when tracing is not permitted"
    );
}

#[test]
fn error_not_permitted_pid() {
    let v = variant("go1.25");
    let Some(bin) = maptruth(&v) else { return };
    if !have_setpriv_and_root() {
        return;
    }
    let tmp = TempDir::new("noperm-pid");
    let go = GoProc::spawn(&bin, &[tmp.join("t").as_os_str(), OsStr::new("hold")]);
    let pid = go.pid().to_string();
    error_run(
        "not permitted (uid 65534, --pid)",
        as_nobody(&["trace", "-o", "json", "--pid", &pid]),
    );
    drop(go);
}

// A Go version the tool does not support (e.g. go1.20) is an error too, but no such toolchain is
// installed here: not tested.

fn have_setpriv_and_root() -> bool {
    if !bpf_available_or_skip("not permitted (needs root to drop to uid 65534)") {
        return false;
    }
    if which_opt("setpriv").is_none() {
        skip("setpriv (util-linux) not installed");
        return false;
    }
    true
}

fn as_nobody(args: &[&str]) -> Command {
    let mut cmd = Command::new(which("setpriv"));
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(mapguard_bin())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("HOME", "/nonexistent");
    cmd
}

fn which_opt(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let found = path
        .split(':')
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.map(|p| p.to_string_lossy().into_owned())
}

fn which(name: &str) -> String {
    which_opt(name).unwrap_or_else(|| panic!("{name} not found in PATH"))
}

/// Two `--pid`s and room for one (MAPGUARD_MAX_TARGETS=1): the one that
/// cannot be attached is an `error` line naming it, and the other is traced
/// exactly.
#[test]
fn one_pid_that_cannot_attach_does_not_stop_the_others() {
    let v = variant("go1.25");
    let Some(bin) = setup(&v, "one_pid_that_cannot_attach") else {
        return;
    };
    let tmp = TempDir::new("two-pids");
    let (ta, tb) = (tmp.join("a.jsonl"), tmp.join("b.jsonl"));
    let mut a = GoProc::spawn(&bin, &[ta.as_os_str(), OsStr::new("wait")]);
    let mut b = GoProc::spawn(&bin, &[tb.as_os_str(), OsStr::new("wait")]);
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let mut cmd = mapguard_command(&["trace", "-o", "json", "--pid", &pa, "--pid", &pb]);
    cmd.env("MAPGUARD_MAX_TARGETS", "1");
    let mut mg = Mapguard::spawn_cmd(cmd, true);
    let first = mg.wait_for("attached", TIMEOUT, |l| kind_is(l, "attached"));
    assert_eq!(first["pid"].as_u64(), Some(a.pid() as u64), "{first}");
    a.trigger();
    b.trigger();
    assert!(a.wait(TIMEOUT).success());
    assert!(b.wait(TIMEOUT).success());
    let (status, lines, stderr) = mg.finish(TIMEOUT);
    assert!(status.success(), "{status}\n{stderr}");
    let errors = of_kind(&lines, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("pid {pb}")) && message.contains("already tracing 1 processes"),
        "{message}"
    );
    assert_eq!(of_kind(&lines, "attached").len(), 1);
    assert_events_match_truth(&v, &lines, &read_truth(&ta));
}

/// maptruth of `v` with its `.go.buildinfo` section removed (as some release
/// pipelines do), beside the original.
fn without_buildinfo(v: &Variant, tmp: &TempDir) -> Option<PathBuf> {
    let bin = maptruth(v)?;
    let out = tmp.join(format!("maptruth-{}-nobuildinfo", v.name));
    let st = Command::new(which("objcopy"))
        .args(["--remove-section", ".go.buildinfo"])
        .arg(&bin)
        .arg(&out)
        .status()
        .expect("run objcopy (binutils)");
    assert!(st.success(), "objcopy {}: {st}", bin.display());
    Some(out)
}

/// Without build info, `check` reads the release off the runtime functions
/// the binary links and the map implementation off its map functions, says
/// so, and `trace` is exact, goroutine ids included, on a binary of each map
/// implementation.
#[test]
fn traceable_without_buildinfo() {
    // (variant, the version check must read, map implementation)
    let cases = [
        ("go1.22", "go1.22", "classic"),
        ("go1.24-noswissmap", "go1.24", "classic"),
        ("go1.25", "go1.25", "swiss"),
        ("go1.26-stripped", "go1.26", "swiss"),
        ("go1.27", "go1.27+", "swiss"),
    ];
    for (name, version, map_impl) in cases {
        let v = variant(name);
        if !bpf_available_or_skip(&format!("traceable_without_buildinfo [{name}]")) {
            return;
        }
        let tmp = TempDir::new(&format!("nobi-{name}"));
        let Some(bin) = without_buildinfo(&v, &tmp) else {
            return;
        };
        let path = bin.to_string_lossy().into_owned();
        let (status, lines, stderr) = run_mapguard(&["check", &path, "-o", "json"], TIMEOUT);
        assert!(status.success(), "{name}: {stderr}");
        let c = &lines[0];
        assert_eq!(c["version_source"], "runtime", "{name}: {c}");
        assert_eq!(c["go_version"], version, "{name}: {c}");
        assert_eq!(c["map_impl"], map_impl, "{name}: {c}");
        assert!(
            c["goid_offset"].is_u64(),
            "{name}: the goid offset is known: {c}"
        );
        let (_, table, _) = run_mapguard_raw(&["check", &path], TIMEOUT);
        assert!(
            table.contains("no .go.buildinfo: read from the runtime"),
            "{table}"
        );

        let truth_path = tmp.join("truth.jsonl");
        let truth_arg = truth_path.to_string_lossy().into_owned();
        let (status, lines, stderr) = run_mapguard(
            &["trace", "-o", "json", "--", &path, &truth_arg, "all"],
            TIMEOUT,
        );
        assert!(status.success(), "{name}: {status}\n{stderr}");
        let attached = of_kind(&lines, "attached");
        assert_eq!(attached[0]["go_version"], version, "{name}");
        assert_eq!(attached[0]["map_impl"], map_impl, "{name}");
        assert_events_match_truth(&v, &lines, &read_truth(&truth_path));
        assert_summary_exact(&v, &lines);
    }
}

fn chatty() -> Option<PathBuf> {
    let v = variant("go1.25");
    if !bpf_available_or_skip("chatty") {
        return None;
    }
    build_go(&v, Path::new("tests/go/chatty"))
}

/// A traced command's own output never reaches mapguard's stdout: under
/// `-o json` every stdout line is a protocol line (run_mapguard fails on any
/// other), the command's stdout and stderr are on mapguard's stderr, or in
/// the `--cmd-output` file; under `-o table` stdout holds only rows.
#[test]
fn a_chatty_command_stays_out_of_the_data() {
    let Some(bin) = chatty() else { return };
    let bin = bin.to_string_lossy().into_owned();
    let (status, lines, stderr) =
        run_mapguard(&["trace", "-o", "json", "--", &bin, "2000", "0"], TIMEOUT);
    assert!(status.success(), "{stderr}");
    assert_protocol_v1(&lines);
    let main = main_events(&lines);
    assert_eq!(main.len(), 4000, "2000 assigns and 2000 deletes");
    assert!(
        stderr.contains("chatty out k1999 [m{"),
        "the command's stdout is on stderr"
    );
    assert!(stderr.contains("chatty err k1999"), "and its stderr too");

    let tmp = TempDir::new("chatty");
    let file = tmp.join("cmd.out");
    let f = file.to_string_lossy().into_owned();
    let (status, lines, stderr) = run_mapguard(
        &[
            "trace",
            "-o",
            "json",
            "--cmd-output",
            &f,
            "--",
            &bin,
            "500",
            "0",
        ],
        TIMEOUT,
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(main_events(&lines).len(), 1000);
    assert!(
        !stderr.contains("chatty"),
        "--cmd-output takes all of it: {stderr}"
    );
    let out = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("chatty out")).count(),
        500
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("chatty err")).count(),
        500
    );

    let (status, table, stderr) =
        run_mapguard_raw(&["trace", "--no-headers", "--", &bin, "300", "0"], TIMEOUT);
    assert!(status.success(), "{stderr}");
    assert!(!table.contains("chatty"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("main.")).count(),
        600,
        "{table}"
    );
}

/// `trace`/`watch -- CMD` exit with the command's status (128+N for a
/// signal); `delete-audit` keeps its own 0/1/2 and reports the status.
#[test]
fn the_command_status_is_the_exit_code() {
    let Some(bin) = chatty() else { return };
    let bin = bin.to_string_lossy().into_owned();
    for (status, want) in [("0", 0), ("3", 3), ("TERM", 143), ("KILL", 137)] {
        let (st, lines, stderr) =
            run_mapguard(&["trace", "-o", "json", "--", &bin, "10", status], TIMEOUT);
        assert_eq!(st.code(), Some(want), "trace, CMD {status}: {stderr}");
        assert_eq!(summary(&lines)["exit_status"], want, "trace, CMD {status}");
    }
    // A command that mapguard ends (here at --duration) is not the run's failure.
    let podwork = build_go(&variant("go1.25"), Path::new("tests/go/podwork")).unwrap();
    let podwork = podwork.to_string_lossy().into_owned();
    let (st, lines, stderr) = run_mapguard(
        &[
            "trace",
            "-o",
            "json",
            "--duration",
            "1s",
            "--",
            &podwork,
            "/nonexistent",
            "t",
            "1",
        ],
        TIMEOUT,
    );
    assert_eq!(st.code(), Some(0), "trace --duration: {stderr}");
    assert_eq!(
        summary(&lines)["exit_status"],
        143,
        "SIGTERM at the duration"
    );
    let (st, _, stderr) = run_mapguard(&["watch", "-o", "json", "--", &bin, "10", "5"], TIMEOUT);
    assert_eq!(st.code(), Some(5), "watch: {stderr}");
    let (st, _, stderr) = run_mapguard_raw(&["trace", "--", &bin, "10", "7"], TIMEOUT);
    assert_eq!(st.code(), Some(7), "trace -o table: {stderr}");
    assert!(stderr.contains("command exited with status 7"), "{stderr}");

    let (st, lines, stderr) = run_mapguard(
        &[
            "delete-audit",
            "--duration",
            "30s",
            "-o",
            "json",
            "--",
            &bin,
            "10",
            "4",
        ],
        TIMEOUT,
    );
    assert_eq!(st.code(), Some(0), "the audit passed: {stderr}");
    let report = lines.iter().find(|l| l["kind"] == "report").unwrap();
    assert_eq!(report["exit_status"], 4, "{report}");
    let (st, table, stderr) = run_mapguard_raw(
        &["delete-audit", "--duration", "30s", "--", &bin, "10", "4"],
        TIMEOUT,
    );
    assert_eq!(st.code(), Some(0), "{stderr}");
    assert!(
        table.contains("The command exited with status 4."),
        "{table}"
    );
}

/// A refusal names the binary: maptruth claiming go1.17 (its version
/// strings edited in place) is refused in one line that says which file.
#[test]
fn an_old_go_is_refused_by_name() {
    let v = variant("go1.25");
    let Some(bin) = setup(&v, "an_old_go_is_refused_by_name") else {
        return;
    };
    let tmp = TempDir::new("oldgo");
    let old = tmp.join("maptruth-claims-go1.17");
    let mut data = std::fs::read(&bin).unwrap();
    let (from, to) = (b"go1.25.5", b"go1.17.5");
    let hits: Vec<usize> = data
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| w == from)
        .map(|(i, _)| i)
        .collect();
    assert!(!hits.is_empty());
    for at in hits {
        data[at..at + from.len()].copy_from_slice(to);
    }
    std::fs::write(&old, data).unwrap();
    let _ = Command::new("chmod").arg("+x").arg(&old).status();
    let path = old.to_string_lossy().into_owned();
    let (status, out, stderr) = run_mapguard_raw(&["trace", "--", &path, "t", "all"], TIMEOUT);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(out.is_empty(), "{out}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&path) && lines[0].contains("go1.17"),
        "{stderr}"
    );
}

/// What viareflect (tests/go/viareflect) does per run, by map type: the
/// function that asked, and per op the count and whether it went through a
/// wrapper (so `via` is set).
const VIA_EXPECTED: [(&str, &str, &str, u64, bool); 9] = [
    // go1.27's encoding/json runs on encoding/json/v2: the function differs by release.
    ("map[string]int", "assign", "encoding/json", 2, true),
    ("map[string]complex64", "assign", "main.byReflect", 1, true),
    ("map[string]complex64", "delete", "main.byReflect", 1, true),
    ("map[int64]string", "assign", "main.byReflectInt", 1, true),
    ("map[int64]string", "delete", "main.byReflectInt", 1, true),
    ("map[uint16]float64", "assign", "main.byCopy", 3, true),
    ("map[string]uint8", "assign", "main.byHelper", 1, true),
    ("map[string]int8", "assign", "main.byClear", 1, false),
    ("map[string]int8", "clear", "main.byClear", 1, true),
];

const WRAPPER_PREFIXES: [&str; 4] = ["runtime.", "internal/runtime/", "reflect.", "maps."];

/// Writes through encoding/json, reflect, maps.Copy and a generic forwarder
/// name the code that asked as the caller, with the wrapper frame as `via`
/// (in JSON and in `-o wide`), and are counted exactly: on swiss-map builds
/// reflect's delete and clear bypass runtime.mapdelete/mapclear and are
/// probed themselves.
#[test]
fn the_caller_is_the_code_that_asked() {
    if !bpf_available_or_skip("the_caller_is_the_code_that_asked") {
        return;
    }
    const RUNS: u64 = 40;
    for name in [
        "go1.21",
        "go1.24-noswissmap",
        "go1.26",
        "go1.27",
        "go1.25-pie-stripped",
    ] {
        let v = variant(name);
        let Some(bin) = build_go(&v, Path::new("tests/go/viareflect")) else {
            return;
        };
        let bin = bin.to_string_lossy().into_owned();
        let runs = RUNS.to_string();
        let (status, lines, stderr) = run_mapguard(
            &["trace", "-o", "json", "--", &bin, &runs],
            Duration::from_secs(120),
        );
        assert!(status.success(), "{name}: {stderr}");
        let mut got: BTreeMap<(String, String, String, bool), u64> = BTreeMap::new();
        for e in events(&lines) {
            let ty = e["map_type"].as_str().unwrap_or("?");
            if !VIA_EXPECTED.iter().any(|x| x.0 == ty) {
                continue;
            }
            let caller = caller_func(e).to_string();
            assert!(
                !WRAPPER_PREFIXES.iter().any(|p| caller.starts_with(p)) && !caller.contains('['),
                "{name}: a wrapper named as the caller: {e}"
            );
            if let Some(via) = e.get("via") {
                let f = via["func"].as_str().unwrap();
                assert!(
                    WRAPPER_PREFIXES.iter().any(|p| f.starts_with(p)) || f.starts_with("main.put["),
                    "{name}: via is not a wrapper: {e}"
                );
            }
            let caller = if caller.starts_with("encoding/json") {
                "encoding/json".to_string()
            } else {
                caller
            };
            *got.entry((
                ty.to_string(),
                e["op"].as_str().unwrap().to_string(),
                caller,
                e.get("via").is_some(),
            ))
            .or_default() += 1;
        }
        let mut want: BTreeMap<(String, String, String, bool), u64> = VIA_EXPECTED
            .iter()
            .map(|&(ty, op, f, n, via)| ((ty.into(), op.into(), f.into(), via), n * RUNS))
            .collect();
        // maps.Copy's source, a 3-key literal built once in main.
        want.insert(
            (
                "map[uint16]float64".into(),
                "assign".into(),
                "main.main".into(),
                false,
            ),
            3,
        );
        assert_eq!(got, want, "{name}: (map type, op, caller, via?) → events");
        let s = summary(&lines);
        assert_eq!(s["drops"], 0, "{name}");

        // -o wide says it on the caller's line; the plain table keeps file:line.
        // As many runs as above: a PIE that exits within moments of its exec
        // can end before its load address is read (its names are then "?").
        let (status, out, stderr) = run_mapguard_raw(
            &["trace", "-o", "wide", "--", &bin, &runs],
            Duration::from_secs(60),
        );
        assert!(status.success(), "{name}: {stderr}");
        let line = out
            .lines()
            .find(|l| l.contains("map[int64]string") && l.contains(" delete "))
            .unwrap_or_else(|| panic!("{name}: no delete row in\n{out}"));
        assert!(
            line.contains("main.byReflectInt (main.go:") && line.contains(" via reflect."),
            "{name}: {line}"
        );
    }
}

/// A key whose bytes the process has never touched cannot be read by the
/// probe (it cannot fault the page in): the operation is still counted, the
/// event says `key: null`, and the summary counts it under its cause.
#[test]
fn read_faults_are_counted_by_cause() {
    if !bpf_available_or_skip("read_faults_are_counted_by_cause") {
        return;
    }
    let v = variant("go1.26");
    let Some(bin) = build_go(&v, Path::new("tests/go/coldkeys")) else {
        return;
    };
    let bin = bin.to_string_lossy().into_owned();
    let (status, lines, stderr) = run_mapguard(
        &["trace", "-o", "json", "--", &bin, "64"],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let mine: Vec<&Value> = main_events(&lines);
    let unread = mine
        .iter()
        .filter(|e| e["op"] == "assign" && e["key"].is_null())
        .count() as u64;
    let read = mine
        .iter()
        .filter(|e| e["op"] == "delete" && e["key"] == "\0\0\0\0\0\0\0\0")
        .count();
    assert_eq!(read, 64, "every delete reads its key from a touched page");
    let s = summary(&lines);
    let causes = &s["read_fault_causes"];
    assert_eq!(causes["key"].as_u64(), Some(unread), "{s}");
    assert!(unread >= 60, "most cold pages fault: {unread} of 64; {s}");
    assert_eq!(causes["map_header"], 0, "{s}");
    assert_eq!(causes["goid"], 0, "{s}");
    assert_eq!(causes["caller_frame"], 0, "{s}");
    assert_eq!(s["read_faults"].as_u64(), Some(unread), "{s}");
    for e in mine.iter().filter(|e| e["key"].is_null()) {
        assert!(
            e.get("key_hash").is_none() && e["key_truncated"] == false,
            "{e}"
        );
    }
    // The summary on stderr says so too, in words.
    let (status, _, stderr) = run_mapguard_raw(
        &["trace", "-o", "table", "--", &bin, "64"],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(" read faults (") && stderr.contains("README"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Where the data goes: a full disk is an error said once; a reader that leaves (`| head`) ends
// the run quietly. (A stdout closed with `>&-` is /dev/null by the time main runs: Rust's
// runtime reopens it there, so no file of ours can take its number.)

/// (status, stderr) of `trace FLAGS -- demo 3s`, its stdout set up by `stdout`.
fn trace_demo_into(
    flags: &[&str],
    stdout: impl FnOnce(&mut Command),
    test: &str,
) -> Option<(ExitStatus, String)> {
    let v = variant("go1.25");
    if !bpf_available_or_skip(test) {
        return None;
    }
    let demo = build_go(&v, Path::new("examples/demo"))?;
    let demo = demo.to_string_lossy();
    let mut args = vec!["trace"];
    args.extend_from_slice(flags);
    args.extend(["--", &demo, "3s"]);
    let mut cmd = mapguard_command(&args);
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    stdout(&mut cmd);
    let out = cmd.output().expect("run kubectl-mapguard");
    Some((
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn output_that_cannot_be_written_is_an_error() {
    for format in ["json", "table"] {
        let Some((status, stderr)) = trace_demo_into(
            &["-o", format],
            |c| {
                let full = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .expect("open /dev/full");
                c.stdout(full);
            },
            "output_that_cannot_be_written",
        ) else {
            return;
        };
        assert_eq!(status.code(), Some(2), "-o {format}: {status}\n{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "-o {format}: {stderr}");
        assert!(
            errors[0].contains("writing the output failed")
                && errors[0].contains("No space left on device"),
            "-o {format}: {stderr}"
        );
    }
}

#[test]
fn a_reader_that_leaves_ends_the_run_quietly() {
    let v = variant("go1.25");
    if !bpf_available_or_skip("a_reader_that_leaves") {
        return;
    }
    let Some(demo) = build_go(&v, Path::new("examples/demo")) else {
        return;
    };
    let mut child =
        mapguard_command(&["trace", "-o", "json", "--", &demo.to_string_lossy(), "60s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl-mapguard");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).expect("read a line");
    assert!(first.contains("\"v\":1"), "{first}");
    drop(out);
    let status = wait_or_kill(&mut child, TIMEOUT).expect("the run ends when its reader leaves");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Several `--pid`s and `-- CMD` that cannot run.

/// A pid that is gone among live ones: an `error` line naming it, the live one traced exactly,
/// exit 0; the same pid twice is one process, attached once.
#[test]
fn a_gone_pid_among_others_is_an_error_line() {
    let v = variant("go1.25");
    let Some(bin) = setup(&v, "a_gone_pid_among_others") else {
        return;
    };
    let tmp = TempDir::new("gone-pid");
    let ta = tmp.join("a.jsonl");
    let mut a = GoProc::spawn(&bin, &[ta.as_os_str(), OsStr::new("wait")]);
    let pa = a.pid().to_string();
    // pid_max is at most 2^22: this pid cannot exist.
    let mut mg = Mapguard::spawn(&[
        "trace", "-o", "json", "--pid", &pa, "--pid", "99999999", "--pid", &pa,
    ]);
    mg.wait_for("attached", TIMEOUT, |l| kind_is(l, "attached"));
    a.trigger();
    assert!(a.wait(TIMEOUT).success());
    let (status, lines, stderr) = mg.finish(TIMEOUT);
    assert!(status.success(), "{status}\n{stderr}");
    let errors = of_kind(&lines, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("no process with pid 99999999"),
        "{message}"
    );
    assert_eq!(of_kind(&lines, "attached").len(), 1, "{stderr}");
    assert_events_match_truth(&v, &lines, &read_truth(&ta));
}

/// `-- FILE` that exists but cannot run says why, as a shell would.
#[test]
fn a_command_that_cannot_run_says_why() {
    let tmp = TempDir::new("cannot-run");
    let plain = tmp.join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    for (path, why) in [
        (plain.to_string_lossy().into_owned(), "is not executable"),
        (tmp.path().to_string_lossy().into_owned(), "is a directory"),
    ] {
        let (status, out, err) = run_mapguard_raw(&["trace", "--", &path], TIMEOUT);
        assert_clean_error(&path, status, out.lines().count(), &err);
        assert!(err.contains(why), "{path}: {err}");
    }
}

/// The table's summary accounts for every event: those the rate limit held back too.
#[test]
fn the_table_summary_counts_what_the_rate_limit_held_back() {
    let Some((status, stderr)) = trace_demo_into(
        &["-o", "table", "--max-events-per-sec", "10"],
        |c| {
            c.stdout(Stdio::null());
        },
        "the_table_summary_counts_what_the_rate_limit_held_back",
    ) else {
        return;
    };
    assert!(status.success(), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains("events shown"))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    assert!(
        summary.contains("held back by --max-events-per-sec"),
        "{summary}"
    );
}
