//! `check BINARY [-o table|json]`: can this Go binary be traced, and where
//! would the probes go? Reads the file only (no BPF, no privileges beyond
//! reading it), so it works on every OS.
//!
//! Exit 0 when the binary is traceable; 2 (with one `error: ...` line on
//! stderr, and with `-o json` also the object below on stdout) when it is not.
//!
//! # `-o json`: one object on stdout
//!
//! ```json
//! {"v":1,"kind":"check","path":"./app","traceable":true,
//!  "go_version":"go1.25.5","map_impl":"swiss","experiments":[],
//!  "pie":false,"stripped":false,"symbol_source":"symtab",
//!  "goid_offset":152,"goid_source":"dwarf",
//!  "probes":[{"function":"runtime.mapdelete_faststr","op":"delete","key_kind":"faststr",
//!             "entry":"0x40aec0","address":"0x40aec6","file_offset":"0xaec6",
//!             "after_stack_check":true}, ...],
//!  "absent":[{"function":"runtime.mapassign_fast32ptr","op":"assign","reason":"not linked"}]}
//! ```
//!
//! Always present: `v` (1), `kind` (`"check"`), `path` (as given on the
//! command line), `traceable` (bool).
//!
//! When not traceable: `reason` (the same sentence as the stderr line: what
//! is wrong and what to do) and `reason_code`, one of `not_found`,
//! `not_a_file` (a directory, FIFO, device...), `unreadable`, `not_go`,
//! `unsupported_go_version` (older than go1.21),
//! `unsupported_arch` (anything but amd64), `no_probe_points`.
//!
//! When the file was read as a Go binary (always when traceable, and for
//! `no_probe_points`):
//! - `go_version`: the toolchain that built it, e.g. `"go1.25.5"`; read
//!   from the runtime when the build info was removed: `"go1.25"` (the
//!   release, pinned by the runtime functions it links) or `"go1.27+"`
//!   (that release or a newer one).
//! - `version_source`: `"buildinfo"` (`.go.buildinfo`) or `"runtime"` (no
//!   build info: the release whose runtime functions it links first).
//! - `map_impl`: `"classic"` | `"swiss"`.
//! - `experiments`: the `GOEXPERIMENT` entries recorded in the build info,
//!   e.g. `["noswissmap"]`; `[]` when none.
//! - `pie`, `stripped` (no `.symtab`): bool.
//! - `symbol_source`: where function addresses come from, `"symtab"` or
//!   `"pclntab"` (stripped binaries).
//! - `goid_offset`: offset of `goid` in `runtime.g` (number), or null when
//!   unknown (events then carry `goid: null`).
//! - `goid_source`: `"dwarf"` (read from the binary), `"table"` (mapguard's
//!   built-in per-Go-version table, for binaries without DWARF) or
//!   `"unknown"`.
//! - `probes`: every uprobe a trace attaches at entry, in a fixed order: the
//!   runtime map functions, then `runtime.fatal`. Each has `function`, `op`
//!   (`delete`|`assign`|`clear`|`fatal`), `key_kind` (how the function gets
//!   its key: `none`|`fast32`|`fast64`|`fast64ptr`|`faststr`|`generic`),
//!   `entry` (link address of the function), `address` (link address of the
//!   probed instruction: the `push rbp` after the stack-bound check),
//!   `file_offset` (offset of `address` in the file: what the uprobe is
//!   attached at) and `after_stack_check` (false when the function has no
//!   stack check and is probed at its entry). Addresses are `"0x..."` strings.
//! - `absent`: runtime map functions with no probe: `function`, `op` and
//!   `reason`: `"not linked"` (the linker dropped it because nothing calls
//!   it: fine, no operation can go through it) or `"no probe site"` (it is
//!   there but mapguard could not find where to probe it: its operations
//!   would be missed; also warned about on stderr).

use crate::gobin::{GoBinError, GoBinary, ProbePoint};
use crate::protocol::Op;
use crate::protocol::{
    AbsentFunction as Absent, BinaryFacts, CheckLine as Report, Line, ProbeSite as Probe,
};
use crate::render::CheckFormat;
use anyhow::Result;
use comfy_table::{presets::NOTHING, Table};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// The runtime map entry points compiled code calls (GO_RUNTIME.md), in the
/// order they are listed. `mapassign_fast32ptr` exists on 32-bit targets only.
const MAP_FUNCTIONS: [(&str, Op); 11] = [
    ("runtime.mapdelete", Op::Delete),
    ("runtime.mapdelete_fast32", Op::Delete),
    ("runtime.mapdelete_fast64", Op::Delete),
    ("runtime.mapdelete_faststr", Op::Delete),
    ("runtime.mapassign", Op::Assign),
    ("runtime.mapassign_fast32", Op::Assign),
    ("runtime.mapassign_fast32ptr", Op::Assign),
    ("runtime.mapassign_fast64", Op::Assign),
    ("runtime.mapassign_fast64ptr", Op::Assign),
    ("runtime.mapassign_faststr", Op::Assign),
    ("runtime.mapclear", Op::Clear),
];

