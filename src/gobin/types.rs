//! Runtime type descriptors (internal/abi.Type) and their names, read from
//! the file so a map's `t` argument can be shown as `map[string]main.User`.

use super::bytes::{i32_at, slice, u64_at, u8_at, uvarint};
use super::elf::Elf;

const TYPE_LEN: u64 = 48;
const KIND_MASK: u8 = 0x1f;
pub(crate) const KIND_MAP: u8 = 21;
const TFLAG_EXTRA_STAR: u8 = 2;
/// Far above any real type name; bounds work on a corrupt length.
const MAX_NAME_LEN: u64 = 1 << 20;
/// How many typelinks must decode before a base is trusted.
const SAMPLE: usize = 16;

#[derive(Debug, Clone, Copy)]
pub(crate) struct TypeHeader {
    pub size: u64,
    pub tflag: u8,
    pub kind: u8,
    pub str_off: i32,
}

pub(crate) fn header(elf: &Elf, data: &[u8], typ: u64) -> Option<TypeHeader> {
    let b = elf.read_vaddr(data, typ, TYPE_LEN)?;
    Some(TypeHeader {
        size: u64_at(b, 0)?,
        tflag: u8_at(b, 20)?,
        kind: u8_at(b, 23)? & KIND_MASK,
        str_off: i32_at(b, 40)?,
    })
}

/// The Go spelling of the type at `typ`, resolving its nameOff against `base`
/// (moduledata.types).
pub(crate) fn name(elf: &Elf, data: &[u8], base: u64, typ: u64) -> Option<String> {
    let h = header(elf, data, typ)?;
    let mut s = name_at(elf, data, base.checked_add_signed(i64::from(h.str_off))?)?;
    if h.tflag & TFLAG_EXTRA_STAR != 0 {
        s = s.strip_prefix('*')?.to_string();
    }
    Some(s)
}

/// abi.Name: one flag byte, a uvarint length, the bytes.
fn name_at(elf: &Elf, data: &[u8], at: u64) -> Option<String> {
    let head = elf
        .read_vaddr(data, at, 11)
        .or_else(|| elf.read_vaddr(data, at, 2))?;
    let (len, n) = uvarint(head.get(1..)?)?;
    if len == 0 || len > MAX_NAME_LEN {
        return None;
    }
    let bytes = elf.read_vaddr(data, at.checked_add(1 + n as u64)?, len)?;
    if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return None;
    }
    String::from_utf8(bytes.to_vec()).ok()
}

/// The map's key type (maptype.Key at +48, a pointer: relocated in PIE).
pub(crate) fn map_key(elf: &Elf, data: &[u8], maptype: u64) -> Option<TypeHeader> {
    if header(elf, data, maptype)?.kind != KIND_MAP {
        return None;
    }
    let key = elf.read_ptr(data, maptype.checked_add(TYPE_LEN)?)?;
    if key == 0 {
        return None;
    }
    header(elf, data, key)
}

/// First candidate under which the typelinks (int32 offsets from the types
/// base) decode to printable names. Go 1.27 dropped the typelink section;
/// there the first candidate that holds the candidate list's own evidence
/// (a symbol or moduledata) wins.
pub(crate) fn choose_base(elf: &Elf, data: &[u8], candidates: &[u64]) -> Option<u64> {
    let links = [".typelink", ".data.rel.ro.typelink"]
        .iter()
        .filter_map(|n| elf.section(n))
        .find_map(|s| elf.section_bytes(data, s));
    let Some(links) = links.filter(|l| l.len() >= 4) else {
        return candidates.first().copied();
    };
    candidates.iter().copied().find(|&base| {
        (0..(links.len() / 4).min(SAMPLE)).all(|i| {
            slice(links, 4 * i as u64, 4)
                .and_then(|b| i32_at(b, 0))
                .and_then(|off| base.checked_add_signed(i64::from(off)))
                .and_then(|typ| name(elf, data, base, typ))
                .is_some()
        })
    })
}
