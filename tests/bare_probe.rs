//! `bench-bare-probe` (hidden), the benchmark's baseline: a count-only uprobe at mapguard's
//! own probe points, and with `--user-reads` the floor of a probe that reads the process's
//! memory as `watch` does. Its counts are the benchmark's denominators, so they are checked
//! against a real Go program's own account.

mod common;

use common::*;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

fn deletes_in(truth: &str) -> usize {
    truth
        .lines()
        .filter(|l| l.contains(r#""op":"delete""#))
        .count()
}

#[test]
fn counts_every_delete_with_and_without_reads() {
    let v = variant("go1.25");
    let Some(bin) = traceable(
        &v,
        "counts_every_delete_with_and_without_reads",
        "tests/go/maptruth",
    ) else {
        return;
    };
    let dir = TempDir::new("bare-probe");
    for reads in ["0", "3"] {
        let truth = dir.join(format!("truth-{reads}.jsonl"));
        let (status, lines, stderr) = run_mapguard(
            &[
                "bench-bare-probe",
                "--ops",
                "delete",
                "--user-reads",
                reads,
                "--",
                bin.to_str().unwrap(),
                truth.to_str().unwrap(),
            ],
            TIMEOUT,
        );
        assert!(status.success(), "--user-reads {reads}: {stderr}");
        let expected = deletes_in(&std::fs::read_to_string(&truth).unwrap());
        assert!(expected > 0, "maptruth wrote no deletes");
        let line = lines
            .iter()
            .find(|l| l["kind"] == "bare_probe")
            .expect(&stderr);
        assert_eq!(
            line["hits"], expected as u64,
            "--user-reads {reads}: {line}"
        );
        assert_eq!(line["exit_status"], 0, "{line}");
    }
}

#[test]
fn more_than_three_reads_is_refused_in_one_line() {
    let (status, out, err) = run_mapguard_raw(
        &["bench-bare-probe", "--user-reads", "4", "--", "/bin/true"],
        TIMEOUT,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("--user-reads") && err.contains("0..=3"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