/// Where the runtime reports a fatal error ("concurrent map writes").
const FATAL: &str = "runtime.fatal";

const NOT_LINKED: &str = "not linked";
const NO_PROBE_SITE: &str = "no probe site";

/// Why the binary cannot be traced.
struct NotTraceable {
    code: &'static str,
    message: String,
}

/// The check of one binary: the report, and why it cannot be traced (if so).
/// `shown` is the path to print (agents read binaries through /proc/PID/root).
fn check(path: &Path, shown: &str) -> (Report, Option<NotTraceable>) {
    let (facts, failure) = match inspect(path) {
        Ok(facts) if facts.probes.iter().any(|p| p.op != "fatal") => (Some(facts), None),
        Ok(facts) => {
            let failure = NotTraceable {
                code: "no_probe_points",
                message: format!(
                    "no map probe points found in {shown} ({}): none of the runtime's map functions \
                     (runtime.mapassign*, runtime.mapdelete*, runtime.mapclear) could be located, \
                     so no map operation can be traced; the binary may be damaged or post-processed",
                    facts.go_version
                ),
            };
            (Some(facts), Some(failure))
        }
        Err(failure) => (None, Some(failure)),
    };
    if let Some(facts) = &facts {
        for a in facts.absent.iter().filter(|a| a.reason == NO_PROBE_SITE) {
            eprintln!(
                "warning: {} is linked into {shown} but mapguard found no place to probe it: \
                 its map operations will not be seen",
                a.function
            );
        }
    }
    let report = Report {
        path: shown.to_string(),
        traceable: failure.is_none(),
        reason: failure.as_ref().map(|f| f.message.clone()),
        reason_code: failure.as_ref().map(|f| f.code.to_string()),
        binary: facts,
        pid: None,
        container_id: None,
    };
    (report, failure)
}

/// The `check` JSON object of one binary (what `check -o json` prints), for
/// agents that check the processes of a pod.
pub fn report(path: &Path, shown: &str) -> Report {
    check(path, shown).0
}

