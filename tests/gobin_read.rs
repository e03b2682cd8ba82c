//! `gobin` against real Go binaries: tests/go/gobinprobe built with every
//! installed toolchain (plain, stripped, PIE, stripped PIE, noswissmap and,
//! when a C toolchain is around, externally linked PIE). The program prints
//! what the Go runtime itself knows (type names and addresses, pcs with their
//! file:line), which is the truth each assertion compares against.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kubectl_mapguard::gobin::{
    Frame, GoBinError, GoBinary, GoidSource, KeyKind, KeyType, MapImpl, SymbolSource,
};
use kubectl_mapguard::protocol::Op;

const TOOLCHAINS: &str = "/opt/mapguard-go";
const VERSIONS: [&str; 7] = [
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// runtime.g.goid by Go minor version (GO_RUNTIME.md); DWARF must agree.
fn goid_table(ver: &str) -> u64 {
    match minor(ver) {
        21 | 22 | 25 | 26 | 27 => 152,
        23 | 24 => 160,
        m => panic!("no goid table entry for 1.{m}"),
    }
}

fn minor(ver: &str) -> u32 {
    ver.split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("version like 1.25.5")
}

/// Every map entry point gobinprobe makes the linker keep on amd64
/// (`mapassign_fast32ptr` exists only on 32-bit targets).
const EXPECTED_PROBES: [(&str, Op, KeyKind); 10] = [
    ("runtime.mapdelete", Op::Delete, KeyKind::Generic),
    ("runtime.mapdelete_fast32", Op::Delete, KeyKind::Fast32),
    ("runtime.mapdelete_fast64", Op::Delete, KeyKind::Fast64),
    ("runtime.mapdelete_faststr", Op::Delete, KeyKind::FastStr),
    ("runtime.mapassign", Op::Assign, KeyKind::Generic),
    ("runtime.mapassign_fast32", Op::Assign, KeyKind::Fast32),
    ("runtime.mapassign_fast64", Op::Assign, KeyKind::Fast64),
    (
        "runtime.mapassign_fast64ptr",
        Op::Assign,
        KeyKind::Fast64Ptr,
    ),
    ("runtime.mapassign_faststr", Op::Assign, KeyKind::FastStr),
    ("runtime.mapclear", Op::Clear, KeyKind::None),
];

/// Key kind and size for each map type gobinprobe prints.
fn expected_key(type_name: &str) -> KeyType {
    let (kind, size) = match type_name {
        "map[string]main.User" | "map[string]main.Big" => (24, 16),
        "map[int32]int" => (5, 4),
        "map[int64]string" => (6, 8),
        "map[*main.User]int" => (22, 8),
        "map[main.Point]bool" => (25, 24),
        other => panic!("unexpected map type {other}"),
    };
    KeyType { kind, size }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Stripped,
    Pie,
    StrippedPie,
    NoSwiss,
    ExternalPie,
    StrippedExternalPie,
}

impl Variant {
    fn stripped(self) -> bool {
        matches!(
            self,
            Variant::Stripped | Variant::StrippedPie | Variant::StrippedExternalPie
        )
    }
    fn pie(self) -> bool {
        matches!(
            self,
            Variant::Pie
                | Variant::StrippedPie
                | Variant::ExternalPie
                | Variant::StrippedExternalPie
        )
    }
    /// The unstripped build of the same code and layout.
    fn unstripped(self) -> Option<Variant> {
        match self {
            Variant::Stripped => Some(Variant::Plain),
            Variant::StrippedPie => Some(Variant::Pie),
            Variant::StrippedExternalPie => Some(Variant::ExternalPie),
            _ => None,
        }
    }
}

/// What gobinprobe printed about itself.
#[derive(Debug, Default)]
struct Truth {
    types: Vec<(String, u64)>,
    main: u64,
    known: Option<(u64, Frame)>,
    /// Return address inside the inlined helper, and the logical frames.
    inline: Option<(u64, Vec<Frame>)>,
    version: String,
}

#[derive(Debug)]
struct Build {
    ver: &'static str,
    variant: Variant,
    path: PathBuf,
    truth: Truth,
}

impl Build {
    fn label(&self) -> String {
        format!("go{} {:?}", self.ver, self.variant)
    }
    fn open(&self) -> GoBinary {
        GoBinary::open(&self.path).unwrap_or_else(|e| panic!("{}: {e}", self.label()))
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/gobinprobe")
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gobinprobe");
    std::fs::create_dir_all(&d).expect("create build dir");
    d
}

fn go_tool(ver: &str) -> Option<PathBuf> {
    let p = Path::new(TOOLCHAINS).join(ver).join("go/bin/go");
    if p.exists() {
        return Some(p);
    }
    common::skip(&format!(
        "Go {ver} not installed at {}: its cases are not run",
        p.display()
    ));
    None
}

fn has_c_toolchain() -> bool {
    Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn build(ver: &'static str, variant: Variant) -> Option<Build> {
    let go = go_tool(ver)?;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = out_dir().join(format!("{ver}-{variant:?}"));
    let mut cmd = Command::new(&go);
    cmd.current_dir(src_dir())
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOOS", "linux")
        .env("GOARCH", "amd64")
        .env("CGO_ENABLED", "0")
        .env_remove("GOEXPERIMENT");
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", tmp.join("gocache"));
    }
    if std::env::var_os("GOPATH").is_none() {
        cmd.env("GOPATH", tmp.join("gopath"));
    }
    cmd.args(["build", "-o"]).arg(&out);
    match variant {
        Variant::Plain => {}
        Variant::Stripped => {
            cmd.arg("-ldflags=-s -w");
        }
        Variant::Pie => {
            cmd.arg("-buildmode=pie");
        }
        Variant::StrippedPie => {
            cmd.args(["-buildmode=pie", "-ldflags=-s -w"]);
        }
        Variant::NoSwiss => {
            cmd.env("GOEXPERIMENT", "noswissmap");
        }
        Variant::ExternalPie => {
            cmd.env("CGO_ENABLED", "1")
                .args(["-buildmode=pie", "-ldflags=-linkmode=external"]);
        }
        Variant::StrippedExternalPie => {
            cmd.env("CGO_ENABLED", "1")
                .args(["-buildmode=pie", "-ldflags=-linkmode=external -s -w"]);
        }
    }
    let res = cmd.output().expect("run go build");
    assert!(
        res.status.success(),
        "go{ver} build {variant:?} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let run = Command::new(&out).output().expect("run gobinprobe");
    assert!(run.status.success(), "gobinprobe {ver} {variant:?} failed");
    let truth = parse_truth(&String::from_utf8_lossy(&run.stdout));
    Some(Build {
        ver,
        variant,
        path: out,
        truth,
    })
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("hex {s}"))
}

fn parse_truth(out: &str) -> Truth {
    let mut t = Truth::default();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let frame = |func: &str, file: &str, line: &str| Frame {
            func: func.to_string(),
            file: file.to_string(),
            line: line.parse().expect("line number"),
        };
        match f.as_slice() {
            ["TYPE", name, addr] => t.types.push((name.to_string(), hex(addr))),
            ["MAIN", addr] => t.main = hex(addr),
            ["KNOWN", pc, file, line] => {
                t.known = Some((hex(pc), frame("main.knownLine", file, line)))
            }
            ["INLINE", pc, func, file, line] => t
                .inline
                .get_or_insert_with(|| (hex(pc), Vec::new()))
                .1
                .push(frame(func, file, line)),
            ["VERSION", v] => t.version = v.to_string(),
            _ => panic!("unexpected gobinprobe output line {line:?}"),
        }
    }
    assert_eq!(t.types.len(), 6, "gobinprobe prints six map types");
    t
}

/// All builds, made once per test binary and shared by the tests.
fn builds() -> &'static [Build] {
    static BUILDS: OnceLock<Vec<Build>> = OnceLock::new();
    BUILDS.get_or_init(|| {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            common::skip("gobin_read needs linux/amd64 to run Go binaries");
            return Vec::new();
        }
        let mut specs: Vec<(&'static str, Variant)> = Vec::new();
        for v in VERSIONS {
            specs.push((v, Variant::Plain));
            specs.push((v, Variant::Stripped));
        }
        for v in ["1.22.10", "1.25.5"] {
            specs.push((v, Variant::Pie));
            specs.push((v, Variant::StrippedPie));
        }
        specs.push(("1.24.11", Variant::NoSwiss));
        if has_c_toolchain() {
            specs.push(("1.25.5", Variant::ExternalPie));
            specs.push(("1.25.5", Variant::StrippedExternalPie));
        } else {
            common::skip("no gcc: the externally linked PIE cases are not run");
        }
        specs
            .into_iter()
            .filter_map(|(v, var)| build(v, var))
            .collect()
    })
}

