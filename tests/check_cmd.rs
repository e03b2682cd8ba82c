//! `kubectl-mapguard check BINARY [-o table|json]` end to end: the real binary run on
//! tests/go/maptruth built with every variant of the matrix (Go 1.21–1.27, noswissmap,
//! stripped, PIE, stripped PIE), and on files that are not traceable.
//!
//! The truth is independent of mapguard's reader (src/gobin): Go's own standard library
//! (debug/buildinfo, debug/elf, debug/gosym, through tests/go/elftruth) gives the version,
//! build settings, ELF type, segments and function entries, and a disassembler (objdump or
//! llvm-objdump) finds the `push %rbp` each probe must sit on. No BPF needed; Go toolchains are
//! (missing ones are loud skips, failures under MAPGUARD_REQUIRE_BPF=1).

#[macro_use]
mod common;

use common::{
    build_go, find_in_path, go_binary, manifest_dir, mapguard_command, not_run, skip, target_dir,
    variants, TempDir, Variant,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The map functions maptruth makes the linker keep on amd64, in check's order, with op and
/// key kind (maptruth uses string, int32/uint32, int64/uint64, pointer and struct keys, big
/// elements, clear(m) and the range-delete idiom).
const EXPECTED_PROBES: [(&str, &str, &str); 11] = [
    ("runtime.mapdelete", "delete", "generic"),
    ("runtime.mapdelete_fast32", "delete", "fast32"),
    ("runtime.mapdelete_fast64", "delete", "fast64"),
    ("runtime.mapdelete_faststr", "delete", "faststr"),
    ("runtime.mapassign", "assign", "generic"),
    ("runtime.mapassign_fast32", "assign", "fast32"),
    ("runtime.mapassign_fast64", "assign", "fast64"),
    ("runtime.mapassign_fast64ptr", "assign", "fast64ptr"),
    ("runtime.mapassign_faststr", "assign", "faststr"),
    ("runtime.mapclear", "clear", "none"),
    ("runtime.fatal", "fatal", "none"),
];

/// Exists on 32-bit targets only: never linked into an amd64 binary.
const NEVER_ON_AMD64: &str = "runtime.mapassign_fast32ptr";

/// runtime.g.goid by Go minor version (GO_RUNTIME.md, read from DWARF of real builds).
fn goid_table(minor: u32) -> u64 {
    match minor {
        21 | 22 | 25 | 26 | 27 => 152,
        23 | 24 => 160,
        m => panic!("no goid table entry for go1.{m}: extend the test"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running the tool.

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

fn check(args: &[&str]) -> Run {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let what = format!("kubectl-mapguard {}", all.join(" "));
    let out: Output = mapguard_command(&all)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    };
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "internal error",
        "stack backtrace",
    ] {
        assert!(
            !run.stderr.contains(bad) && !run.stdout.contains(bad),
            "{}: {bad:?} in the output\nstdout:\n{}\nstderr:\n{}",
            run.what,
            run.stdout,
            run.stderr
        );
    }
    run
}

impl Run {
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{}: exit code\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The one line of `text`; panics with `rule` ("stderr must be") otherwise.
    fn only_line<'a>(&self, rule: &str, text: &'a str) -> &'a str {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: {rule} exactly one line, got:\n{text}",
            self.what
        );
        lines[0]
    }

    /// stdout is exactly one line holding one JSON object.
    fn json(&self) -> Value {
        let line = self.only_line("-o json must print", &self.stdout);
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}): {line}", self.what));
        assert!(v.is_object(), "{}: not an object: {v}", self.what);
        v
    }

    /// The one `error: ...` line on stderr, without its prefix.
    fn one_error_line(&self) -> String {
        let l = self.only_line("stderr must be", &self.stderr);
        assert!(
            l.starts_with("error: ") && l.len() > 30,
            "{}: stderr line should be `error: <reason>`: {l:?}",
            self.what
        );
        l["error: ".len()..].to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// The independent truth.

/// What Go's standard library reads from a binary (tests/go/elftruth).
#[derive(Debug, Default)]
struct GoTruth {
    version: String,
    settings: BTreeMap<String, String>,
    elf_type: String,
    symtab: bool,
    /// (vaddr, offset, filesz, executable)
    loads: Vec<(u64, u64, u64, bool)>,
    /// name -> (entry, end)
    funcs: BTreeMap<String, (u64, u64)>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not a hex number: {s:?}"))
}

fn elftruth_bin() -> Option<&'static PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        // Any installed toolchain reads every format of the matrix (pclntab 1.20+ layout);
        // the newest one is the most likely to be there.
        let v = variants()
            .into_iter()
            .rev()
            .filter(|v| !v.pie && !v.stripped && v.goexperiment.is_none())
            .find(|v| go_binary(v).is_file())
            .or_else(|| variants().into_iter().next())?;
        build_go(&v, Path::new("tests/go/elftruth"))
    })
    .as_ref()
}

