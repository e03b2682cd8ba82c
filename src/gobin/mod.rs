//! What a Go executable tells us without running it: its Go version and map
//! implementation, where each runtime map function starts and where to probe
//! it, the goroutine-id offset, and how to name pcs and map types.
//!
//! Pure parsing of untrusted bytes: nothing here may panic on any input.

mod buildinfo;
mod bytes;
mod calls;
mod dwarf;
mod elf;
mod layout;
pub mod pclntab;
mod prologue;
mod types;
mod version;
mod wrappers;

pub use wrappers::{WrapperMap, GRANULE_SHIFT, MAX_WORDS as WRAP_MAX_WORDS};

use std::sync::OnceLock;

use crate::protocol::Op;
use elf::{Elf, ElfError};
use pclntab::Pclntab;

pub use pclntab::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MapImpl {
    Classic,
    Swiss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// Where the Go version was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionSource {
    /// `.go.buildinfo`, as the toolchain wrote it.
    Buildinfo,
    /// No build info: the runtime functions the binary links (see `version`).
    Runtime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GoidSource {
    Dwarf,
    Table,
    Unknown,
}

/// How the probed runtime function receives its key (amd64 ABIInternal):
/// also the BPF cookie's key kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// mapclear: no key.
    None,
    /// The key's value in ECX.
    Fast32,
    /// The key's value in RCX.
    Fast64,
    /// The key's value in RCX, a pointer.
    Fast64Ptr,
    /// String key: data pointer in RCX, length in RDI.
    FastStr,
    /// RCX points at the key; its size comes from the maptype's key type.
    Generic,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbePoint {
    pub func: String,
    pub op: Op,
    pub key_kind: KeyKind,
    /// Link-time address of the function's entry.
    pub entry: u64,
    /// Link-time address of the instruction to probe.
    pub addr: u64,
    /// File offset of `addr`: what uprobes attach to.
    pub file_offset: u64,
    /// False only when the function has no stack-bound check (NOSPLIT):
    /// then the probe sits on the entry, which cannot re-run.
    pub after_stack_check: bool,
}

/// Kind (abi.Kind & 0x1f: Bool 1, Int 2, … Int64 6, … Uint64 11, …, Pointer
/// 22, …, String 24, Struct 25, UnsafePointer 26) and size of a map's key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyType {
    pub kind: u8,
    pub size: u64,
}

#[derive(Debug)]
pub enum GoBinError {
    /// Path and the I/O error.
    NotReadable(String),
    /// Why the file is not a Go executable we can read.
    NotGo(String),
    /// The Go version that built it, e.g. "go1.17.13".
    UnsupportedVersion(String),
    /// The architecture, e.g. "arm64".
    UnsupportedArch(String),
    /// Its function table does not line up with its machine code: what
    /// was read of it.
    Unaligned(String),
}

impl std::fmt::Display for GoBinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GoBinError::NotReadable(why) => write!(
                f,
                "cannot read {why}; check the path and run with enough privilege to read it"
            ),
            GoBinError::NotGo(why) => write!(
                f,
                "{why}; mapguard only probes executables built by the Go toolchain, pick a Go process"
            ),
            GoBinError::UnsupportedVersion(v) => write!(
                f,
                "built with {v}; mapguard needs go1.21 or newer, rebuild the program with a newer Go toolchain"
            ),
            GoBinError::UnsupportedArch(a) => write!(
                f,
                "{a} executables are not supported yet (amd64 only); run against an amd64 build or node"
            ),
            GoBinError::Unaligned(why) => write!(
                f,
                "{why}; mapguard will not probe it, since a probe that misses an instruction's first byte would corrupt the process (please report this binary: `kubectl mapguard check` shows what was read)"
            ),
        }
    }
}

impl std::error::Error for GoBinError {}

const MIN_MINOR: u32 = 21;
const SWISS_MINOR: u32 = 24;