fn find(ver: &str, variant: Variant) -> Option<&'static Build> {
    builds()
        .iter()
        .find(|b| b.ver == ver && b.variant == variant)
}

/// Load bias of the running program: where main.main ran minus its link address.
fn bias(b: &Build, bin: &GoBinary) -> u64 {
    let link = bin.function_addr("main.main").expect("main.main");
    let bias = b.truth.main.wrapping_sub(link);
    if !b.variant.pie() {
        assert_eq!(
            bias,
            0,
            "{}: non-PIE must load at its link address",
            b.label()
        );
    }
    bias
}

fn marker_line(marker: &str) -> u32 {
    let src = std::fs::read_to_string(src_dir().join("main.go")).expect("main.go");
    let idx = src
        .lines()
        .position(|l| l.contains(marker))
        .expect("marker");
    idx as u32 + 1
}

#[test]
fn version_map_impl_and_flags() {
    for b in builds() {
        let bin = b.open();
        let label = b.label();
        assert_eq!(bin.go_version(), format!("go{}", b.ver), "{label}");
        assert!(
            b.truth.version.starts_with(bin.go_version()),
            "{label}: {}",
            b.truth.version
        );
        let swiss = minor(b.ver) >= 24 && b.variant != Variant::NoSwiss;
        let want = if swiss {
            MapImpl::Swiss
        } else {
            MapImpl::Classic
        };
        assert_eq!(bin.map_impl(), want, "{label}");
        assert_eq!(
            bin.experiments().iter().any(|e| e == "noswissmap"),
            b.variant == Variant::NoSwiss,
            "{label}: {:?}",
            bin.experiments()
        );
        assert_eq!(bin.pie(), b.variant.pie(), "{label}");
        assert_eq!(bin.stripped(), b.variant.stripped(), "{label}");
        let src = if b.variant.stripped() {
            SymbolSource::Pclntab
        } else {
            SymbolSource::Symtab
        };
        assert_eq!(bin.symbol_source(), src, "{label}");
    }
}