fn go_truth(bin: &Path) -> GoTruth {
    let tool = elftruth_bin().expect("elftruth builds wherever maptruth does");
    let out = Command::new(tool).arg(bin).output().expect("run elftruth");
    assert!(
        out.status.success(),
        "elftruth {}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut t = GoTruth::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["GOVERSION", v] => t.version = v.to_string(),
            ["SETTING", k, v] => {
                t.settings.insert(k.to_string(), v.to_string());
            }
            ["ELFTYPE", e] => t.elf_type = e.to_string(),
            ["SYMTAB", s] => t.symtab = *s == "true",
            ["LOAD", va, off, sz, x] => t.loads.push((hex(va), hex(off), hex(sz), *x == "true")),
            ["FUNC", name, entry, end] => {
                t.funcs.insert(name.to_string(), (hex(entry), hex(end)));
            }
            _ => panic!("unexpected elftruth line {line:?}"),
        }
    }
    assert!(t.version.starts_with("go1."), "elftruth: {t:?}");
    assert!(!t.loads.is_empty(), "elftruth: no PT_LOAD: {t:?}");
    t
}

/// A disassembler on this machine, or a loud skip (a failure under MAPGUARD_REQUIRE_BPF=1).
fn disassembler() -> Option<&'static PathBuf> {
    static D: OnceLock<Option<PathBuf>> = OnceLock::new();
    D.get_or_init(|| {
        let found = find_in_path("objdump").or_else(|| find_in_path("llvm-objdump"));
        if found.is_none() {
            skip("no objdump or llvm-objdump: probe sites are not checked against a disassembler");
        }
        found
    })
    .as_ref()
}

/// Address of the first `push %rbp` in [entry, end) as the disassembler decodes it: where a
/// probe must sit (right after the stack-bound check; at the entry of a function without one).
fn first_push_rbp(dis: &Path, bin: &Path, entry: u64, end: u64) -> u64 {
    let stop = end.min(entry + 64);
    let out = Command::new(dis)
        .arg("-d")
        .arg(format!("--start-address={entry:#x}"))
        .arg(format!("--stop-address={stop:#x}"))
        .arg(bin)
        .output()
        .expect("run the disassembler");
    assert!(out.status.success(), "{}: {:?}", dis.display(), out);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let Some((addr, insn)) = line.split_once(':') else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr.trim(), 16) else {
            continue;
        };
        let mut words = insn.split_whitespace().skip_while(|w| {
            w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()) // raw bytes
        });
        if words.next().is_some_and(|m| m.starts_with("push"))
            && words.next().is_some_and(|o| o == "%rbp")
        {
            return addr;
        }
    }
    panic!(
        "no push %rbp in {entry:#x}..{stop:#x} of {}:\n{text}",
        bin.display()
    );
}

fn str_at<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {field:?} in {v}"))
}

fn bool_at(v: &Value, field: &str) -> bool {
    v.get(field)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("no bool field {field:?} in {v}"))
}

fn maptruth(v: &Variant) -> Option<PathBuf> {
    build_go(v, Path::new("tests/go/maptruth"))
}

// ---------------------------------------------------------------------------------------------
// Per variant: -o json against Go's own reading of the binary, and the table against the JSON.

