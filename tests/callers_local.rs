//! The caller of a map operation is the code that asked for it (README "The caller is the code
//! that asked"), also when the helpers that forwarded it were inlined: generic forwarders the
//! compiler inlined into their caller, and the standard maps package's iterator closures that
//! go1.23+ compiles under the caller's package name (`main.f.Insert[...]-range1`, from
//! GOROOT's maps/iter.go). tests/go/inlinedcallers writes down, for each operation, the caller
//! and `via` it expects, read from its own stack; this runs `trace -o json` on its builds and
//! compares every operation of its own packages with that.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) and the toolchains; see tests/common.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// A generic instance's shape arguments (`[go.shape.int]`) as `[...]`, the way
/// runtime.CallersFrames prints them in some releases and not in others.
fn generic_args_elided(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '[' => {
                if depth == 0 {
                    out.push_str("[...]");
                }
                depth += 1;
            }
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// One line of the program's truth.
#[derive(Debug)]
struct Site {
    tag: String,
    op: String,
    func: String,
    line: u64,
    via: String,
    n: u64,
}

fn sites(truth: &[Value]) -> Vec<Site> {
    truth
        .iter()
        .map(|t| Site {
            tag: t["tag"].as_str().expect("tag").to_string(),
            op: t["op"].as_str().expect("op").to_string(),
            func: generic_args_elided(t["func"].as_str().expect("func")),
            line: t["line"].as_u64().expect("line"),
            via: t["via"].as_str().expect("via").to_string(),
            n: t["n"].as_u64().expect("n"),
        })
        .collect()
}

/// Whether a frame lies in the standard library's maps package: by name, or,
/// for the closures go1.23+ names after the caller's package, by file.
fn in_std_maps(frame: &Value) -> bool {
    let func = frame["func"].as_str().unwrap_or("");
    let file = frame["file"].as_str().unwrap_or("");
    let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
    func.starts_with("maps.") || dir.ends_with("/src/maps") || dir == "maps"
}

/// Why `ev`'s `via` is not what the site expects, if it is not.
fn via_mismatch(site: &Site, ev: &Value) -> Option<String> {
    let via = ev.get("via").filter(|v| !v.is_null());
    let ok = match (site.via.as_str(), via) {
        ("-", None) => true,
        ("-", Some(_)) | (_, None) => false,
        ("std:maps", Some(v)) => in_std_maps(v),
        (prefix, Some(v)) => v["func"].as_str().unwrap_or("").starts_with(prefix),
    };
    (!ok).then(|| format!("{}: via should be {:?}", site.tag, site.via))
}

fn ours(frame: &str) -> bool {
    frame.starts_with("main.") || frame.starts_with("inlinedcallers/")
}

fn callers_are_the_code_that_asked(v: &Variant) {
    let Some(run) = run_program_t(
        v,
        "callers_are_the_code_that_asked",
        &["trace", "-o", "json"],
        "tests/go/inlinedcallers",
        true,
        &[],
        TIMEOUT,
        &[],
    ) else {
        return;
    };
    assert!(run.status.success(), "{}: {}", v.name, run.ctx());
    let sites = sites(&run.truth);
    let want_tags = |tags: &[&str]| {
        for tag in tags {
            assert!(
                sites.iter().any(|s| s.tag == *tag),
                "{}: the program wrote no truth for {tag}: {sites:?}",
                v.name
            );
        }
    };
    want_tags(&[
        "put_inl",
        "set_add",
        "store_put",
        "noted",
        "via_fn",
        "maybe_noted",
        "maybe_quiet",
        "upkg_put",
        "upkg_putni",
    ]);
    if v.minor() >= (1, 23) {
        want_tags(&["insert", "collect", "range_body"]);
    }

    let mut got: BTreeMap<&str, u64> = BTreeMap::new();
    // Keyed by what went wrong, with a count and one example event: a loop
    // repeats the same mistake.
    let mut wrong: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for e in events(&run.lines) {
        let caller = caller_func(e);
        let via = str_at(e, "/via/func");
        if !ours(caller) && !ours(via) {
            continue;
        }
        let func = generic_args_elided(caller);
        let line = e.pointer("/caller/line").and_then(Value::as_u64);
        let op = e["op"].as_str().unwrap_or("");
        let problem = match sites
            .iter()
            .find(|s| s.func == func && Some(s.line) == line && s.op == op)
        {
            Some(site) => {
                *got.entry(&site.tag).or_default() += 1;
                via_mismatch(site, e)
            }
            None => Some(format!(
                "{op} with a caller the program does not expect: {caller} line {line:?} via {via:?}"
            )),
        };
        if let Some(p) = problem {
            let w = wrong.entry(p).or_insert((0, e.to_string()));
            w.0 += 1;
        }
    }
    for s in &sites {
        let n = got.get(s.tag.as_str()).copied().unwrap_or(0);
        if n != s.n {
            wrong.insert(
                format!(
                    "{}: {n} {} events with caller {} line {}, the program did {}",
                    s.tag, s.op, s.func, s.line, s.n
                ),
                (1, String::new()),
            );
        }
    }
    let report: Vec<String> = wrong
        .iter()
        .map(|(what, (n, example))| format!("{what} (x{n}) {example}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{}: {} problems:\n{}\n\n{}",
        v.name,
        wrong.len(),
        report.join("\n"),
        run.ctx()
    );
    assert_eq!(summary(&run.lines)["drops"], 0, "{}", v.name);
}

variant_tests! {
    go1_21 => "go1.21": [callers_are_the_code_that_asked];
    go1_23 => "go1.23": [callers_are_the_code_that_asked];
    go1_24 => "go1.24": [callers_are_the_code_that_asked];
    go1_26 => "go1.26": [callers_are_the_code_that_asked];
    go1_27 => "go1.27": [callers_are_the_code_that_asked];
}

#[test]
fn generic_arguments_are_elided_at_every_depth() {
    assert_eq!(
        generic_args_elided("main.putInl[go.shape.string,go.shape.int]"),
        "main.putInl[...]"
    );
    assert_eq!(
        generic_args_elided("main.(*Store[go.shape.map[go.shape.string]go.shape.int]).Put"),
        "main.(*Store[...]).Put"
    );
    assert_eq!(generic_args_elided("main.putInl[...]"), "main.putInl[...]");
    assert_eq!(
        generic_args_elided("main.iterators-range1"),
        "main.iterators-range1"
    );
}