/// The runtime entry points compiled map operations call (walk.mapfast),
/// then reflect's delete and clear, which since go1.24 go straight to
/// internal/runtime/maps, past the runtime.* entry points (probed only
/// then: where they call runtime.mapdelete/mapclear, a probe on them would
/// count each operation twice).
const PROBE_TABLE: [(&str, Op, KeyKind); 13] = [
    ("runtime.mapdelete", Op::Delete, KeyKind::Generic),
    ("runtime.mapdelete_fast32", Op::Delete, KeyKind::Fast32),
    ("runtime.mapdelete_fast64", Op::Delete, KeyKind::Fast64),
    ("runtime.mapdelete_faststr", Op::Delete, KeyKind::FastStr),
    ("runtime.mapassign", Op::Assign, KeyKind::Generic),
    ("runtime.mapassign_fast32", Op::Assign, KeyKind::Fast32),
    ("runtime.mapassign_fast32ptr", Op::Assign, KeyKind::Fast32),
    ("runtime.mapassign_fast64", Op::Assign, KeyKind::Fast64),
    (
        "runtime.mapassign_fast64ptr",
        Op::Assign,
        KeyKind::Fast64Ptr,
    ),
    ("runtime.mapassign_faststr", Op::Assign, KeyKind::FastStr),
    ("runtime.mapclear", Op::Clear, KeyKind::None),
    ("reflect.mapdelete", Op::Delete, KeyKind::Generic),
    ("reflect.mapclear", Op::Clear, KeyKind::None),
];

/// The names probe_points looks at.
fn may_probe(name: &[u8]) -> bool {
    name.starts_with(b"runtime.map") || name.starts_with(b"reflect.map")
}

/// runtime.g.goid per Go minor version, from DWARF of real amd64 builds
/// (GO_RUNTIME.md; the integration tests re-check it against DWARF).
fn goid_table(minor: u32) -> Option<u64> {
    match minor {
        21 | 22 => Some(152),
        23 | 24 => Some(160),
        25..=27 => Some(152),
        _ => None,
    }
}

const G_M_OFFSET: u64 = 48;

/// The map implementation a build-info version and GOEXPERIMENT mean.
fn map_impl_of(minor: Option<u32>, experiments: &[String]) -> MapImpl {
    // An unparseable version ("devel +abc") is a development toolchain:
    // newer than any release, so swiss.
    let new_enough = minor.is_none_or(|m| m >= SWISS_MINOR);
    if new_enough && !experiments.iter().any(|e| e == "noswissmap") {
        MapImpl::Swiss
    } else {
        MapImpl::Classic
    }
}

pub struct GoBinary {
    data: Vec<u8>,
    elf: Elf,
    version: String,
    version_source: VersionSource,
    minor: Option<u32>,
    experiments: Vec<String>,
    map_impl: MapImpl,
    pcln: Pclntab,
    types_base: Option<u64>,
    /// DWARF is decompressed on first use only: most callers never need it
    /// and it dominates open time on large binaries.
    g_offsets: OnceLock<Option<dwarf::GOffsets>>,
    /// Built on first attach: it reads every function's name.
    wrappers: OnceLock<Option<WrapperMap>>,
}

impl std::fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoBinary")
            .field("version", &self.version)
            .field("experiments", &self.experiments)
            .field("pie", &self.pie())
            .field("stripped", &self.stripped())
            .field("nfunc", &self.pcln.nfunc)
            .finish()
    }
}

impl GoBinary {
    pub fn open(path: &std::path::Path) -> Result<GoBinary, GoBinError> {
        let data = std::fs::read(path)
            .map_err(|e| GoBinError::NotReadable(format!("{}: {e}", path.display())))?;
        GoBinary::from_bytes(&path.display().to_string(), data)
    }