fn json_matches_go_stdlib(v: &Variant) {
    let Some(bin) = maptruth(v) else { return };
    let name = v.name;
    let path = bin.to_str().expect("utf-8 path");
    let run = check(&[path, "-o", "json"]);
    run.expect_code(0);
    assert!(
        run.stderr.is_empty(),
        "{name}: stderr must be empty: {}",
        run.stderr
    );
    let j = run.json();
    let truth = go_truth(&bin);

    assert_eq!(j["v"], 1, "{name}: {j}");
    assert_eq!(str_at(&j, "kind"), "check", "{name}");
    assert_eq!(str_at(&j, "path"), path, "{name}");
    assert!(bool_at(&j, "traceable"), "{name}: {j}");
    assert!(
        j.get("reason").is_none() && j.get("reason_code").is_none(),
        "{name}: {j}"
    );

    // Version and map layout.
    assert_eq!(str_at(&j, "go_version"), v.go_version(), "{name}");
    // debug/buildinfo says "go1.24.11 X:noswissmap" for an experiment build.
    let (truth_version, truth_x) = truth
        .version
        .split_once(" X:")
        .unwrap_or((truth.version.as_str(), ""));
    assert_eq!(str_at(&j, "go_version"), truth_version, "{name}");
    assert_eq!(str_at(&j, "map_impl"), v.map_impl(), "{name}");
    let want_exp: Vec<String> = truth
        .settings
        .get("GOEXPERIMENT")
        .map(|e| e.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let got_exp: Vec<String> = j["experiments"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: experiments must be a list: {j}"))
        .iter()
        .map(|e| e.as_str().expect("experiment string").to_string())
        .collect();
    assert_eq!(got_exp, want_exp, "{name}: experiments vs build info");
    let version_x: Vec<&str> = truth_x.split(',').filter(|x| !x.is_empty()).collect();
    assert_eq!(
        got_exp, version_x,
        "{name}: experiments vs the version's X: suffix"
    );
    assert_eq!(
        got_exp.iter().any(|e| e == "noswissmap"),
        v.goexperiment == Some("noswissmap"),
        "{name}: {got_exp:?}"
    );

    // Layout and symbols.
    assert_eq!(bool_at(&j, "pie"), v.pie, "{name}");
    assert_eq!(bool_at(&j, "pie"), truth.elf_type == "ET_DYN", "{name}");
    assert_eq!(bool_at(&j, "stripped"), v.stripped, "{name}");
    assert_eq!(bool_at(&j, "stripped"), !truth.symtab, "{name}");
    let src = if v.stripped { "pclntab" } else { "symtab" };
    assert_eq!(str_at(&j, "symbol_source"), src, "{name}");

    // Goroutine id: DWARF when the build has it, else the table; the same number either way.
    assert_eq!(
        j["goid_offset"].as_u64(),
        Some(goid_table(v.minor().1)),
        "{name}: {j}"
    );
    let goid_src = if v.stripped { "table" } else { "dwarf" };
    assert_eq!(str_at(&j, "goid_source"), goid_src, "{name}");

    // Probes: which, in which order, and exactly where.
    let probes = j["probes"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: probes must be a list: {j}"));
    let got: Vec<(&str, &str, &str)> = probes
        .iter()
        .map(|p| {
            (
                str_at(p, "function"),
                str_at(p, "op"),
                str_at(p, "key_kind"),
            )
        })
        .collect();
    assert_eq!(got, EXPECTED_PROBES.to_vec(), "{name}: probes");
    let file = std::fs::read(&bin).expect("read the binary");
    let dis = disassembler();
    for p in probes {
        let func = str_at(p, "function");
        let (entry, end) = *truth
            .funcs
            .get(func)
            .unwrap_or_else(|| panic!("{name}: Go's debug/gosym has no {func}"));
        assert_eq!(hex(str_at(p, "entry")), entry, "{name}: {func} entry");
        let addr = hex(str_at(p, "address"));
        assert!(
            addr >= entry && addr < end,
            "{name}: {func} address {addr:#x}"
        );
        if let Some(dis) = dis {
            let want = first_push_rbp(dis, &bin, entry, end);
            assert!(
                addr == want,
                "{name}: {func} probed at {addr:#x}, its push %rbp is at {want:#x}"
            );
        }
        assert_eq!(
            bool_at(p, "after_stack_check"),
            addr != entry,
            "{name}: {func}: {p}"
        );
        if func != "runtime.fatal" {
            assert!(addr > entry, "{name}: {func} has a stack check: {p}");
        }
        // The file offset from the executable PT_LOAD holding the address.
        let (vaddr, off, _, _) = *truth
            .loads
            .iter()
            .find(|l| l.3 && addr >= l.0 && addr < l.0 + l.2)
            .unwrap_or_else(|| panic!("{name}: {func} {addr:#x} in no executable PT_LOAD"));
        let want_off = addr - vaddr + off;
        let got_off = hex(str_at(p, "file_offset"));
        assert!(
            got_off == want_off,
            "{name}: {func} file_offset {got_off:#x}, want {want_off:#x} ({addr:#x} in the \
             PT_LOAD at vaddr {vaddr:#x}, offset {off:#x})"
        );
        assert_eq!(
            file.get(want_off as usize),
            Some(&0x55),
            "{name}: {func}: the byte at the file offset is not push %rbp"
        );
    }

    // The one function never linked on amd64 is reported, as not linked.
    assert!(!truth.funcs.contains_key(NEVER_ON_AMD64), "{name}");
    let absent = j["absent"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: absent must be a list: {j}"));
    assert_eq!(absent.len(), 1, "{name}: {absent:?}");
    assert_eq!(str_at(&absent[0], "function"), NEVER_ON_AMD64, "{name}");
    assert_eq!(str_at(&absent[0], "op"), "assign", "{name}");
    assert_eq!(str_at(&absent[0], "reason"), "not linked", "{name}");
}

/// `-o yaml`: the JSON report as one YAML document.
fn yaml_is_the_json_report(v: &Variant) {
    let Some(bin) = maptruth(v) else { return };
    let name = v.name;
    let path = bin.to_str().expect("utf-8 path");
    let j = check(&[path, "-o", "json"]).json();
    let run = check(&[path, "-o", "yaml"]);
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("---\n"),
        "{name}: a YAML document starts with ---:\n{}",
        run.stdout
    );
    let y: Value = serde_yaml_ng::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{name}: not YAML ({e}):\n{}", run.stdout));
    assert_eq!(y, j, "{name}: -o yaml and -o json differ");
}

fn table_shows_the_same_facts(v: &Variant) {
    let Some(bin) = maptruth(v) else { return };
    let name = v.name;
    let path = bin.to_str().expect("utf-8 path");
    let j = check(&[path, "-o", "json"]).json();
    let run = check(&[path]);
    run.expect_code(0);
    assert!(run.stderr.is_empty(), "{name}: stderr: {}", run.stderr);
    let out = &run.stdout;
    let field = |label: &str| -> String {
        let line = out
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{name}: no {label:?} line in:\n{out}"));
        line[label.len()..].trim().to_string()
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    assert_eq!(field("Path:"), path, "{name}");
    assert_eq!(field("Traceable:"), "yes", "{name}");
    assert_eq!(field("Go version:"), v.go_version(), "{name}");
    assert_eq!(field("Map implementation:"), v.map_impl(), "{name}");
    assert_eq!(
        field("GOEXPERIMENT:"),
        v.goexperiment.unwrap_or("none"),
        "{name}"
    );
    assert_eq!(field("PIE:"), yes(v.pie), "{name}");
    assert_eq!(field("Stripped:"), yes(v.stripped), "{name}");
    assert_eq!(
        field("Symbols from:"),
        if v.stripped { "pclntab" } else { "symtab" },
        "{name}"
    );
    let goid = field("Goroutine id offset:");
    let want_goid = format!("{} (from ", goid_table(v.minor().1));
    assert!(goid.starts_with(&want_goid), "{name}: {goid}");
    assert!(
        goid.contains(if v.stripped { "table" } else { "DWARF" }),
        "{name}: {goid}"
    );

    // The header row, then one row per function with the JSON's numbers.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let header = rows
        .iter()
        .find(|r| r.first() == Some(&"FUNCTION"))
        .unwrap_or_else(|| panic!("{name}: no FUNCTION header in:\n{out}"));
    assert_eq!(
        header[..6],
        [
            "FUNCTION",
            "OP",
            "KEY_KIND",
            "ENTRY",
            "ADDRESS",
            "FILE_OFFSET"
        ],
        "{name}"
    );
    for p in j["probes"].as_array().expect("probes") {
        let func = str_at(p, "function");
        let row = rows
            .iter()
            .find(|r| r.first() == Some(&func))
            .unwrap_or_else(|| panic!("{name}: no row for {func} in:\n{out}"));
        assert_eq!(
            row[1..6],
            [
                str_at(p, "op"),
                str_at(p, "key_kind"),
                str_at(p, "entry"),
                str_at(p, "address"),
                str_at(p, "file_offset"),
            ],
            "{name}: {func} row"
        );
    }
    let absent = out
        .lines()
        .find(|l| l.starts_with(NEVER_ON_AMD64))
        .unwrap_or_else(|| panic!("{name}: no {NEVER_ON_AMD64} row in:\n{out}"));
    assert!(absent.contains("absent (not linked)"), "{name}: {absent}");
}

variant_tests! {
    go1_21 => "go1.21": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_22 => "go1.22": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_23 => "go1.23": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_24 => "go1.24": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_24_noswissmap => "go1.24-noswissmap": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_25 => "go1.25": [json_matches_go_stdlib, table_shows_the_same_facts, yaml_is_the_json_report];
    go1_26 => "go1.26": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_27 => "go1.27": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_22_stripped => "go1.22-stripped": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_26_stripped => "go1.26-stripped": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_22_pie => "go1.22-pie": [json_matches_go_stdlib, table_shows_the_same_facts];
    go1_25_pie_stripped => "go1.25-pie-stripped": [json_matches_go_stdlib, table_shows_the_same_facts];
}

#[test]
fn the_matrix_is_covered() {
    // variant_tests! above names each variant by hand: a new one must be added there.
    let listed = [
        "go1.21",
        "go1.22",
        "go1.23",
        "go1.24",
        "go1.24-noswissmap",
        "go1.25",
        "go1.26",
        "go1.27",
        "go1.22-stripped",
        "go1.26-stripped",
        "go1.22-pie",
        "go1.25-pie-stripped",
        // Not above: elftruth counts function entries from .text, as Go's own objdump does,
        // which a stripped cgo build of 1.26+ no longer lines up with (C code comes first).
        // trace_local runs these end to end: a probe off its instruction would break the run.
        "go1.26-cgo-stripped",
        "go1.27-cgo-pie-stripped",
    ];
    let all: Vec<&str> = variants().iter().map(|v| v.name).collect();
    assert_eq!(all, listed, "update variant_tests! in tests/check_cmd.rs");
}

// ---------------------------------------------------------------------------------------------
// Not traceable: exit 2, one clear line on stderr, and with -o json also the object on stdout.

/// Runs both formats on `path`; returns the reason line. The table run prints nothing on
/// stdout; the JSON run prints `traceable: false` with `reason` (= the stderr line) and
/// `reason_code`.
fn not_traceable(path: &str, code: &str) -> (String, Value) {
    let table = check(&[path]);
    table.expect_code(2);
    assert!(
        table.stdout.is_empty(),
        "{}: stdout must be empty: {}",
        table.what,
        table.stdout
    );
    let reason = table.one_error_line();

    let json = check(&[path, "-o", "json"]);
    json.expect_code(2);
    let j = json.json();
    assert_eq!(
        json.one_error_line(),
        reason,
        "the same reason in both formats"
    );
    assert_eq!(j["v"], 1, "{j}");
    assert_eq!(str_at(&j, "kind"), "check", "{j}");
    assert_eq!(str_at(&j, "path"), path, "{j}");
    assert!(!bool_at(&j, "traceable"), "{j}");
    assert_eq!(str_at(&j, "reason"), reason, "{j}");
    assert_eq!(str_at(&j, "reason_code"), code, "{j}");
    (reason, j)
}

#[test]
fn a_c_program_is_not_a_go_binary() {
    let Some(t) = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        skip("no /bin/true");
        return;
    };
    let (reason, j) = not_traceable(t, "not_go");
    assert!(reason.contains("not a Go binary"), "{reason}");
    assert!(reason.contains(t), "names the file: {reason}");
    assert!(j.get("go_version").is_none(), "{j}");
}

#[test]
fn a_script_is_not_a_go_binary() {
    let dir = TempDir::new("check-script");
    let script = dir.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let (reason, _) = not_traceable(script.to_str().unwrap(), "not_go");
    assert!(reason.contains("not a Go binary"), "{reason}");
    assert!(reason.contains("not an ELF file"), "{reason}");
}

#[test]
fn a_missing_path_says_no_such_file() {
    let dir = TempDir::new("check-missing");
    let p = dir.join("no-such-program");
    let p = p.to_str().unwrap();
    let (reason, _) = not_traceable(p, "not_found");
    assert!(
        reason.starts_with(&format!("no such file: {p}")),
        "{reason}"
    );
}

#[test]
fn a_directory_is_not_an_executable() {
    let dir = TempDir::new("check-dir");
    let (reason, _) = not_traceable(dir.path().to_str().unwrap(), "not_a_file");
    assert!(reason.contains("is a directory"), "{reason}");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = TempDir::new("check-fifo");
    let fifo = dir.join("pipe");
    let ok = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("mkfifo failed");
        return;
    }
    let (reason, _) = not_traceable(fifo.to_str().unwrap(), "not_a_file");
    assert!(reason.contains("not a regular file"), "{reason}");
}

#[test]
fn an_unreadable_file_says_so() {
    let dir = TempDir::new("check-unreadable");
    let p = dir.join("secret");
    std::fs::write(&p, b"\x7fELF").unwrap();
    let _ = Command::new("chmod").arg("000").arg(&p).status();
    if std::fs::read(&p).is_ok() {
        // Root reads anything: nothing to test here (not a skip: CI runs as root too).
        not_run("running with privilege to read mode-000 files: the unreadable case");
        return;
    }
    let (reason, _) = not_traceable(p.to_str().unwrap(), "unreadable");
    assert!(reason.contains("cannot read"), "{reason}");
}

/// The newest installed plain variant, for the cases that need one Go build.
fn plain_variant() -> Option<Variant> {
    let v = variants()
        .into_iter()
        .rev()
        .filter(|v| !v.pie && !v.stripped && v.goexperiment.is_none())
        .find(|v| go_binary(v).is_file());
    if v.is_none() {
        skip("no Go toolchain installed");
    }
    v
}

#[test]
fn an_arm64_build_is_not_supported() {
    let Some(v) = plain_variant() else { return };
    let out = target_dir()
        .join("go-bins")
        .join("check-arm64")
        .join("maptruth");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let res = Command::new(go_binary(&v))
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(manifest_dir().join("tests/go/maptruth"))
        .env("GOCACHE", target_dir().join("go-cache"))
        .env("GOPATH", target_dir().join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env("GOOS", "linux")
        .env("GOARCH", "arm64")
        .env_remove("GOEXPERIMENT")
        .output()
        .expect("go build");
    assert!(res.status.success(), "arm64 build: {res:?}");
    let (reason, _) = not_traceable(out.to_str().unwrap(), "unsupported_arch");
    assert!(
        reason.contains("arm64") && reason.contains("amd64"),
        "{reason}"
    );
}

/// A copy of the plain maptruth build with `edit` applied to its bytes.
fn edited_maptruth(tag: &str, edit: impl Fn(&mut Vec<u8>)) -> Option<(TempDir, PathBuf)> {
    let v = plain_variant()?;
    let bin = maptruth(&v)?;
    let mut data = std::fs::read(&bin).unwrap();
    edit(&mut data);
    let dir = TempDir::new(tag);
    let p = dir.join("maptruth");
    std::fs::write(&p, data).unwrap();
    Some((dir, p))
}

/// Every occurrence of `from` replaced by `to` (same length); the number replaced.
fn replace_all(data: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= data.len() {
        if &data[i..i + from.len()] == from {
            data[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

#[test]
fn a_go_older_than_1_21_is_not_supported() {
    let Some(v) = plain_variant() else { return };
    let new = v.go_version();
    // "go1.27.3" -> "go1.17.3": the build info's and the runtime's copies alike.
    let old = format!("go1.17{}", &new[new.find('.').unwrap() + 3..]);
    let Some((_dir, p)) = edited_maptruth("check-old", |d| {
        assert!(replace_all(d, new.as_bytes(), old.as_bytes()) > 0);
    }) else {
        return;
    };
    let (reason, _) = not_traceable(p.to_str().unwrap(), "unsupported_go_version");
    assert!(
        reason.contains(&old) && reason.contains("go1.21"),
        "{reason}"
    );
}

#[test]
fn a_go_binary_without_map_functions_is_not_traceable() {
    // The runtime's map functions renamed in every symbol and pclntab name: a readable Go
    // binary where none can be found.
    let Some((_dir, p)) = edited_maptruth("check-nomaps", |d| {
        assert!(replace_all(d, b"runtime.mapassign", b"runtime.xapassign") > 0);
        assert!(replace_all(d, b"runtime.mapdelete", b"runtime.xapdelete") > 0);
        assert!(replace_all(d, b"runtime.mapclear", b"runtime.xapclear") > 0);
    }) else {
        return;
    };
    let (reason, j) = not_traceable(p.to_str().unwrap(), "no_probe_points");
    assert!(reason.contains("no map probe points"), "{reason}");
    // The binary itself was read: its facts are still there for the script.
    assert!(str_at(&j, "go_version").starts_with("go1."), "{j}");
    assert_eq!(
        j["absent"].as_array().map(Vec::len),
        Some(11),
        "every map function absent: {j}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let run = check(&[]);
    run.expect_code(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let run = check(&["/bin/true", "-o", "xml"]);
    run.expect_code(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("'xml'"), "{}", run.stderr);
}

/// A bad command line, for any verb: one line on stderr that names the problem (and the
/// valid values, when there are some), nothing on stdout, exit 2. Help still works.
#[test]
fn usage_errors_are_one_line() {
    let cases: [(&[&str], &str); 8] = [
        (
            &["check", "/bin/true", "-o", "xml"],
            "possible values: table, json, yaml",
        ),
        (&["check"], "<BINARY|pod/NAME>"),
        (&["trace", "--bogus", "--pid", "1"], "'--bogus'"),
        (&["watch", "-o", "csv", "--pid", "1"], "'csv'"),
        (
            &["watch", "--interval", "0s", "--pid", "1"],
            "must be above zero",
        ),
        (&["trace", "--pid", "abc"], "a whole number above zero"),
        (&["delete-audit", "--pid", "1"], "--duration"),
        (
            &["trace", "--duration", "soon", "--pid", "1"],
            "invalid duration",
        ),
    ];
    for (args, says) in cases {
        let out = mapguard_command(args)
            .output()
            .expect("run kubectl-mapguard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("kubectl-mapguard {}", args.join(" "));
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: stdout is data only");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{what}: one line, got:\n{stderr}"
        );
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{what}: {stderr:?} should say {says:?}"
        );
    }
    let help = mapguard_command(&["check", "--help"])
        .output()
        .expect("run");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl mapguard check"));
}

/// kubectl's TYPE/NAME for something check does not take: the reason says what it takes, in
/// both formats.
#[test]
fn a_workload_target_says_what_check_takes() {
    let (reason, _) = not_traceable("deploy/x", "not_found");
    assert_eq!(
        reason,
        "no such file: deploy/x, and check does not take deploy/NAME: give the path of a Go \
         executable on this machine, or pod/NAME for one of its pods"
    );
}