#[test]
fn probe_points_sit_on_push_rbp_after_the_stack_check() {
    for b in builds() {
        let bin = b.open();
        let label = b.label();
        let file = std::fs::read(&b.path).expect("read binary");
        let points = bin.probe_points();
        let got: Vec<(&str, Op, KeyKind)> = points
            .iter()
            .map(|p| (p.func.as_str(), p.op, p.key_kind))
            .collect();
        assert_eq!(got, EXPECTED_PROBES.to_vec(), "{label}");
        let (seg_vaddr, seg_off) = bin.exec_bias_base();
        let mut offsets = Vec::new();
        for p in &points {
            assert!(
                p.after_stack_check,
                "{label}: {} has no stack check?",
                p.func
            );
            assert!(p.addr > p.entry && p.addr - p.entry <= 24, "{label}: {p:?}");
            assert_eq!(
                p.file_offset,
                p.addr - seg_vaddr + seg_off,
                "{label}: {p:?}"
            );
            assert_eq!(
                file.get(p.file_offset as usize),
                Some(&0x55),
                "{label}: {} not at push rbp",
                p.func
            );
            assert_eq!(bin.function_addr(&p.func), Some(p.entry), "{label}");
            let f = bin.symbolize(p.entry).expect("symbolize entry");
            assert_eq!(f.func, p.func, "{label}");
            let again = bin.probe_point_for(&p.func).expect("probe_point_for");
            assert_eq!(
                (again.addr, again.file_offset, again.op, again.key_kind),
                (p.addr, p.file_offset, p.op, p.key_kind)
            );
            offsets.push(format!(
                "{}+{}",
                p.func.trim_start_matches("runtime."),
                p.addr - p.entry
            ));
        }
        // The three prologue forms: cmp rsp (small frame), lea r12 (mid),
        // mov/sub/jb r12 (frames over 4 KiB).
        for f in ["main.knownLine", "main.midFrame", "main.bigFrame"] {
            let p = bin.probe_point_for(f).expect(f);
            assert!(p.after_stack_check, "{label}: {f}");
            assert_eq!(
                file.get(p.file_offset as usize),
                Some(&0x55),
                "{label}: {f} {p:?}"
            );
            offsets.push(format!("{f}+{}", p.addr - p.entry));
        }
        eprintln!("{label}: {}", offsets.join(" "));
        // runtime.fatal is NOSPLIT: no check, so the probe stays on the entry.
        let fatal = bin.probe_point_for("runtime.fatal").expect("runtime.fatal");
        assert_eq!(fatal.entry, bin.function_addr("runtime.fatal").unwrap());
        if !fatal.after_stack_check {
            assert_eq!(fatal.addr, fatal.entry, "{label}");
        }
        assert!(bin.probe_point_for("no.such.function").is_none());
        // Every map function returns somewhere.
        assert!(
            !bin.return_points("runtime.mapdelete_faststr").is_empty(),
            "{label}"
        );
    }
}