    pub fn from_bytes(path_for_messages: &str, data: Vec<u8>) -> Result<GoBinary, GoBinError> {
        let path = path_for_messages;
        let elf = Elf::parse(&data).map_err(|e| match e {
            ElfError::NotElf(why) => GoBinError::NotGo(format!("{path}: {why}")),
            ElfError::Unsupported(what) => GoBinError::UnsupportedArch(what),
        })?;
        let info = buildinfo::read(&elf, &data);
        let pcln_at = layout::locate_pclntab(&elf, &data);
        if info.is_none() && pcln_at.is_none() {
            // Toolchains before 1.13 wrote no build info, and before 1.18 a
            // pclntab layout we do not read; the section name still says Go.
            if elf.section(".gopclntab").is_some() {
                return Err(GoBinError::UnsupportedVersion(
                    "a Go release older than go1.18".into(),
                ));
            }
            return Err(GoBinError::NotGo(format!(
                "{path}: no Go build info and no pclntab"
            )));
        }
        if !elf.is_amd64() {
            return Err(GoBinError::UnsupportedArch(elf.arch_name()));
        }
        let too_old = |i: &&buildinfo::BuildInfo| {
            buildinfo::go_minor(&i.version).is_some_and(|m| m < MIN_MINOR)
        };
        if let Some(old) = info.as_ref().filter(too_old) {
            return Err(GoBinError::UnsupportedVersion(old.version.clone()));
        }
        let Some((header, limit)) = pcln_at else {
            return Err(GoBinError::NotGo(format!(
                "{path}: Go build info but no pclntab"
            )));
        };
        if elf.exec_segment().is_none() {
            return Err(GoBinError::NotGo(format!("{path}: no executable segment")));
        }
        let text_start = layout::text_start(&elf, &data, header);
        let Some(pcln) = Pclntab::parse(&data, header, limit, text_start) else {
            return Err(GoBinError::NotGo(format!("{path}: corrupt pclntab")));
        };
        let (version, version_source, minor, experiments, map_impl) = match info {
            Some(info) => {
                let minor = buildinfo::go_minor(&info.version);
                let map_impl = map_impl_of(minor, &info.experiments);
                (
                    info.version,
                    VersionSource::Buildinfo,
                    minor,
                    info.experiments,
                    map_impl,
                )
            }
            // Release pipelines strip .go.buildinfo; the pclntab (which Go
            // cannot run without) still names every function.
            None => {
                let mut names = Vec::new();
                pcln.for_each(&data, |name, _| {
                    names.push(name);
                    true
                });
                let guess = version::guess(names);
                if guess.minor < MIN_MINOR {
                    return Err(GoBinError::UnsupportedVersion(
                        "a Go release older than go1.21 (read from its runtime functions: it has no .go.buildinfo)".into(),
                    ));
                }
                let map_impl = if guess.swiss {
                    MapImpl::Swiss
                } else {
                    MapImpl::Classic
                };
                let minor = guess.exact_minor();
                (
                    guess.version(),
                    VersionSource::Runtime,
                    minor,
                    Vec::new(),
                    map_impl,
                )
            }
        };
        let moduledata = layout::find_moduledata(&elf, &data, header);
        let gofunc = layout::gofunc(&elf, &data, &pcln, moduledata, minor);
        let pcln = pcln.with_gofunc(gofunc);
        let types_base = layout::types_base(&elf, &data, moduledata);
        let bin = GoBinary {
            data,
            elf,
            version,
            version_source,
            minor,
            experiments,
            map_impl,
            pcln,
            types_base,
            g_offsets: OnceLock::new(),
            wrappers: OnceLock::new(),
        };
        // Every runtime map function Go compiles may grow its stack, so it
        // opens with the stack check. None of them doing so means the
        // entries were read against the wrong base (as a cgo build's would
        // be, counted from the C code before Go's): the probes would land
        // inside instructions.
        let points = bin.probe_points();
        if !points.is_empty() && points.iter().all(|p| !p.after_stack_check) {
            return Err(GoBinError::Unaligned(format!(
                "{path}: none of its {} map functions starts with Go's stack check where its function table puts it",
                points.len()
            )));
        }
        Ok(bin)
    }

    pub fn go_version(&self) -> &str {
        &self.version
    }

    pub fn experiments(&self) -> &[String] {
        &self.experiments
    }

    pub fn map_impl(&self) -> MapImpl {
        self.map_impl
    }

    pub fn version_source(&self) -> VersionSource {
        self.version_source
    }

    pub fn pie(&self) -> bool {
        self.elf.is_dyn()
    }

    pub fn stripped(&self) -> bool {
        !self.elf.has_symtab()
    }

    pub fn symbol_source(&self) -> SymbolSource {
        if self.elf.has_symtab() {
            SymbolSource::Symtab
        } else {
            SymbolSource::Pclntab
        }
    }

    fn dwarf_offsets(&self) -> Option<dwarf::GOffsets> {
        *self.g_offsets.get_or_init(|| dwarf::g_offsets(&self.data))
    }

    pub fn goid_offset(&self) -> Option<u64> {
        self.dwarf_offsets()
            .and_then(|g| g.goid)
            .or_else(|| self.minor.and_then(goid_table))
    }

    pub fn goid_source(&self) -> GoidSource {
        if self.dwarf_offsets().and_then(|g| g.goid).is_some() {
            GoidSource::Dwarf
        } else if self.minor.and_then(goid_table).is_some() {
            GoidSource::Table
        } else {
            GoidSource::Unknown
        }
    }

    pub fn g_m_offset(&self) -> Option<u64> {
        self.dwarf_offsets()
            .and_then(|g| g.m)
            .or_else(|| self.minor.and_then(goid_table).map(|_| G_M_OFFSET))
    }

