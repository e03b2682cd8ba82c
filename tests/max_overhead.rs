//! `--max-overhead`: on real Go programs (tests/go/phases), the estimates
//! hold the program's own count in their interval, the cost bound holds
//! when the rate changes, and every output says the counts are estimates.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const MAP: &str = "map[string]main.val";
/// How far over the bound an interval may read. Measured here: at most
/// 0.9x for these programs; 1.44x for a process idle but for 2 ms bursts
/// (the hits between a window's program shutting it and the agent
/// switching the probes off), and once, under a parallel build that kept
/// the agent off the CPU while a window was live, 2.1x. A debt is repaid in
/// the intervals after.
const OVERSHOOT: f64 = 1.5;

fn phases(test: &str) -> Option<PathBuf> {
    if !bpf_available_or_skip(test) {
        return None;
    }
    build_go(&variant("go1.25"), std::path::Path::new("tests/go/phases"))
}

/// `watch --max-overhead PCT -o json -- phases TRUTH STEPS...` to its end:
/// (lines, stderr, the truth file), after asserting it succeeded.
fn watch_phases(
    bin: &std::path::Path,
    dir: &TempDir,
    pct: &str,
    steps: &[&str],
) -> (Vec<Value>, String, PathBuf) {
    watch_phases_env(bin, dir, pct, steps, &[])
}

fn watch_phases_env(
    bin: &std::path::Path,
    dir: &TempDir,
    pct: &str,
    steps: &[&str],
    env: &[(&str, &str)],
) -> (Vec<Value>, String, PathBuf) {
    let out = dir.join("truth.json");
    let mut args = vec![
        "watch",
        "--max-overhead",
        pct,
        "-o",
        "json",
        "--interval",
        "1s",
        "--",
    ];
    args.extend([bin.to_str().unwrap(), out.to_str().unwrap()]);
    args.extend_from_slice(steps);
    let mut cmd = mapguard_command(&args);
    cmd.envs(env.iter().copied());
    let (status, lines, stderr) = Mapguard::spawn_cmd(cmd, true).finish(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{stderr}");
    (lines, stderr, out)
}

/// What the program says it did: (deletes, assigns) of map[string]main.val.
fn truth(file: &std::path::Path) -> (u64, u64) {
    let t: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("truth file"))
        .expect("truth JSON");
    (t["delete"].as_u64().unwrap(), t["assign"].as_u64().unwrap())
}

fn last<'a>(lines: &'a [Value], kind: &str) -> &'a Value {
    lines
        .iter()
        .rev()
        .find(|l| l["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line in {}", tail(lines, 5)))
}

/// The row of `MAP` for `op` in a stats line (phases has one caller per op).
fn row<'a>(stats: &'a Value, op: &str) -> &'a Value {
    stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["map_type"] == MAP && r["op"] == op)
        .unwrap_or_else(|| panic!("no {op} row of {MAP} in {stats}"))
}

fn interval(v: &Value) -> (u64, Option<u64>) {
    (v[0].as_u64().unwrap(), v[1].as_u64())
}

/// The marks every estimated count carries, on a row.
fn assert_estimated_row(r: &Value, truth: u64) {
    assert_eq!(r["estimated"], true, "{r}");
    let observed = r["count_observed"].as_u64().unwrap();
    let count = r["count"].as_u64().unwrap();
    let (lo, hi) = interval(&r["count_interval"]);
    let f = r["observed_fraction"].as_f64().unwrap();
    assert!(observed > 0 && observed <= count, "{r}");
    assert!(
        f > 0.0 && f < 1.0,
        "the windows saw only part of the run: {r}"
    );
    assert!(lo <= count && hi.is_some_and(|h| h >= count), "{r}");
    assert_holds(count, (lo, hi), truth, r);
}

/// The 95% interval holds the truth, and the estimate is of its size: never
/// off by a factor (as when the windows' CPU was mis-booked). Measured here
/// on a service-like process: estimates 0.86x to 1.3x the truth, intervals
/// about ±40%, the truth inside in every one of some fifty runs.
fn assert_holds(count: u64, (lo, hi): (u64, Option<u64>), truth: u64, line: &Value) {
    assert!(
        lo <= truth && hi.is_none_or(|h| truth <= h),
        "the interval [{lo}, {hi:?}] of estimate {count} misses the truth {truth}: {line}"
    );
    let ratio = count as f64 / truth as f64;
    assert!(
        (0.5..=2.0).contains(&ratio),
        "estimate {count} is {ratio:.2}x the truth {truth}: {line}"
    );
}