/// Every map type gobinprobe printed is named by `bin` as the runtime names it and, with
/// `keys`, has the key layout its name implies.
fn assert_reads_types(bin: &GoBinary, b: &Build, bias: u64, label: &str, keys: bool) {
    for (name, addr) in &b.truth.types {
        let at = addr - bias;
        assert_eq!(
            bin.map_type_name(at).as_deref(),
            Some(name.as_str()),
            "{label}: {at:#x}"
        );
        if keys {
            assert_eq!(
                bin.map_key_info(at),
                Some(expected_key(name)),
                "{label}: {name}"
            );
        }
    }
}

/// The same bytes with the symbol table's section header turned into
/// SHT_NULL: a stripped binary with exactly the unstripped layout, so every
/// answer must be identical (`-ldflags=-s -w` shifts addresses slightly,
/// since the build settings it records live in the image).
fn hide_symtab(mut data: Vec<u8>) -> Vec<u8> {
    let u16_at = |d: &[u8], o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let shoff = u64::from_le_bytes(data[40..48].try_into().unwrap()) as usize;
    let (shentsize, shnum) = (u16_at(&data, 58), u16_at(&data, 60));
    let mut hid = false;
    for i in 0..shnum {
        let at = shoff + i * shentsize + 4;
        if data[at..at + 4] == 2u32.to_le_bytes() {
            data[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            hid = true;
        }
    }
    assert!(hid, "no SHT_SYMTAB to hide");
    data
}

#[test]
fn answers_do_not_depend_on_the_symbol_table() {
    for b in builds().iter().filter(|b| !b.variant.stripped()) {
        let label = b.label();
        let ub = b.open();
        let sb = GoBinary::from_bytes(&label, hide_symtab(std::fs::read(&b.path).unwrap()))
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(sb.symbol_source(), SymbolSource::Pclntab);
        let key = |bin: &GoBinary| -> Vec<(String, u64, u64, u64, bool)> {
            bin.probe_points()
                .into_iter()
                .map(|p| (p.func, p.entry, p.addr, p.file_offset, p.after_stack_check))
                .collect()
        };
        assert_eq!(key(&sb), key(&ub), "{label}");
        assert_eq!(sb.types_base(), ub.types_base(), "{label}: types base");
        assert_eq!(
            sb.function_addr("main.main"),
            ub.function_addr("main.main"),
            "{label}"
        );
        assert_reads_types(&sb, b, bias(b, &ub), &label, false);
        // pc → frames must not need symbols (inline trees are reached
        // through moduledata when go:func.* has no symbol).
        let entry = ub.function_addr("main.main").unwrap();
        let lo = entry.saturating_sub(0x40000).max(ub.exec_bias_base().0);
        let mut inlined = 0;
        for pc in (lo..entry + 0x2000).step_by(61) {
            let (a, b) = (sb.symbolize_inline(pc), ub.symbolize_inline(pc));
            assert_eq!(a, b, "{label}: pc {pc:#x}");
            inlined += usize::from(a.len() > 1);
        }
        assert!(inlined > 10, "{label}: only {inlined} inlined pcs sampled");
    }
}

/// The PIE with every R_X86_64_RELATIVE target zeroed in the file, as
/// linkers that keep the value only in the addend leave it. The dynamic
/// loader fills them in either way, so the program still runs.
fn zero_relative_sites(mut data: Vec<u8>) -> (Vec<u8>, usize) {
    let rd64 = |d: &[u8], o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap()) as usize;
    let rd32 = |d: &[u8], o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap()) as usize;
    let rd16 = |d: &[u8], o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let (phoff, phentsize, phnum) = (rd64(&data, 32), rd16(&data, 54), rd16(&data, 56));
    let loads: Vec<(usize, usize, usize)> = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&at| rd32(&data, at) == 1)
        .map(|at| {
            (
                rd64(&data, at + 16),
                rd64(&data, at + 8),
                rd64(&data, at + 32),
            )
        })
        .collect();
    let (shoff, shentsize, shnum) = (rd64(&data, 40), rd16(&data, 58), rd16(&data, 60));
    let mut zeroed = 0;
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        if rd32(&data, sh + 4) != 4 {
            continue;
        }
        let (off, size) = (rd64(&data, sh + 24), rd64(&data, sh + 32));
        for r in (off..off + size).step_by(24) {
            if rd64(&data, r + 8) & 0xffff_ffff != 8 {
                continue;
            }
            let v = rd64(&data, r);
            if let Some(&(vaddr, foff, _)) = loads.iter().find(|l| v >= l.0 && v < l.0 + l.2) {
                let at = v - vaddr + foff;
                data[at..at + 8].fill(0);
                zeroed += 1;
            }
        }
    }
    (data, zeroed)
}

