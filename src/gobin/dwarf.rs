//! runtime.g member offsets from DWARF, when the binary kept it.
//!
//! Only the CUs named "runtime" are walked (the type lives in one of them);
//! everything else is skipped by unit header, so a large binary costs one
//! decompression of .debug_info and a short walk.

use std::borrow::Cow;

use gimli::{
    constants, AttributeValue, DebugAbbrev, DebugInfo, DebugStr, EndianSlice, LittleEndian,
};
use object::{Object, ObjectSection};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GOffsets {
    pub goid: Option<u64>,
    pub m: Option<u64>,
}

/// `None` when the binary has no usable DWARF or no `runtime.g` in it.
pub(crate) fn g_offsets(data: &[u8]) -> Option<GOffsets> {
    let file = object::read::elf::ElfFile64::<object::LittleEndian>::parse(data).ok()?;
    let load = |name: &str| -> Option<Cow<'_, [u8]>> {
        let section = file.section_by_name(name)?;
        // A corrupt header may claim any size; zlib on real DWARF stays far
        // below 1:64, so refuse to reserve memory for more than that.
        let claimed = section.compressed_data().ok()?;
        let limit = (claimed.data.len() as u64).saturating_mul(64).max(1 << 20);
        if claimed.uncompressed_size > limit {
            return None;
        }
        section.uncompressed_data().ok()
    };
    let info = load(".debug_info")?;
    let abbrev = load(".debug_abbrev")?;
    let strs = load(".debug_str").unwrap_or(Cow::Borrowed(&[]));
    let debug_info = DebugInfo::new(&info, LittleEndian);
    let debug_abbrev = DebugAbbrev::new(&abbrev, LittleEndian);
    let debug_str = DebugStr::new(&strs, LittleEndian);

    // First the runtime CUs, then (should the linker ever move the type) all.
    for only_runtime in [true, false] {
        if let Some(found) = scan(&debug_info, &debug_abbrev, &debug_str, only_runtime) {
            return Some(found);
        }
    }
    None
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

fn scan(
    info: &DebugInfo<Slice<'_>>,
    abbrev: &DebugAbbrev<Slice<'_>>,
    strs: &DebugStr<Slice<'_>>,
    only_runtime: bool,
) -> Option<GOffsets> {
    let mut units = info.units();
    let mut cached: Option<(gimli::DebugAbbrevOffset, gimli::Abbreviations)> = None;
    while let Ok(Some(header)) = units.next() {
        let off = header.debug_abbrev_offset();
        if cached.as_ref().map(|c| c.0) != Some(off) {
            cached = Some((off, header.abbreviations(abbrev).ok()?));
        }
        let abbrevs = &cached.as_ref()?.1;
        let mut entries = header.entries(abbrevs);
        let Ok(Some((_, root))) = entries.next_dfs() else {
            continue;
        };
        let is_runtime = name_of(root, strs).is_some_and(|n| n == b"runtime");
        if only_runtime && !is_runtime {
            continue;
        }
        let mut depth: isize = 0;
        let mut in_g: Option<isize> = None;
        let mut found = GOffsets::default();
        while let Ok(Some((delta, e))) = entries.next_dfs() {
            depth += delta;
            if let Some(d) = in_g {
                if depth <= d {
                    return Some(found);
                }
                if depth == d + 1 && e.tag() == constants::DW_TAG_member {
                    let loc = e
                        .attr_value(constants::DW_AT_data_member_location)
                        .ok()
                        .flatten()
                        .and_then(|v| v.udata_value());
                    match name_of(e, strs) {
                        Some(b"goid") => found.goid = loc,
                        Some(b"m") => found.m = loc,
                        _ => {}
                    }
                }
                continue;
            }
            if e.tag() == constants::DW_TAG_structure_type
                && name_of(e, strs).is_some_and(|n| n == b"runtime.g")
                && e.has_children()
            {
                in_g = Some(depth);
            }
        }
        if in_g.is_some() {
            return Some(found);
        }
    }
    None
}

fn name_of<'a>(
    e: &gimli::DebuggingInformationEntry<'_, '_, Slice<'a>>,
    strs: &DebugStr<Slice<'a>>,
) -> Option<&'a [u8]> {
    match e.attr_value(constants::DW_AT_name).ok()?? {
        AttributeValue::String(s) => Some(s.slice()),
        AttributeValue::DebugStrRef(o) => strs.get_str(o).ok().map(|s| s.slice()),
        _ => None,
    }
}
