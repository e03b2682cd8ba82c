//! `delete-audit` on real Go programs (tests/go/auditwork, manymaps) whose behaviour
//! satisfies or violates each rule: the exact verdict, exit code, report
//! counts, and JUnit that a real JUnit parser (Python junitparser) reads.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Every rule the README documents, in one policy.
const POLICY: &str = r#"
rules:
  - name: session-delete-rate
    max_delete_rate: 1000
    map_type: 'Session'
  - name: only-the-janitor-deletes-sessions
    forbidden_deleters:
      caller: '^main\.handle'
      map_type: 'map\[string\]\*main\.Session'
  - name: no-races
    no_concurrent_write: true
  - name: no-crash
    no_fatal: true
  - name: everything-audited
    coverage: true
"#;

struct Setup {
    dir: TempDir,
    bin: PathBuf,
    policy: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    if !bpf_available_or_skip(test) {
        return None;
    }
    let bin = build_go(&variant("go1.25"), Path::new("tests/go/auditwork"))?;
    let dir = TempDir::new(test);
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    Some(Setup { dir, bin, policy })
}

impl Setup {
    /// A policy with one sliding-window rule: more than 100 deletes in 5 minutes.
    fn window_policy(&self) -> PathBuf {
        let policy = self.dir.join("window.yaml");
        std::fs::write(
            &policy,
            "rules:\n- name: delete-storm\n  max_deletes: 100\n  window: 5m\n",
        )
        .unwrap();
        policy
    }