#[test]
fn pie_pointers_are_read_through_relocations() {
    for b in builds().iter().filter(|b| b.variant.pie()) {
        let label = b.label();
        let orig = b.open();
        let (data, zeroed) = zero_relative_sites(std::fs::read(&b.path).unwrap());
        assert!(zeroed > 1000, "{label}: {zeroed} relocations");
        let path = out_dir().join(format!("{}-{:?}-zeroed", b.ver, b.variant));
        std::fs::write(&path, &data).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let run = Command::new(&path).output().unwrap();
        assert!(run.status.success(), "{label}: zeroed PIE does not run");
        let zb = GoBinary::from_bytes(&label, data).unwrap_or_else(|e| panic!("{label}: {e}"));
        let key = |bin: &GoBinary| -> Vec<(String, u64, u64)> {
            bin.probe_points()
                .into_iter()
                .map(|p| (p.func, p.addr, p.file_offset))
                .collect()
        };
        assert_eq!(key(&zb), key(&orig), "{label}");
        assert_eq!(zb.types_base(), orig.types_base(), "{label}");
        let bias = bias(b, &orig);
        assert_reads_types(&zb, b, bias, &label, true);
        let (ret, frames) = b.truth.inline.clone().unwrap();
        assert_eq!(
            zb.symbolize_inline(ret - 1 - bias)[..],
            frames[..2],
            "{label}"
        );
    }
}

#[test]
fn linker_stripped_builds_probe_like_unstripped() {
    for s in builds().iter().filter(|b| b.variant.stripped()) {
        let Some(u) = s.variant.unstripped().and_then(|v| find(s.ver, v)) else {
            continue;
        };
        // Layouts may differ by a few bytes; the decoded prologues may not.
        let rel = |bin: &GoBinary| -> Vec<(String, u64, bool)> {
            bin.probe_points()
                .into_iter()
                .map(|p| (p.func, p.addr - p.entry, p.after_stack_check))
                .collect()
        };
        assert_eq!(rel(&s.open()), rel(&u.open()), "{}", s.label());
    }
}