    /// Every runtime map entry point the linker kept, in a fixed order.
    pub fn probe_points(&self) -> Vec<ProbePoint> {
        let mut found: Vec<(usize, u64)> = Vec::new();
        let mut note = |name: &[u8], entry: u64| {
            if let Some(i) = PROBE_TABLE.iter().position(|p| p.0.as_bytes() == name) {
                if !found.iter().any(|f| f.0 == i) {
                    found.push((i, entry));
                }
            }
        };
        if self.elf.has_symtab() {
            self.elf.for_each_symbol(&self.data, |name, sym| {
                if sym.info & 0xf == elf::STT_FUNC && may_probe(name) {
                    note(name, sym.value);
                }
                true
            });
        } else {
            self.pcln.for_each(&self.data, |name, f| {
                if may_probe(name.as_bytes()) {
                    note(name.as_bytes(), f.entry);
                }
                true
            });
        }
        found.sort_unstable();
        let runtime_entries: Vec<u64> = found
            .iter()
            .filter(|(i, _)| PROBE_TABLE[*i].0.starts_with("runtime."))
            .map(|f| f.1)
            .collect();
        found
            .into_iter()
            .filter(|&(i, entry)| {
                PROBE_TABLE[i].0.starts_with("runtime.") || !self.calls_any(entry, &runtime_entries)
            })
            .filter_map(|(i, entry)| {
                let (name, op, kind) = PROBE_TABLE[i];
                self.probe_at(name, op, kind, entry)
            })
            .collect()
    }

    /// Whether the function at `entry` calls one of `targets` directly (or
    /// cannot be read, which must not make it a probe that may count twice).
    fn calls_any(&self, entry: u64, targets: &[u64]) -> bool {
        let Some(end) = self.function_end(entry) else {
            return true;
        };
        let len = (end - entry).min(calls::MAX_BODY);
        let Some(code) = self.elf.read_vaddr(&self.data, entry, len) else {
            return true;
        };
        calls::calls(code, entry)
            .direct
            .iter()
            .any(|t| targets.contains(t))
    }

    /// Where the functions that only pass a map operation on lie (see
    /// `wrappers`); None: callers are always the immediate frame.
    pub fn wrappers(&self) -> Option<&WrapperMap> {
        self.wrappers
            .get_or_init(|| self.build_wrapper_map())
            .as_ref()
    }

    fn probe_at(&self, name: &str, op: Op, key_kind: KeyKind, entry: u64) -> Option<ProbePoint> {
        let end = self.function_end(entry)?;
        let len = (end - entry).min(prologue::WINDOW as u64);
        let code = self.elf.read_vaddr(&self.data, entry, len)?;
        let site = prologue::probe_site(code, entry, end);
        let seg = self.elf.exec_segment()?;
        let file_offset = site.addr.checked_sub(seg.vaddr)?.checked_add(seg.offset)?;
        Some(ProbePoint {
            func: name.to_string(),
            op,
            key_kind,
            entry,
            addr: site.addr,
            file_offset,
            after_stack_check: site.after_stack_check,
        })
    }

    /// End of the function starting at `entry`, from the pclntab (which also
    /// proves `entry` really is a function start).
    fn function_end(&self, entry: u64) -> Option<u64> {
        let f = self.pcln.find(&self.data, entry)?;
        (f.entry == entry && f.end > entry).then_some(f.end)
    }

    /// Link address of a function's entry, e.g. "runtime.fatal".
    pub fn function_addr(&self, name: &str) -> Option<u64> {
        if self.elf.has_symtab() {
            let mut hit = None;
            self.elf.for_each_symbol(&self.data, |n, sym| {
                if n == name.as_bytes() && sym.info & 0xf == elf::STT_FUNC {
                    hit = Some(sym.value);
                    return false;
                }
                true
            });
            if hit.is_some() {
                return hit;
            }
        }
        let mut hit = None;
        self.pcln.for_each(&self.data, |n, f| {
            if n == name {
                hit = Some(f.entry);
                return false;
            }
            true
        });
        hit
    }

    /// The probe site of any function (runtime.fatal, …). Op and key kind
    /// come from the map table when `name` is in it, else Delete/None.
    pub fn probe_point_for(&self, name: &str) -> Option<ProbePoint> {
        let (op, kind) = PROBE_TABLE
            .iter()
            .find(|p| p.0 == name)
            .map_or((Op::Delete, KeyKind::None), |p| (p.1, p.2));
        self.probe_at(name, op, kind, self.function_addr(name)?)
    }

    /// Link addresses of every RET in a function, for entry+return pairs
    /// (uretprobes break Go stacks; a uprobe on each RET does not).
    pub fn return_points(&self, name: &str) -> Vec<u64> {
        let Some(entry) = self.function_addr(name) else {
            return Vec::new();
        };
        let Some(end) = self.function_end(entry) else {
            return Vec::new();
        };
        match self.elf.read_vaddr(&self.data, entry, end - entry) {
            Some(code) => prologue::ret_sites(code, entry),
            None => Vec::new(),
        }
    }