    /// `delete-audit --duration 60s -o FORMAT EXTRA -- auditwork MODE`.
    fn audit_args<'a>(&'a self, format: &'a str, extra: &[&'a str], mode: &'a str) -> Vec<&'a str> {
        let mut args = vec!["delete-audit", "--duration", "60s", "-o", format];
        args.extend(extra);
        args.extend(["--", self.bin.to_str().unwrap(), mode]);
        args
    }

    /// `delete-audit -o json --policy P [extra] -- auditwork MODE`: (exit code, report, verdict, stderr).
    fn audit(&self, mode: &str, extra: &[&str]) -> (i32, Value, Value, String) {
        self.audit_as("json", mode, extra)
    }

    /// The same with `-o FORMAT` (json or yaml), its documents read back.
    fn audit_as(&self, format: &str, mode: &str, extra: &[&str]) -> (i32, Value, Value, String) {
        let mut with_policy = vec!["--policy", self.policy.to_str().unwrap()];
        with_policy.extend(extra);
        let (status, stdout, stderr) =
            run_mapguard_raw(&self.audit_args(format, &with_policy, mode), TIMEOUT);
        let lines: Vec<Value> = if format == "yaml" {
            yaml_docs(&stdout)
        } else {
            stdout
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect()
        };
        let kinds: Vec<&str> = lines
            .iter()
            .map(|l| l["kind"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(kinds, ["report", "verdict", "summary"], "{stderr}");
        (
            status.code().unwrap_or(-1),
            lines[0].clone(),
            lines[1].clone(),
            stderr,
        )
    }
}

/// auditwork MODE audited with the policy: exit 1, exactly these rules failed (sorted);
/// (report, verdict), or None when the test must skip.
fn violates(test: &str, mode: &str, rules: &[&str]) -> Option<(Value, Value)> {
    let s = setup(test)?;
    let (code, report, verdict, _) = s.audit(mode, &[]);
    assert_eq!(code, 1, "{verdict:#}");
    assert_eq!(failed_rules(&verdict), rules);
    Some((report, verdict))
}

fn failed_rules(verdict: &Value) -> Vec<String> {
    let mut v: Vec<String> = verdict["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["rule"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn row<'a>(report: &'a Value, func: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["caller"]["func"] == func)
        .unwrap_or_else(|| panic!("no row for {func}: {report:#}"))
}

#[test]
fn a_calm_program_passes_with_an_exact_report() {
    let Some(s) = setup("a_calm_program_passes_with_an_exact_report") else {
        return;
    };
    let (code, report, verdict, stderr) = s.audit("calm", &[]);
    assert_calm_report(code, &report, &verdict, &stderr);
}

/// `-o yaml`: the same report, verdict and summary, as YAML documents.
#[test]
fn a_calm_program_in_yaml() {
    let Some(s) = setup("a_calm_program_in_yaml") else {
        return;
    };
    let (code, report, verdict, stderr) = s.audit_as("yaml", "calm", &[]);
    assert_calm_report(code, &report, &verdict, &stderr);
}

fn assert_calm_report(code: i32, report: &Value, verdict: &Value, stderr: &str) {
    assert_eq!(code, 0, "{verdict:#}\n{stderr}");
    assert_eq!(verdict["pass"], true);
    assert_eq!(verdict["could_not_audit"], false);
    assert!(failed_rules(&verdict).is_empty());
    // One outcome per rule per target.
    assert_eq!(verdict["outcomes"].as_array().unwrap().len(), 5);
    let janitor = row(report, "main.janitor");
    assert_eq!(janitor["deletes"], 20);
    assert_eq!(janitor["map_type"], "map[string]*main.Session");
    assert_eq!(row(report, "main.login")["assigns"], 20);
    let keys = &report["keys"][0];
    assert_eq!(keys["distinct_keys_deleted"], 20, "{report:#}");
    assert_eq!(keys["at_least"], false);
    assert_eq!(keys["top_deleted"].as_array().unwrap().len(), 5);
    let t = &report["targets"][0];
    assert_eq!(t["audited"], true);
    assert!(t["probes"].as_array().unwrap().len() >= 2);
    // Deletes were ~20/s at most: far under the 1000/s rule.
    let peak = janitor["peak_delete_rate"].as_f64().unwrap();
    assert!(peak > 0.0 && peak < 1000.0, "{peak}");
}

/// A map per request: the report counts the distinct keys deleted in every map, also those
/// past the busiest ones whose hot keys are named, and names the busiest map's deleted key.
#[test]
fn distinct_keys_deleted_count_every_map() {
    if !bpf_available_or_skip("distinct_keys_deleted_count_every_map") {
        return;
    }
    let Some(bin) = build_go(&variant("go1.25"), Path::new("tests/go/manymaps")) else {
        return;
    };
    let (status, stdout, stderr) = run_mapguard_raw(
        &[
            "delete-audit",
            "--duration",
            "60s",
            "-o",
            "json",
            "--",
            bin.to_str().unwrap(),
            "2000",
        ],
        TIMEOUT,
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let keys = |t: &str| {
        report["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["map_type"] == t)
            .unwrap_or_else(|| panic!("no keys of {t}: {report:#}"))
            .clone()
    };
    let requests = keys("map[string]main.header");
    assert_eq!(requests["distinct_keys_deleted"], 2000, "{requests:#}");
    assert_eq!(requests["at_least"], false);
    let sessions = keys("map[string]main.session");
    assert_eq!(sessions["distinct_keys_deleted"], 1);
    assert_eq!(sessions["top_deleted"][0]["key"], "cool", "{sessions:#}");
}

#[test]
fn a_delete_storm_violates_the_rate_rule() {
    let Some((report, verdict)) = violates(
        "a_delete_storm_violates_the_rate_rule",
        "storm",
        &["session-delete-rate"],
    ) else {
        return;
    };
    assert_eq!(row(&report, "main.janitor")["deletes"], 200_020);
    let detail = verdict["violations"][0]["details"][0].as_str().unwrap();
    assert!(
        detail.starts_with("map[string]*main.Session: peak"),
        "{detail}"
    );
}

#[test]
fn a_forbidden_deleter_is_named() {
    let Some((_, verdict)) = violates(
        "a_forbidden_deleter_is_named",
        "forbidden",
        &["only-the-janitor-deletes-sessions"],
    ) else {
        return;
    };
    let details = verdict["violations"][0]["details"].to_string();
    assert!(
        details.contains("main.handleLogout") && details.contains("deleted 3 times"),
        "{details}"
    );
    assert!(!details.contains("main.janitor"), "{details}");
}

#[test]
fn a_racing_program_violates_no_race_and_no_fatal() {
    let Some((report, _)) = violates(
        "a_racing_program_violates_no_race_and_no_fatal",
        "race",
        &["no-crash", "no-races"],
    ) else {
        return;
    };
    assert!(report["fatals"][0]["message"]
        .as_str()
        .unwrap()
        .contains("concurrent map writes"));
}

#[test]
fn fail_on_shortcuts_and_no_rules() {
    let Some(s) = setup("fail_on_shortcuts_and_no_rules") else {
        return;
    };
    // --fail-on without a policy file.
    let fail_on = ["--fail-on", "fatal,delete-rate=1000"];
    let (status, lines, _) = run_mapguard(&s.audit_args("json", &fail_on, "storm"), TIMEOUT);
    assert_eq!(status.code(), Some(1));
    assert_eq!(failed_rules(&lines[1]), ["fail-on-delete-rate=1000"]);
    // No rules at all: the verdict is coverage only.
    let (status, lines, stderr) = run_mapguard(&s.audit_args("json", &[], "calm"), TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no rules"), "{stderr}");
    assert_eq!(lines[1]["pass"], true);
}

/// Could not audit is exit 2, never a pass: a target that is not Go, a pid
/// that does not exist.
#[test]
fn could_not_audit_is_exit_2() {
    let Some(s) = setup("could_not_audit_is_exit_2") else {
        return;
    };
    let policy = s.policy.to_str().unwrap();
    for target in [vec!["--", "/bin/sleep", "1"], vec!["--pid", "999999999"]] {
        let mut args = vec![
            "delete-audit",
            "--duration",
            "5s",
            "-o",
            "junit",
            "--policy",
            policy,
        ];
        args.extend(target.iter().copied());
        let (status, stdout, stderr) = run_mapguard_raw(&args, TIMEOUT);
        assert_eq!(status.code(), Some(2), "{target:?}: {stderr}");
        assert!(
            !stdout.contains("failures=\"0\""),
            "{target:?} must not read as passed: {stdout}"
        );
        assert!(
            stdout.contains("<testcase classname=\"mapguard.(all targets)\" name=\"coverage"),
            "{target:?}: a failing coverage testcase, not an empty report: {stdout}"
        );
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
    }
}

/// JUnit: one testcase per rule per target, read by a real JUnit parser.
#[test]
fn junit_is_read_by_a_junit_parser() {
    let Some(s) = setup("junit_is_read_by_a_junit_parser") else {
        return;
    };
    let policy = ["--policy", s.policy.to_str().unwrap()];
    let (status, xml, stderr) =
        run_mapguard_raw(&s.audit_args("junit", &policy, "forbidden"), TIMEOUT);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let cases = junit_cases(&s.dir.join("report.xml"), &xml);
    assert_eq!(cases.len(), 5, "{cases:#?}");
    let failed: Vec<&Value> = cases.iter().filter(|c| c["failed"] == true).collect();
    assert_eq!(failed.len(), 1, "{cases:#?}");
    assert!(failed[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("only-the-janitor-deletes-sessions"));
    assert!(failed[0]["message"]
        .as_str()
        .unwrap()
        .contains("main.handleLogout"));
    assert!(cases
        .iter()
        .all(|c| c["suite"].as_str().unwrap().starts_with("pid ")));
}

/// The testcases of a JUnit report as a real JUnit parser (Python
/// junitparser) reads them: suite, name, failed, message.
fn junit_cases(file: &std::path::Path, xml: &str) -> Vec<Value> {
    std::fs::write(&file, xml).unwrap();
    let script = r#"
import sys, json
from junitparser import JUnitXml, Failure
xml = JUnitXml.fromfile(sys.argv[1])
cases = []
for suite in xml:
    for case in suite:
        failed = any(isinstance(r, Failure) for r in case.result)
        cases.append({"suite": suite.name, "name": case.name, "failed": failed,
                      "message": case.result[0].message if failed else None})
print(json.dumps(cases))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .env("PYTHONPATH", "/opt/mapguard-py")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "junitparser: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Without rules the report still holds a testcase per target, coverage:
/// a CI system reads a JUnit report with no testcase as broken or missing.
#[test]
fn junit_without_rules_holds_the_coverage_testcase() {
    let Some(s) = setup("junit_without_rules_holds_the_coverage_testcase") else {
        return;
    };
    let bin = s.bin.to_str().unwrap();
    let (status, xml, stderr) = run_mapguard_raw(
        &[
            "delete-audit",
            "--duration",
            "60s",
            "-o",
            "junit",
            "--",
            bin,
            "calm",
        ],
        TIMEOUT,
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        xml.contains(
            "<testsuites name=\"kubectl-mapguard delete-audit\" tests=\"1\" failures=\"0\""
        ),
        "{xml}"
    );
    let cases = junit_cases(&s.dir.join("report.xml"), &xml);
    assert_eq!(cases.len(), 1, "{cases:#?}");
    assert_eq!(
        cases[0]["name"], "coverage: every target audited",
        "{cases:#?}"
    );
    assert_eq!(cases[0]["failed"], false, "{cases:#?}");
    assert!(
        cases[0]["suite"].as_str().unwrap().starts_with("pid "),
        "{cases:#?}"
    );
    // The same outcome in the JSON verdict.
    let (status, lines, stderr) = run_mapguard(
        &[
            "delete-audit",
            "--duration",
            "60s",
            "-o",
            "json",
            "--",
            bin,
            "calm",
        ],
        TIMEOUT,
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    let outcomes = lines[1]["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:#?}");
    assert_eq!(outcomes[0]["rule"], "coverage");
    assert_eq!(outcomes[0]["passed"], true);
}

/// A sliding-window rule fires during the audit (an ALERT line on stderr)
/// and its firing is a violation.
#[test]
fn a_window_rule_fires_and_violates() {
    let Some(s) = setup("a_window_rule_fires_and_violates") else {
        return;
    };
    let policy = s.window_policy();
    let policy = ["--policy", policy.to_str().unwrap()];
    let (status, lines, stderr) = run_mapguard(&s.audit_args("json", &policy, "storm"), TIMEOUT);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ALERT mapguard alert delete-storm"),
        "{stderr}"
    );
    assert_eq!(failed_rules(&lines[1]), ["delete-storm"]);
}

/// A local webhook receiver: answers each POST with `status` (or never, when
/// `hang`), and keeps every body it read.
struct Receiver {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn receiver(status: u16, hang: bool) -> Receiver {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = conn.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break body.to_string();
                        }
                    }
                };
                kept.lock().unwrap().push(body);
                if hang {
                    std::thread::sleep(Duration::from_secs(3600));
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            });
        }
    });
    Receiver { url, bodies }
}

/// `watch --policy --alert-webhook`: a window rule firing posts Slack-style
/// JSON; a receiver that hangs or fails never holds the stream up.
#[test]
fn watch_alerts_reach_a_webhook_and_never_block() {
    let Some(s) = setup("watch_alerts_reach_a_webhook_and_never_block") else {
        return;
    };
    let policy = s.window_policy();
    let bin = s.bin.to_str().unwrap();
    for (name, r) in [
        ("ok", receiver(200, false)),
        ("hangs", receiver(200, true)),
        ("fails", receiver(500, false)),
    ] {
        let (status, lines, stderr) = run_mapguard(
            &[
                "watch",
                "--interval",
                "500ms",
                "-o",
                "json",
                "--policy",
                policy.to_str().unwrap(),
                "--alert-webhook",
                &r.url,
                "--",
                bin,
                "storm",
            ],
            TIMEOUT,
        );
        assert!(status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains("ALERT mapguard alert delete-storm"),
            "{name}: {stderr}"
        );
        // The stream went on to its end: stats and the summary.
        assert!(
            lines.iter().filter(|l| l["kind"] == "stats").count() >= 2,
            "{name}"
        );
        assert_eq!(lines.last().unwrap()["kind"], "summary", "{name}");
        let bodies = r.bodies.lock().unwrap().clone();
        assert!(!bodies.is_empty(), "{name}: nothing posted");
        let first: Value = serde_json::from_str(&bodies[0])
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", bodies[0]));
        assert!(
            first["text"].as_str().unwrap().contains("delete-storm"),
            "{name}: {first}"
        );
        match name {
            "ok" => assert_eq!(bodies.len(), 1, "one firing, one post"),
            // Retried with backoff, then given up, and said so.
            "fails" => {
                assert!(bodies.len() >= 2, "{name}: {} attempts", bodies.len());
                assert!(stderr.contains("webhook"), "{stderr}");
            }
            _ => assert!(stderr.contains("webhook"), "{name}: {stderr}"),
        }
    }
}

/// An audit stopped by SIGTERM, or by Ctrl-C to its process group (the
/// command gets the SIGINT too), before its `--duration`: never a pass.
/// Every format says it was interrupted and how much of the time asked it
/// covered, still carries what it saw, and the command is ended; exit 2, or
/// 1 when a rule was already broken before the stop.
#[test]
fn an_interrupted_audit_is_not_a_pass() {
    use std::os::unix::process::CommandExt;
    let Some(s) = setup("an_interrupted_audit_is_not_a_pass") else {
        return;
    };
    let bin = s.bin.to_str().unwrap();
    let cases: [(&str, &str, bool, &[&str], i32); 5] = [
        ("json", "TERM", false, &[], 2),
        ("table", "INT", true, &[], 2),
        ("junit", "TERM", false, &[], 2),
        ("yaml", "INT", true, &[], 2),
        // Janitor deletes ~20/s: broken before the stop, and said so.
        ("json", "INT", true, &["--fail-on", "delete-rate=5"], 1),
    ];
    for (format, sig, group, extra, code) in cases {
        let what = format!(
            "-o {format} {extra:?}, SIG{sig}{}",
            if group { " to the group" } else { "" }
        );
        let mut args = vec!["delete-audit", "--duration", "30s", "-o", format];
        args.extend(extra);
        args.extend(["--", bin, "steady"]);
        let mut cmd = mapguard_command(&args);
        if group {
            cmd.process_group(0);
        }
        let p = Mapguard::spawn_cmd(cmd, false);
        // Said at the run's first line: the probes are live.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !p.stderr().contains("auditing for 30s") {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {}",
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(2500));
        if group {
            let pgid = format!("-{}", p.pid());
            Command::new("kill")
                .args(["-s", sig, "--", &pgid])
                .status()
                .unwrap();
        } else {
            p.signal(sig);
        }
        let (status, stdout, stderr) = p.finish_raw(TIMEOUT);
        assert_eq!(status.code(), Some(code), "{what}: {stderr}\n{stdout}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("delete-audit: ")
                && last.contains("interrupted (SIGINT or SIGTERM) after ")
                && last.contains("s of the 30s asked: not a full audit"),
            "{what}: {stderr}"
        );
        match format {
            "json" | "yaml" => {
                let lines: Vec<Value> = if format == "yaml" {
                    yaml_docs(&stdout)
                } else {
                    stdout
                        .lines()
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect()
                };
                let (report, verdict) = (&lines[0], &lines[1]);
                assert_eq!(report["interrupted"], true, "{what}: {report:#}");
                assert_eq!(report["requested_duration_ms"], 30_000, "{what}");
                let covered = report["duration_ms"].as_u64().unwrap();
                assert!((2000..30_000).contains(&covered), "{what}: {covered}");
                // What it saw until the stop is kept.
                assert!(row(report, "main.janitor")["deletes"].as_u64().unwrap() >= 20);
                assert_eq!(verdict["pass"], false, "{what}");
                assert_eq!(verdict["could_not_audit"], true, "{what}");
                let coverage = verdict["outcomes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["rule"] == "coverage")
                    .unwrap_or_else(|| panic!("{what}: {verdict:#}"));
                assert_eq!(coverage["passed"], false, "{what}");
                let detail = coverage["details"][0].as_str().unwrap();
                assert!(
                    detail.starts_with("interrupted (SIGINT or SIGTERM) after ")
                        && detail.ends_with("s of the 30s asked: not a full audit"),
                    "{what}: {detail}"
                );
                if code == 1 {
                    assert_eq!(failed_rules(verdict), ["coverage", "fail-on-delete-rate=5"]);
                }
                // The command was ended, as on any stop.
                let pid = report["targets"][0]["pid"].as_u64().unwrap();
                assert!(
                    !Path::new(&format!("/proc/{pid}")).exists(),
                    "{what}: auditwork (pid {pid}) still runs"
                );
            }
            "table" => {
                assert!(
                    stdout.starts_with("NOT A FULL AUDIT: interrupted (SIGINT or SIGTERM) after "),
                    "{what}: {stdout}"
                );
                assert!(stdout.contains("main.janitor"), "{what}: {stdout}");
                assert!(
                    stdout.contains(
                        "VERDICT: COULD NOT AUDIT (interrupted, not a full audit; see above)"
                    ),
                    "{what}: {stdout}"
                );
            }
            _ => {
                let cases = junit_cases(&s.dir.join("interrupted.xml"), &stdout);
                assert_eq!(cases.len(), 1, "{what}: {cases:#?}");
                assert_eq!(cases[0]["failed"], true, "{what}: {cases:#?}");
                let message = cases[0]["message"].as_str().unwrap();
                assert!(
                    message.starts_with("interrupted (SIGINT or SIGTERM) after ")
                        && message.contains("of the 30s asked"),
                    "{what}: {message}"
                );
            }
        }
    }
}

/// A traced program's keys with ESC, NUL and a newline, and a policy rule
/// named with them: the table shows each as `·`, so nothing reaches the
/// terminal and no row splits.
#[test]
fn control_characters_stay_out_of_the_table() {
    let Some(s) = setup("control_characters_stay_out_of_the_table") else {
        return;
    };
    let policy = s.dir.join("controls.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - name: \"evil\\e[2Jrule\\nsplit\\0\"\n    no_fatal: true\n",
    )
    .unwrap();
    let policy = ["--policy", policy.to_str().unwrap()];
    let (status, table, stderr) =
        run_mapguard_raw(&s.audit_args("table", &policy, "escapes"), TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for c in ['\x1b', '\0'] {
        assert!(!table.contains(c), "{c:?} reached the table: {table:?}");
    }
    // The three keys stay on the one row of their map type.
    let keys = table
        .lines()
        .find(|l| l.contains("esc-·[31mred ×1"))
        .unwrap_or_else(|| panic!("no row with the ESC key: {table}"));
    assert!(
        keys.contains("nl-a·b ×1") && keys.contains("nul-·-x ×1"),
        "{keys}"
    );
    assert!(
        table.lines().any(|l| l.contains("evil·[2Jrule·split· ")),
        "{table}"
    );
}

/// A bad input is one line on stderr, `error: ...`, and nothing before it:
/// not Go, no such pid, a webhook URL that cannot be posted to.
#[test]
fn a_bad_input_is_one_line() {
    let Some(s) = setup("a_bad_input_is_one_line") else {
        return;
    };
    let bin = s.bin.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--", "/bin/sleep", "1"], "no Go build info"),
        (&["--pid", "999999999"], "no process with pid 999999999"),
        (
            &["--alert-webhook", "ftp://x", "--", bin, "calm"],
            "alert webhook URL scheme \"ftp\"",
        ),
    ];
    for (target, says) in cases {
        for format in ["table", "json"] {
            let mut args = vec!["delete-audit", "--duration", "5s", "-o", format];
            args.extend(target);
            let (status, _, stderr) = run_mapguard_raw(&args, TIMEOUT);
            assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
            assert!(
                lines[0].starts_with("error: ") && lines[0].contains(says),
                "{args:?}: {stderr}"
            );
        }
    }
}

/// A row is a site: one function that assigns on one line and deletes on two others has a row
/// for each line, with that line's own counts (and the forbidden-deleter rule names each line).
#[test]
fn each_line_of_a_function_is_its_own_row() {
    let Some(s) = setup("each_line_of_a_function_is_its_own_row") else {
        return;
    };
    let source = std::fs::read_to_string("tests/go/auditwork/main.go").unwrap();
    let line_of = |marker: &str| {
        1 + source
            .lines()
            .position(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?} in auditwork")) as u64
    };
    let (code, report, _, stderr) = s.audit("sites", &[]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["caller"]["func"] == "main.expire")
        .collect();
    let at = |line: u64| -> (u64, u64) {
        let r = rows
            .iter()
            .find(|r| r["caller"]["line"] == line)
            .unwrap_or_else(|| panic!("no row at line {line}: {rows:#?}"));
        (
            r["assigns"].as_u64().unwrap(),
            r["deletes"].as_u64().unwrap(),
        )
    };
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(at(line_of("sites: assign")), (30, 0));
    assert_eq!(at(line_of("sites: delete first")), (0, 20));
    assert_eq!(at(line_of("sites: delete rest")), (0, 10));
}