#[test]
fn symbolize_matches_the_go_runtime() {
    let known_line = marker_line("KNOWN_LINE_MARKER");
    let inlined_line = marker_line("INLINED_LINE_MARKER");
    for b in builds() {
        let bin = b.open();
        let label = b.label();
        let bias = bias(b, &bin);
        let (pc, want) = b.truth.known.clone().expect("KNOWN line");
        assert_eq!(want.line, known_line);
        // runtime.Caller reports the call instruction's pc (return address - 1).
        assert_eq!(bin.symbolize(pc - bias), Some(want), "{label}");

        let (ret, go_frames) = b.truth.inline.clone().expect("INLINE lines");
        assert_eq!(
            go_frames[0].func, "main.inlinedHelper",
            "{label}: helper not inlined?"
        );
        assert_eq!(go_frames[0].line, inlined_line);
        let ours = bin.symbolize_inline(ret - 1 - bias);
        assert_eq!(ours.len(), 2, "{label}: {ours:?}");
        assert_eq!(ours[..], go_frames[..2], "{label}");
        assert_eq!(
            bin.symbolize(ret - 1 - bias).as_ref(),
            ours.first(),
            "{label}"
        );
        // The physical function holds the pc.
        let outer = bin.function_addr("main.outerOfInlined").unwrap();
        assert_eq!(
            bin.symbolize(outer).map(|f| f.func).as_deref(),
            Some("main.outerOfInlined")
        );

        assert_eq!(bin.symbolize(0), None);
        assert_eq!(bin.symbolize(u64::MAX), None);
    }
}

#[test]
fn map_type_names_and_keys_match_go() {
    for b in builds() {
        let bin = b.open();
        let label = b.label();
        assert_reads_types(&bin, b, bias(b, &bin), &label, true);
        // Not map types: a function, nothing, a key type.
        let main = bin.function_addr("main.main").unwrap();
        assert_eq!(bin.map_type_name(main), None, "{label}");
        assert_eq!(bin.map_type_name(0), None);
        assert_eq!(bin.map_key_info(0), None);
    }
}

#[test]
fn goid_offset_dwarf_matches_table() {
    let mut seen = BTreeMap::new();
    for b in builds() {
        let bin = b.open();
        let label = b.label();
        let want = goid_table(b.ver);
        assert_eq!(bin.goid_offset(), Some(want), "{label}");
        assert_eq!(bin.g_m_offset(), Some(48), "{label}");
        let src = if b.variant.stripped() {
            GoidSource::Table
        } else {
            GoidSource::Dwarf
        };
        assert_eq!(bin.goid_source(), src, "{label}");
        if src == GoidSource::Dwarf {
            seen.insert(format!("{} {:?}", b.ver, b.variant), want);
        }
    }
    eprintln!("goid from DWARF: {seen:?}");
}