/// A service-like process: each operation comes with work of its own.
/// The interval holds the truth, the counts say they are estimates, and
/// the cost stays under the bound in every interval.
#[test]
fn estimates_hold_the_truth_and_say_so() {
    let Some(bin) = phases("estimates_hold_the_truth_and_say_so") else {
        return;
    };
    let dir = TempDir::new("max-overhead-truth");
    let (lines, stderr, out) = watch_phases(&bin, &dir, "2%", &["service:6000:20000"]);
    assert!(
        stderr.contains("max-overhead 2%: a uprobe hit costs"),
        "{stderr}"
    );
    let (deletes, assigns) = truth(&out);
    let stats = last(&lines, "stats");
    assert_estimated_row(row(stats, "delete"), deletes);
    assert_estimated_row(row(stats, "assign"), assigns);

    let summary = last(&lines, "summary");
    assert_eq!(summary["estimated"], true, "{summary}");
    let f = summary["observed_fraction"].as_f64().unwrap();
    assert!(f > 0.0 && f < 1.0, "{summary}");
    let seen = summary["ops_observed"]["delete"].as_u64().unwrap();
    let est = summary["ops"]["delete"].as_u64().unwrap();
    let (lo, hi) = interval(&summary["ops_interval"]["delete"]);
    assert!(seen < est && lo <= est && hi.unwrap() >= est, "{summary}");
    assert_holds(est, (lo, hi), deletes, summary);
    let sampling = summary["sampling"].as_array().unwrap();
    assert_eq!(sampling.len(), 1, "{summary}");
    assert_eq!(sampling[0]["max_overhead_pct"], 2.0);
    // Its operations come with no read or write: weighed by its CPU.
    assert_eq!(sampling[0]["scaled_by"], "cpu", "{summary}");
    // This kernel lets the agent write the probed bytes: windows switch in
    // microseconds, not by attaching and detaching probes.
    assert_eq!(sampling[0]["window_switch"], "text", "{summary}");
    assert!(sampling[0]["windows"].as_u64().unwrap() >= 20, "{summary}");
    for s in lines.iter().filter(|l| l["kind"] == "stats") {
        assert_eq!(s["estimated"], true, "{s}");
        for p in s["sampling"].as_array().unwrap() {
            let pct = p["overhead_pct"].as_f64().unwrap();
            assert!(
                pct <= 2.0 * OVERSHOOT,
                "an interval well over the bound: {p}"
            );
        }
    }
}

/// A service whose requests come with reads and writes: its windows are
/// weighed by its calls, which no probe adds to, and its estimates are
/// tighter than CPU's: ±3.5% measured, where the same phase without
/// calls read ±40-70%.
#[test]
fn a_service_is_scaled_by_its_calls() {
    let Some(bin) = phases("a_service_is_scaled_by_its_calls") else {
        return;
    };
    let dir = TempDir::new("max-overhead-calls");
    let (lines, _, out) = watch_phases(&bin, &dir, "2", &["requests:6000:20000"]);
    let (deletes, assigns) = truth(&out);
    let summary = last(&lines, "summary");
    let sampling = &summary["sampling"][0];
    assert_eq!(sampling["scaled_by"], "syscalls", "{summary}");
    let f = sampling["observed_fraction"].as_f64().unwrap();
    assert!(f > 0.0 && f < 1.0, "{summary}");
    let stats = last(&lines, "stats");
    for (op, truth) in [("delete", deletes), ("assign", assigns)] {
        let r = row(stats, op);
        assert_estimated_row(r, truth);
        let (lo, hi) = interval(&r["count_interval"]);
        let width = (hi.unwrap() - lo) as f64 / r["count"].as_f64().unwrap();
        assert!(width < 0.2, "an interval ±{:.0}% wide: {r}", 50.0 * width);
    }
}

