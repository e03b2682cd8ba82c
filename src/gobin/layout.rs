//! Where Go keeps its tables inside the image: the pclntab, the module
//! data (runtime.firstmoduledata), the funcdata base `go:func.*` and the
//! base type names are resolved against. Symbols are used when present;
//! stripped and externally linked binaries are searched, and every guess is
//! checked against the tables it is supposed to explain.

use super::bytes;
use super::elf::Elf;
use super::pclntab::{self, Pclntab};
use super::types;

/// Offset of the moduledata `types` field, the same from Go 1.21 through 1.27.
const MODULEDATA_TYPES: u64 = 296;

/// (file offset of the pcHeader, end of its section or of the file).
pub(super) fn locate_pclntab(elf: &Elf, data: &[u8]) -> Option<(u64, u64)> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = elf.section(name) {
            let head = bytes::slice(data, s.offset, 8);
            if head.is_some_and(pclntab::header_plausible) {
                return Some((s.offset, s.offset.saturating_add(s.size)));
            }
        }
    }
    // Externally linked or section-stripped binaries: find the magic.
    let mut at = 0usize;
    while let Some(rel) = data
        .get(at..)?
        .windows(8)
        .position(|w| (w[0] == 0xf1 || w[0] == 0xf0) && pclntab::header_plausible(w))
    {
        let hit = at + rel;
        if hit & 7 == 0 && Pclntab::parse(data, hit as u64, data.len() as u64, 0).is_some() {
            return Some((hit as u64, data.len() as u64));
        }
        at = hit + 1;
    }
    None
}

/// Offset of the moduledata `text` field (runtime.text, the base of the
/// pclntab's entry offsets), the same from Go 1.21 through 1.27.
const MODULEDATA_TEXT: u64 = 176;

/// The base the pclntab's function offsets count from. The pcHeader's
/// textStart until Go 1.25 (0 in the file of an externally linked PIE: a
/// relocation fills it); from Go 1.26 that field is always 0 and only the
/// moduledata holds the base. Then `runtime.text`, then `.text`, which is
/// wrong by the C code put before Go's in a cgo build: probes placed by it
/// would land inside instructions, so the module data comes first.
pub(super) fn text_start(elf: &Elf, data: &[u8], header: u64) -> u64 {
    let raw = elf
        .offset_to_vaddr(header)
        .and_then(|v| elf.read_ptr(data, v.checked_add(24)?))
        .or_else(|| Pclntab::raw_text_start(data, header))
        .unwrap_or(0);
    if raw != 0 {
        return raw;
    }
    let from_moduledata = find_moduledata(elf, data, header)
        .and_then(|md| elf.read_ptr(data, md.checked_add(MODULEDATA_TEXT)?))
        .filter(|&t| t != 0);
    if let Some(t) = from_moduledata {
        return t;
    }
    elf.symbol(data, "runtime.text")
        .map(|s| s.value)
        .or_else(|| elf.section(".text").map(|s| s.addr))
        .or_else(|| elf.exec_segment().map(|s| s.vaddr))
        .unwrap_or(0)
}

/// runtime.firstmoduledata: its first word points at the pcHeader and its
/// second (funcnametab.ptr) at the pcHeader plus funcnameOffset.
/// `header` is the pcHeader's file offset.
pub(super) fn find_moduledata(elf: &Elf, data: &[u8], header: u64) -> Option<u64> {
    let header_vaddr = elf.offset_to_vaddr(header)?;
    let funcname_off = bytes::u64_at(data, header.checked_add(32)?)?;
    let is_md = |md: u64| -> bool {
        elf.read_ptr(data, md) == Some(header_vaddr)
            && md.checked_add(8).and_then(|a| elf.read_ptr(data, a))
                == header_vaddr.checked_add(funcname_off)
    };
    let named = elf
        .symbol(data, "runtime.firstmoduledata")
        .map(|s| s.value)
        .or_else(|| elf.section(".go.module").map(|s| s.addr));
    if let Some(md) = named.filter(|&md| is_md(md)) {
        return Some(md);
    }
    let needle = header_vaddr.to_le_bytes();
    for seg in elf.loads.iter().filter(|s| s.flags & 2 != 0) {
        let Some(b) = bytes::slice(data, seg.offset, seg.filesz) else {
            continue;
        };
        for (i, w) in b.chunks_exact(8).enumerate() {
            if w == needle {
                let md = seg.vaddr.saturating_add(8 * i as u64);
                if is_md(md) {
                    return Some(md);
                }
            }
        }
    }
    elf.relative_sites(header_vaddr)
        .into_iter()
        .find(|&md| is_md(md))
}

/// Base of funcdata offsets (`go:func.*`), as a file offset. The symbol
/// when present; else a moduledata field, whose position moved in Go 1.27:
/// try the word after `rodata` (found by value), then the known layouts
/// (320 for 1.21–1.26, 344 for 1.27), then the neighbours, and keep the
/// first under which inline trees decode.
pub(super) fn gofunc(
    elf: &Elf,
    data: &[u8],
    pcln: &Pclntab,
    moduledata: Option<u64>,
    minor: Option<u32>,
) -> Option<u64> {
    let mut candidates = Vec::new();
    if let Some(s) = elf.symbol(data, "go:func.*") {
        candidates.push(s.value);
    }
    if let Some(md) = moduledata {
        let word = |i: u64| md.checked_add(8 * i).and_then(|a| elf.read_ptr(data, a));
        let window = 37..=45u64;
        if let Some(rodata) = elf.section(".rodata").map(|s| s.addr).filter(|&a| a != 0) {
            if let Some(i) = window.clone().rev().find(|&i| word(i) == Some(rodata)) {
                candidates.extend(word(i + 1));
            }
        }
        let known = if minor.is_some_and(|m| m >= 27) {
            [43, 40]
        } else {
            [40, 43]
        };
        candidates.extend(known.into_iter().chain(window).filter_map(word));
    }
    candidates.into_iter().find_map(|v| {
        let off = elf.vaddr_to_offset(v)?;
        let trial = pcln.with_gofunc(Some(off));
        trial.inline_trees_resolve(data).then_some(off)
    })
}

/// Where abi.Type.Str name offsets start. Candidates in order of evidence,
/// checked against the typelinks when the binary has them.
pub(super) fn types_base(elf: &Elf, data: &[u8], moduledata: Option<u64>) -> Option<u64> {
    let mut candidates = Vec::new();
    if let Some(s) = elf.symbol(data, "runtime.types") {
        candidates.push(s.value);
    }
    if let Some(v) = moduledata
        .and_then(|md| md.checked_add(MODULEDATA_TYPES))
        .and_then(|a| elf.read_ptr(data, a))
    {
        candidates.push(v);
    }
    // Go 1.27 gives types their own section; PIE puts them in relro.
    for name in [".go.type", ".data.rel.ro", ".rodata"] {
        if name == ".data.rel.ro" && !elf.is_dyn() {
            continue;
        }
        if let Some(s) = elf.section(name) {
            candidates.push(s.addr);
        }
    }
    candidates.retain(|&c| c != 0);
    candidates.dedup();
    types::choose_base(elf, data, &candidates)
}