#[test]
fn errors_say_what_is_wrong() {
    let not_elf = GoBinary::from_bytes("script.sh", b"#!/bin/sh\necho hi\n".to_vec()).unwrap_err();
    assert!(matches!(not_elf, GoBinError::NotGo(_)), "{not_elf:?}");
    let empty = GoBinary::from_bytes("empty", Vec::new()).unwrap_err();
    assert!(matches!(empty, GoBinError::NotGo(_)), "{empty:?}");
    let missing = GoBinary::open(Path::new("/nonexistent/mapguard")).unwrap_err();
    assert!(
        matches!(missing, GoBinError::NotReadable(ref s) if s.contains("/nonexistent/mapguard"))
    );
    for e in [&not_elf, &empty, &missing] {
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.is_empty(), "{msg}");
    }
    // A C program is an ELF without Go build info or pclntab.
    for c in ["/bin/true", "/usr/bin/true"] {
        if let Ok(data) = std::fs::read(c) {
            let e = GoBinary::from_bytes(c, data).unwrap_err();
            assert!(matches!(e, GoBinError::NotGo(_)), "{c}: {e:?}");
            break;
        }
    }
    let Some(b) = builds().iter().find(|b| b.variant == Variant::Plain) else {
        return;
    };
    // The same binary claiming an old toolchain: its version string edited in place.
    let mut data = std::fs::read(&b.path).unwrap();
    let v = format!("go{}", b.ver);
    let old = format!("go1.17{}", &v[v.find('.').unwrap() + 3..]);
    assert_eq!(old.len(), v.len());
    // Every copy: the build info's and the runtime's own buildVersion.
    let hits: Vec<usize> = data
        .windows(v.len())
        .enumerate()
        .filter(|(_, w)| *w == v.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert!(!hits.is_empty());
    for at in hits {
        data[at..at + v.len()].copy_from_slice(old.as_bytes());
    }
    match GoBinary::from_bytes("old", data) {
        Err(GoBinError::UnsupportedVersion(got)) => assert_eq!(got, old),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    // An arm64 build of the same program.
    if let Some(go) = go_tool(b.ver) {
        let out = out_dir().join(format!("{}-arm64", b.ver));
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let mut cmd = Command::new(go);
        cmd.current_dir(src_dir())
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOOS", "linux")
            .env("GOARCH", "arm64")
            .env("CGO_ENABLED", "0")
            .env_remove("GOEXPERIMENT")
            .args(["build", "-o"])
            .arg(&out);
        if std::env::var_os("GOCACHE").is_none() {
            cmd.env("GOCACHE", tmp.join("gocache"));
        }
        assert!(cmd.status().unwrap().success());
        match GoBinary::open(&out) {
            Err(GoBinError::UnsupportedArch(a)) => assert_eq!(a, "arm64"),
            other => panic!("expected UnsupportedArch, got {other:?}"),
        }
    }
}

/// Exercise every accessor; none may panic whatever the bytes.
fn poke(data: Vec<u8>) {
    let Ok(bin) = GoBinary::from_bytes("fuzz", data) else {
        return;
    };
    let _ = (
        bin.go_version(),
        bin.experiments(),
        bin.map_impl(),
        bin.pie(),
        bin.stripped(),
    );
    let _ = (
        bin.symbol_source(),
        bin.goid_offset(),
        bin.goid_source(),
        bin.g_m_offset(),
    );
    let _ = bin.exec_bias_base();
    let points = bin.probe_points();
    for p in &points {
        let _ = bin.symbolize(p.entry);
        let _ = bin.symbolize_inline(p.addr.saturating_add(7));
        let _ = bin.return_points(&p.func);
    }
    let _ = bin.probe_point_for("runtime.fatal");
    if let Some(m) = bin.function_addr("main.main") {
        for pc in (m..m.saturating_add(256)).step_by(13) {
            let _ = bin.symbolize_inline(pc);
        }
    }
    let base = bin.types_base().unwrap_or(0);
    for t in (base..base.saturating_add(4096))
        .step_by(32)
        .chain([0, u64::MAX - 8, u64::MAX])
    {
        let _ = bin.map_type_name(t);
        let _ = bin.map_key_info(t);
    }
}

#[test]
fn from_bytes_never_panics_on_damaged_binaries() {
    let picks = [
        ("1.25.5", Variant::Stripped),
        ("1.22.10", Variant::StrippedPie),
        ("1.27.3", Variant::Plain),
    ];
    let mut ran = false;
    for (ver, variant) in picks {
        let Some(b) = find(ver, variant) else {
            continue;
        };
        ran = true;
        let orig = std::fs::read(&b.path).unwrap();
        let len = orig.len();
        // Truncations: every header-sized prefix, then points across the file.
        let mut cuts: Vec<usize> = (0..256).step_by(7).collect();
        cuts.extend((1..60).map(|i| len * i / 60));
        for cut in cuts {
            poke(orig[..cut].to_vec());
        }
        // Byte flips, concentrated where the tables live: the ELF and
        // program/section headers, and then anywhere (deterministic xorshift).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..160 {
            let mut d = orig.clone();
            for _ in 0..1 + round % 8 {
                let r = next();
                let at = if round % 3 == 0 {
                    (r % 4096) as usize
                } else {
                    (r % len as u64) as usize
                };
                d[at] ^= (next() as u8) | 1;
            }
            poke(d);
        }
        // Tables pointing past the end: the section header table of a
        // binary with its tail cut off (offsets still claim the full file).
        poke(orig[..len / 2].to_vec());
        poke(vec![0xff; 4096]);
        let mut elf_only = orig[..64].to_vec();
        elf_only.resize(128 << 10, 0);
        poke(elf_only);
    }
    if !ran {
        common::skip("no Go build to damage");
    }
}