/// Idle, a burst of nothing but map operations, idle, then a paced phase:
/// the estimated probe cost stays at or under the bound in every interval
/// however the rate moves, and the windows kept coming through the burst.
#[test]
fn the_bound_holds_when_the_rate_changes() {
    let Some(bin) = phases("the_bound_holds_when_the_rate_changes") else {
        return;
    };
    let dir = TempDir::new("max-overhead-phases");
    let (lines, _, out) = watch_phases(
        &bin,
        &dir,
        "1",
        &["idle:2000", "burst:3000", "idle:2000", "service:3000:20000"],
    );
    let stats: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "stats").collect();
    assert!(stats.len() >= 8, "{}", tail(&lines, 3));
    let mut busy = 0;
    for s in &stats {
        let p = &s["sampling"][0];
        let pct = p["overhead_pct"].as_f64().unwrap();
        assert!(
            pct <= OVERSHOOT,
            "an interval well over the 1% bound: {p}\n{}",
            tail(&lines, 3)
        );
        if pct > 0.3 {
            busy += 1;
        }
    }
    // Busy intervals spent their budget: the burst and the service were observed.
    assert!(busy >= 3, "{}", tail(&lines, 12));
    let (deletes, _) = truth(&out);
    let summary = last(&lines, "summary");
    let seen = summary["ops_observed"]["delete"].as_u64().unwrap();
    assert!(seen > 0 && seen < deletes, "{summary} truth {deletes}");
    // The burst's own CPU is lost in its probes' cost: what it did cannot be
    // scaled from the windows, and the estimate says so, open above, rather
    // than a number off by a factor of a hundred.
    let est = summary["ops"]["delete"].as_u64().unwrap();
    let (lo, hi) = interval(&summary["ops_interval"]["delete"]);
    assert_eq!(hi, None, "{summary} truth {deletes}");
    assert!(lo <= deletes && seen <= est, "{summary} truth {deletes}");
    // So is the share observed: not known, said as null, never as 1.0 (all
    // seen) or below 0 (the burst's windows booked with negative own CPU).
    assert!(
        summary.get("observed_fraction").is_some_and(Value::is_null),
        "{summary}"
    );
    for l in &lines {
        for p in l["sampling"].as_array().into_iter().flatten() {
            let f = &p["observed_fraction"];
            assert!(
                f.is_null() || f.as_f64().is_some_and(|f| f > 0.0 && f <= 1.0),
                "{p}"
            );
        }
    }
    // Over the whole run the probes cost at most the bound, and the
    // summary says so of the run, not of its last moment.
    let p = &summary["sampling"][0];
    let whole = 100.0 * p["probe_cpu_ms"].as_f64().unwrap() / p["cpu_ms"].as_f64().unwrap();
    assert!(whole <= 1.0, "{p}");
    assert!(
        (p["overhead_pct"].as_f64().unwrap() - whole).abs() < 1e-6,
        "{p}"
    );
}

/// Where the kernel refuses the agent's writes to a program's text (or a
/// user forces it), windows come from attaching and detaching the probes:
/// slower, and the same honest estimates.
#[test]
fn windows_by_links_when_text_cannot_be_written() {
    let Some(bin) = phases("windows_by_links_when_text_cannot_be_written") else {
        return;
    };
    let dir = TempDir::new("max-overhead-links");
    let (lines, stderr, out) = watch_phases_env(
        &bin,
        &dir,
        "2",
        &["service:5000:20000"],
        &[("MAPGUARD_WINDOWS_BY_LINKS", "1")],
    );
    let (deletes, _) = truth(&out);
    let summary = last(&lines, "summary");
    let sampling = &summary["sampling"][0];
    assert_eq!(sampling["window_switch"], "link", "{summary}\n{stderr}");
    assert!(sampling["windows"].as_u64().unwrap() >= 10, "{summary}");
    let est = summary["ops"]["delete"].as_u64().unwrap();
    assert_holds(
        est,
        interval(&summary["ops_interval"]["delete"]),
        deletes,
        summary,
    );
}