/// `check BINARY`.
pub fn run(path: &str, format: CheckFormat) -> Result<ExitCode> {
    let (report, failure) = check(Path::new(path), path);
    match (format, failure) {
        (format @ (CheckFormat::Json | CheckFormat::Yaml), failure) => {
            let mut out = std::io::stdout().lock();
            let json = Line::Check(report).to_json();
            if format == CheckFormat::Yaml {
                out.write_all(crate::render::yaml_doc(&json).as_bytes())?;
            } else {
                writeln!(out, "{json}")?;
            }
            out.flush()?;
            match failure {
                None => Ok(ExitCode::SUCCESS),
                Some(f) => {
                    eprintln!("error: {}", f.message);
                    Ok(ExitCode::from(2))
                }
            }
        }
        (CheckFormat::Table, Some(f)) => Err(anyhow::anyhow!(f.message)),
        (CheckFormat::Table, None) => {
            let mut out = std::io::stdout().lock();
            out.write_all(table(&report).as_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads the binary; the error says why it cannot be traced.
fn inspect(path: &Path) -> Result<BinaryFacts, NotTraceable> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NotTraceable {
            code: "not_found",
            message: match kubectl_kind(&shown) {
                Some(Kind::Pod(name)) => {
                    format!("no such file: {shown}; for the pod, write pod/{name}")
                }
                Some(Kind::Other(kind)) => format!(
                    "no such file: {shown}, and check does not take {kind}/NAME: give the path of \
                     a Go executable on this machine, or pod/NAME for one of its pods"
                ),
                None => format!(
                    "no such file: {shown}: give the path of a Go executable on this machine, or pod/NAME"
                ),
            },
        },
        _ => NotTraceable {
            code: "unreadable",
            message: GoBinError::NotReadable(format!("{shown}: {e}")).to_string(),
        },
    })?;
    if meta.is_dir() {
        return Err(NotTraceable {
            code: "not_a_file",
            message: format!(
                "{shown} is a directory, not an executable: give the path of the Go program's binary"
            ),
        });
    }
    if !meta.is_file() {
        // A FIFO would block the read forever; devices are not programs.
        return Err(NotTraceable {
            code: "not_a_file",
            message: format!(
                "{shown} is not a regular file: give the path of the Go program's binary"
            ),
        });
    }
    let bin = GoBinary::open(path).map_err(|e| classify(&shown, e))?;
    Ok(facts(&bin))
}

enum Kind<'a> {
    /// kubectl's `po/NAME`: `check` takes the pod, spelt pod/NAME.
    Pod(&'a str),
    /// A workload or other kind `check` does not take.
    Other(&'a str),
}

/// A path that does not exist but reads as kubectl's TYPE/NAME: the user
/// meant a cluster object, and the hint says what `check` takes instead.
fn kubectl_kind(shown: &str) -> Option<Kind<'_>> {
    let (kind, name) = shown.split_once('/')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    match kind.to_ascii_lowercase().as_str() {
        "po" => Some(Kind::Pod(name)),
        "deploy" | "deployment" | "deployments" | "deployment.apps" | "sts" | "statefulset"
        | "statefulsets" | "statefulset.apps" | "ds" | "daemonset" | "daemonsets"
        | "daemonset.apps" | "rs" | "replicaset" | "replicasets" | "replicaset.apps" | "job"
        | "jobs" | "job.batch" | "cj" | "cronjob" | "cronjobs" | "cronjob.batch" | "svc"
        | "service" | "services" | "node" | "nodes" | "no" => Some(Kind::Other(kind)),
        _ => None,
    }
}

fn classify(shown: &str, e: GoBinError) -> NotTraceable {
    match e {
        GoBinError::NotReadable(_) => NotTraceable {
            code: "unreadable",
            message: e.to_string(),
        },
        GoBinError::Unaligned(_) => NotTraceable {
            code: "unaligned_function_table",
            message: e.to_string(),
        },
        GoBinError::NotGo(why) => {
            let detail = why
                .strip_prefix(shown)
                .and_then(|w| w.strip_prefix(": "))
                .unwrap_or(&why);
            NotTraceable {
                code: "not_go",
                message: format!(
                    "{shown} is not a Go binary ({detail}): mapguard traces only executables \
                     built by the Go toolchain (go1.21 or newer)"
                ),
            }
        }
        GoBinError::UnsupportedVersion(v) => NotTraceable {
            code: "unsupported_go_version",
            message: format!(
                "{shown} was built with {v}; mapguard needs go1.21 or newer: rebuild the program \
                 with a newer Go toolchain"
            ),
        },
        GoBinError::UnsupportedArch(a) => NotTraceable {
            code: "unsupported_arch",
            message: format!(
                "{shown} is {} {a} executable; mapguard traces amd64 Go executables only: check \
                 the amd64 build of the program",
                if a.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                }
            ),
        },
    }
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn probe(p: &ProbePoint, op: &'static str) -> Probe {
    Probe {
        function: p.func.clone(),
        op: op.into(),
        key_kind: lower(&p.key_kind),
        entry: hex(p.entry),
        address: hex(p.addr),
        file_offset: hex(p.file_offset),
        after_stack_check: p.after_stack_check,
    }
}

fn facts(bin: &GoBinary) -> BinaryFacts {
    let found = bin.probe_points();
    let mut probes = Vec::new();
    let mut absent = Vec::new();
    for (name, op) in MAP_FUNCTIONS {
        match found.iter().find(|p| p.func == name) {
            Some(p) => probes.push(probe(p, p.op.as_str())),
            None => absent.push(Absent {
                function: name.to_string(),
                op: op.as_str().into(),
                reason: if bin.function_addr(name).is_some() {
                    NO_PROBE_SITE
                } else {
                    NOT_LINKED
                }
                .into(),
            }),
        }
    }
    // Anything gobin probes that this list does not know yet.
    for p in found
        .iter()
        .filter(|p| !MAP_FUNCTIONS.iter().any(|(n, _)| *n == p.func))
    {
        probes.push(probe(p, p.op.as_str()));
    }
    // The agent also probes runtime.fatal, for the crash message.
    if let Some(p) = bin.probe_point_for(FATAL) {
        probes.push(probe(&p, "fatal"));
    }
    BinaryFacts {
        go_version: bin.go_version().to_string(),
        version_source: lower(&bin.version_source()),
        map_impl: lower(&bin.map_impl()),
        experiments: bin.experiments().to_vec(),
        pie: bin.pie(),
        stripped: bin.stripped(),
        symbol_source: lower(&bin.symbol_source()),
        goid_offset: bin.goid_offset(),
        goid_source: lower(&bin.goid_source()),
        probes,
        absent,
    }
}

fn probes_summary(b: &BinaryFacts) -> String {
    let maps = b.probes.iter().filter(|p| p.op != "fatal").count();
    let fatal = if b.probes.iter().any(|p| p.op == "fatal") {
        " + runtime.fatal"
    } else {
        ""
    };
    format!("{maps} map functions{fatal} (uprobes attach at FILE_OFFSET)")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn lower<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// `check -o table`: `Field: value` lines like `kubectl describe`, then one
/// row per runtime function. Only called for a traceable binary.
fn table(r: &Report) -> String {
    let Some(b) = &r.binary else {
        return String::new();
    };
    let goid = match (b.goid_offset, b.goid_source.as_str()) {
        (Some(off), "dwarf") => format!("{off} (from DWARF)"),
        (Some(off), _) => format!("{off} (from mapguard's table for {})", b.go_version),
        (None, _) => format!(
            "unknown (no DWARF, and {} is not in mapguard's table): events show no goroutine id",
            b.go_version
        ),
    };
    let version = match b.version_source.as_str() {
        "runtime" => format!(
            "{} (no .go.buildinfo: read from the runtime functions it links)",
            b.go_version
        ),
        _ => b.go_version.clone(),
    };
    let experiments = if b.experiments.is_empty() {
        "none".to_string()
    } else {
        b.experiments.join(",")
    };
    let facts: [(&str, String); 10] = [
        ("Path:", r.path.clone()),
        ("Traceable:", yes_no(r.traceable).into()),
        ("Go version:", version),
        ("Map implementation:", b.map_impl.clone()),
        ("GOEXPERIMENT:", experiments),
        ("PIE:", yes_no(b.pie).into()),
        ("Stripped:", yes_no(b.stripped).into()),
        ("Symbols from:", b.symbol_source.clone()),
        ("Goroutine id offset:", goid),
        ("Probes:", probes_summary(b)),
    ];
    let mut text = String::new();
    for (k, v) in facts {
        text.push_str(&format!("{k:<21}{v}\n"));
    }
    text.push('\n');

    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header([
        "FUNCTION",
        "OP",
        "KEY_KIND",
        "ENTRY",
        "ADDRESS",
        "FILE_OFFSET",
        "PROBED_AT",
    ]);
    // kubectl style: no left margin, two spaces between columns.
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    let row = |p: &Probe| {
        let at = if p.after_stack_check {
            "after stack check"
        } else {
            "entry (no stack check)"
        };
        vec![
            p.function.clone(),
            p.op.to_string(),
            p.key_kind.clone(),
            p.entry.clone(),
            p.address.clone(),
            p.file_offset.clone(),
            at.to_string(),
        ]
    };
    let absent_row = |a: &Absent| {
        let why = if a.reason == NOT_LINKED {
            "absent (not linked)"
        } else {
            "linked, but no probe site found"
        };
        vec![
            a.function.clone(),
            a.op.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            why.to_string(),
        ]
    };
    // The map functions in their fixed order, absent ones in place; then the rest.
    for (name, _) in MAP_FUNCTIONS {
        if let Some(p) = b.probes.iter().find(|p| p.function == name) {
            t.add_row(row(p));
        } else if let Some(a) = b.absent.iter().find(|a| a.function == name) {
            t.add_row(absent_row(a));
        }
    }
    for p in b
        .probes
        .iter()
        .filter(|p| !MAP_FUNCTIONS.iter().any(|(n, _)| *n == p.function))
    {
        t.add_row(row(p));
    }
    for line in t.to_string().lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kubectl_target_says_what_check_takes() {
        let message = |p: &str| inspect(Path::new(p)).err().unwrap().message;
        assert_eq!(
            message("deploy/x"),
            "no such file: deploy/x, and check does not take deploy/NAME: give the path of a Go \
             executable on this machine, or pod/NAME for one of its pods"
        );
        assert!(message("sts/db").contains("check does not take sts/NAME"));
        assert_eq!(
            message("po/x"),
            "no such file: po/x; for the pod, write pod/x"
        );
        // A path that only looks like one stays a missing file.
        assert_eq!(
            message("bin/server"),
            "no such file: bin/server: give the path of a Go executable on this machine, or pod/NAME"
        );
        assert!(message("/deploy/x").starts_with("no such file: /deploy/x: give the path"));
    }
}