    /// File offset of a link address in the executable segment.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.elf.vaddr_to_offset(vaddr)
    }

    /// (p_vaddr, p_offset) of the executable PT_LOAD: with the start of the
    /// matching mapping in /proc/PID/maps this gives the load bias.
    pub fn exec_bias_base(&self) -> (u64, u64) {
        self.elf
            .exec_segment()
            .map_or((0, 0), |s| (s.vaddr, s.offset))
    }

    /// Function, file and line of the instruction at link address `pc`; for
    /// inlined code the innermost inlined function. For a return address
    /// from a stack, pass `ret - 1` so the call instruction is named.
    pub fn symbolize(&self, pc: u64) -> Option<Frame> {
        self.pcln.frames(&self.data, pc).into_iter().next()
    }

    /// All frames at `pc`, innermost inlined call first, the physical
    /// function last (what Go's tracebacks print for one pc).
    pub fn symbolize_inline(&self, pc: u64) -> Vec<Frame> {
        self.pcln.frames(&self.data, pc)
    }

    /// "map[string]main.User" for the link address of a map's *maptype.
    pub fn map_type_name(&self, maptype: u64) -> Option<String> {
        let base = self.types_base?;
        if types::header(&self.elf, &self.data, maptype)?.kind != types::KIND_MAP {
            return None;
        }
        types::name(&self.elf, &self.data, base, maptype)
    }

    /// `len` bytes at a link address, from the file: for constants the
    /// process never paged in.
    pub fn static_bytes(&self, vaddr: u64, len: u64) -> Option<Vec<u8>> {
        self.elf
            .read_vaddr(&self.data, vaddr, len)
            .map(<[u8]>::to_vec)
    }

    pub fn map_key_info(&self, maptype: u64) -> Option<KeyType> {
        let key = types::map_key(&self.elf, &self.data, maptype)?;
        Some(KeyType {
            kind: key.kind,
            size: key.size,
        })
    }

    /// The base type names are resolved against (moduledata.types).
    pub fn types_base(&self) -> Option<u64> {
        self.types_base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[6] = 1;
        h[16..18].copy_from_slice(&2u16.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn classifies_non_go_inputs() {
        let err = |d: Vec<u8>| GoBinary::from_bytes("x", d).unwrap_err();
        assert!(matches!(err(Vec::new()), GoBinError::NotGo(_)));
        assert!(matches!(err(b"MZ\x90\x00".to_vec()), GoBinError::NotGo(_)));
        assert!(matches!(err(elf_header(2, 1, 62)), GoBinError::NotGo(_)));
        assert!(matches!(
            err(elf_header(1, 1, 3)),
            GoBinError::UnsupportedArch(_)
        ));
        assert!(matches!(
            err(elf_header(2, 2, 21)),
            GoBinError::UnsupportedArch(_)
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..2000usize {
            let len = (round * 37) % 5000;
            let mut d = if round % 2 == 0 {
                elf_header(2, 1, 62)
            } else {
                Vec::new()
            };
            while d.len() < len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                d.push(x as u8);
            }
            // Section and program header offsets/counts pointing anywhere.
            if d.len() >= 64 && round % 4 == 0 {
                d[32..40].copy_from_slice(&(x % 6000).to_le_bytes());
                d[54] = 56;
                d[56] = (x >> 8) as u8;
                d[58] = 64;
                d[60] = (x >> 16) as u8;
            }
            let _ = GoBinary::from_bytes("garbage", d);
        }
    }

    #[test]
    fn binary_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GoBinary>();
    }

    #[test]
    fn goid_table_covers_known_versions_only() {
        assert_eq!(goid_table(21), Some(152));
        assert_eq!(goid_table(23), Some(160));
        assert_eq!(goid_table(24), Some(160));
        assert_eq!(goid_table(27), Some(152));
        assert_eq!(goid_table(20), None);
        assert_eq!(goid_table(28), None);
    }

    #[test]
    fn errors_are_one_line() {
        for e in [
            GoBinError::NotReadable("/x: No such file".into()),
            GoBinError::NotGo("/x: not an ELF file".into()),
            GoBinError::UnsupportedVersion("go1.17.13".into()),
            GoBinError::UnsupportedArch("arm64".into()),
            GoBinError::Unaligned("/x: none of its 9 map functions starts...".into()),
        ] {
            let s = e.to_string();
            assert!(!s.contains('\n') && s.len() > 20, "{s}");
        }
    }
}