/// `--pid`: a process already running is put under the bound the same way,
/// and when the run ends, the process it leaves running has its code back
/// as it was: no probed byte is left switched.
#[test]
fn composes_with_pid() {
    let Some(bin) = phases("composes_with_pid") else {
        return;
    };
    let dir = TempDir::new("max-overhead-pid");
    let out = dir.join("truth.json");
    // The service's operations all fall inside the run; the idle after it
    // outlives the run, so the process is there to be looked at after. Its
    // requests make calls, so its estimate does not hang on the cost of a
    // hit, which a calibration on a machine busy with the other tests can
    // misjudge enough to leave it unknown (seen once in ~20 runs).
    let mut child = Command::new(&bin)
        .args([
            out.to_str().unwrap(),
            "wait",
            "requests:3000:20000",
            "idle:5000",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let pid_arg = pid.to_string();
    let mut p = Mapguard::spawn(&[
        "watch",
        "--max-overhead",
        "2",
        "-o",
        "json",
        "--interval",
        "1s",
        "--duration",
        "5s",
        "--pid",
        &pid_arg,
    ]);
    p.wait_for("attached", Duration::from_secs(20), |l| {
        l["kind"] == "attached"
    });
    drop(child.stdin.take());
    let (status, lines, stderr) = p.finish(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "phases outlives the run: {stderr}"
    );
    assert_code_as_built(&bin, pid);
    let status = wait_or_kill(&mut child, Duration::from_secs(30)).expect("phases ended");
    assert!(status.success());
    let (deletes, _) = truth(&out);
    let stats = last(&lines, "stats");
    assert_estimated_row(row(stats, "delete"), deletes);
    assert_eq!(last(&lines, "summary")["estimated"], true);
}

/// The table marks every count `≈` with its interval; Prometheus says
/// estimated in its HELP texts and serves the observed fraction.
#[test]
fn table_and_prometheus_carry_the_marks() {
    let Some(bin) = phases("table_and_prometheus_carry_the_marks") else {
        return;
    };
    let dir = TempDir::new("max-overhead-table");
    let out = dir.join("truth.json");
    let port = free_local_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let p = Mapguard::spawn_cmd(
        mapguard_command(&[
            "watch",
            "--max-overhead",
            "2",
            "--interval",
            "500ms",
            "--metrics-addr",
            &addr,
            "--",
            bin.to_str().unwrap(),
            out.to_str().unwrap(),
            "service:5000:20000",
        ]),
        false,
    );
    std::thread::sleep(Duration::from_secs(3));
    let metrics = http_get(&addr, "/metrics", Duration::from_secs(5))
        .expect("scraping /metrics")
        .body;
    let (status, table, stderr) = p.finish_raw(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        table.contains("(estimated, 95% intervals: --max-overhead,"),
        "{table}"
    );
    assert!(table.contains("DELETES") && table.contains('≈'), "{table}");
    assert!(table.contains("of operations observed"), "{table}");
    assert!(
        metrics.contains("# HELP go_map_ops_total ESTIMATED (--max-overhead)"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE mapguard_observed_fraction gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mapguard_probe_overhead_percent{pid="),
        "{metrics}"
    );
}

/// delete-audit: the report's counts are estimates, every rule says it was
/// decided on them, and a `coverage` rule fails: a sampled audit is not a
/// full one. Without the rule the automatic coverage outcome passes, noted.
#[test]
fn audit_says_it_was_sampled() {
    let Some(bin) = phases("audit_says_it_was_sampled") else {
        return;
    };
    let dir = TempDir::new("max-overhead-audit");
    let out = dir.join("truth.json");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "delete-audit",
            "--duration",
            "4s",
            "--max-overhead",
            "2",
            "-o",
            "json",
            "--fail-on",
            "delete-rate=100000000",
        ];
        args.extend_from_slice(extra);
        args.extend([
            "--",
            bin.to_str().unwrap(),
            out.to_str().unwrap(),
            "service:6000:20000",
        ]);
        run_mapguard(&args, Duration::from_secs(60))
    };
    let (status, lines, stderr) = run(&[]);
    assert_eq!(status.code(), Some(0), "{stderr}\n{}", tail(&lines, 3));
    let report = last(&lines, "report");
    assert_eq!(report["estimated"], true, "{report}");
    assert!(report["observed_fraction"].as_f64().unwrap() < 1.0);
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["map_type"] == MAP && r["deletes"].as_u64().unwrap() > 0)
        .unwrap_or_else(|| panic!("{report}"));
    assert!(row["deletes_interval"].is_array(), "{row}");
    let verdict = last(&lines, "verdict");
    assert_eq!(verdict["estimated"], true, "{verdict}");
    for o in verdict["outcomes"].as_array().unwrap() {
        let note = o["note"].as_str().unwrap_or_else(|| panic!("{o}"));
        if o["rule"] == "coverage" {
            assert!(note.starts_with("not a full audit"), "{o}");
            assert_eq!(o["passed"], true, "{o}");
        } else {
            assert!(note.starts_with("decided on estimates"), "{o}");
        }
    }

    let (status, lines, stderr) = run(&["--fail-on", "coverage"]);
    assert_eq!(status.code(), Some(2), "{stderr}\n{}", tail(&lines, 3));
    let verdict = last(&lines, "verdict");
    let coverage = verdict["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["rule"].as_str().unwrap().contains("coverage"))
        .unwrap_or_else(|| panic!("{verdict}"));
    assert!(
        coverage["details"][0]
            .as_str()
            .unwrap()
            .starts_with("not a full audit"),
        "{coverage}"
    );
}

/// Bad percentages are one line on stderr, exit 2.
#[test]
fn bad_percentages_are_refused() {
    for bad in ["0", "101", "-1", "two", "2%%x", "2%%", "0.005"] {
        let flag = format!("--max-overhead={bad}");
        let (status, out, err) =
            run_mapguard_raw(&["watch", &flag, "--pid", "1"], Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{bad}: {err}");
        assert!(out.is_empty());
        assert!(
            err.contains("expected a percentage from 0.01 to 100"),
            "{bad}: {err}"
        );
        assert!(!err.contains("panicked"));
    }
}
