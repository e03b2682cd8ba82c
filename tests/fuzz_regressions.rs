//! Replays the fuzz inputs kept in tests/fuzz_inputs/<target>/ through the
//! exact code the cargo-fuzz targets run (fuzz/fuzz_targets/shared.rs is
//! included below), on stable, as part of `cargo test`. Each file is a seed
//! worth keeping (tiny Go-like executables, garbled ELF headers, malformed
//! JSON lines) or an input a fuzzer once crashed on, minimized.
//!
//! To add one: `cargo fuzz tmin <target> <artifact>` (RUSTC_BOOTSTRAP=1, see
//! benches/fuzz.sh) and copy the result into tests/fuzz_inputs/<target>/.

use std::path::{Path, PathBuf};

#[path = "../fuzz/fuzz_targets/shared.rs"]
mod shared;

use kubectl_mapguard::gobin::{GoBinary, GoidSource, MapImpl, SymbolSource};
use kubectl_mapguard::protocol::Line;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_inputs")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
}

/// Runs `run` on every input of `target`; a panic names the file.
fn replay(target: &str, run: fn(&[u8])) {
    let mut failed = Vec::new();
    for path in inputs(target) {
        let data = std::fs::read(&path).expect("readable input");
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} panicked on: {failed:#?}");
}

#[test]
fn gobin_inputs_do_not_panic() {
    replay("gobin", shared::gobin);
}

#[test]
fn json_lines_inputs_do_not_panic_and_round_trip() {
    replay("json_lines", shared::json_lines);
}

/// `gobin-slow-*` are crafted files (fuzz/seeds/tiny_go_elf.py) on which
/// gobin used to be quadratic in the file size: thousands of PT_LOADs each
/// scanned whole, thousands of RELA tables or moduledata lookalikes each
/// walking every relocation, thousands of function or symbol names all
/// starting in one unterminated run. 2-9 s each in a debug build then
/// (libFuzzer timeouts at the size of a real binary), milliseconds now.
fn input(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_inputs")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tiny synthetic executables (fuzz/seeds/tiny_go_elf.py) are only good
/// seeds while gobin accepts them and finds what they hold: when this fails
/// after a change to gobin, regenerate or fix the generator, not the test.
#[test]
fn tiny_go_seeds_are_accepted() {
    let full = GoBinary::from_bytes("full", input("gobin", "gobin-tiny-go122-full.elf"))
        .expect("the full tiny seed parses");
    assert_eq!(full.go_version(), "go1.22.10");
    assert_eq!(full.map_impl(), MapImpl::Classic);
    assert_eq!(full.symbol_source(), SymbolSource::Symtab);
    assert_eq!(full.goid_source(), GoidSource::Dwarf);
    assert_eq!(full.goid_offset(), Some(152));
    assert_eq!(full.g_m_offset(), Some(48));
    let probes = full.probe_points();
    let names: Vec<&str> = probes.iter().map(|p| p.func.as_str()).collect();
    assert_eq!(
        names,
        [
            "runtime.mapdelete",
            "runtime.mapdelete_fast64",
            "runtime.mapassign_faststr",
            "runtime.mapclear"
        ]
    );
    assert!(probes[0].after_stack_check && !probes[3].after_stack_check);
    assert_eq!(full.return_points("runtime.mapdelete").len(), 1);
    let fatal = full
        .probe_point_for("runtime.fatal")
        .expect("runtime.fatal");
    assert!(fatal.after_stack_check);
    let base = full.types_base().expect("types base");
    assert_eq!(
        full.map_type_name(base + 0xa0).as_deref(),
        Some("map[string]int")
    );
    assert_eq!(
        full.map_key_info(base + 0xa0).map(|k| (k.kind, k.size)),
        Some((24, 16))
    );
    let main = full.function_addr("main.main").expect("main.main");
    let frames = full.symbolize_inline(main + 8);
    let funcs: Vec<&str> = frames.iter().map(|f| f.func.as_str()).collect();
    assert_eq!(funcs, ["main.helper", "main.main"]);
    assert_eq!(
        (frames[0].file.as_str(), frames[0].line),
        ("/src/main.go", 10)
    );

    for (name, version, map_impl) in [
        ("gobin-tiny-go125-stripped.elf", "go1.25.5", MapImpl::Swiss),
        (
            "gobin-tiny-go124-noswiss-pie.elf",
            "go1.24.11",
            MapImpl::Classic,
        ),
    ] {
        let bin = GoBinary::from_bytes(name, input("gobin", name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bin.go_version(), version, "{name}");
        assert_eq!(bin.map_impl(), map_impl, "{name}");
        assert_eq!(bin.symbol_source(), SymbolSource::Pclntab, "{name}");
        assert_eq!(bin.probe_points().len(), 4, "{name}");
        let base = bin.types_base().expect("types base");
        assert_eq!(
            bin.map_type_name(base + 0xa0).as_deref(),
            Some("map[string]int"),
            "{name}"
        );
        assert_eq!(
            bin.map_key_info(base + 0xa0).map(|k| k.size),
            Some(16),
            "{name}"
        );
        let main = bin.function_addr("main.main").expect("main.main");
        assert_eq!(bin.symbolize_inline(main + 8).len(), 2, "{name}");
    }
}

/// The JSON inputs named `line-*` are real lines (from trace and watch runs)
/// or hand-written ones of the kinds those runs do not print; each must
/// parse, and together they cover every kind. `bad-*` ones must be refused;
/// `crash-*` ones are minimized fuzzer finds, replayed above.
#[test]
fn json_line_inputs_parse_or_are_refused_as_named() {
    let mut kinds = std::collections::BTreeSet::new();
    for path in inputs("json_lines") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).expect("readable input");
        let Ok(text) = std::str::from_utf8(&bytes) else {
            assert!(name.starts_with("bad-"), "{name} is not UTF-8");
            continue;
        };
        match (name.split('-').next(), Line::from_json(text)) {
            (Some("line"), Ok(line)) => {
                let wire: serde_json::Value =
                    serde_json::from_str(&line.to_json()).expect("to_json writes JSON");
                kinds.insert(wire["kind"].as_str().expect("a kind").to_string());
            }
            (Some("bad"), Err(_)) => {}
            // Inputs a fuzzer crashed on: replaying them is the test.
            (Some("crash"), _) => {}
            (_, result) => panic!("{name}: unexpected {result:?}"),
        }
    }
    let all = [
        "attached",
        "concurrent_write",
        "detached",
        "error",
        "event",
        "fatal",
        "stats",
        "summary",
    ];
    assert_eq!(kinds.iter().map(String::as_str).collect::<Vec<_>>(), all);
}
