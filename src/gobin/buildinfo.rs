//! `.go.buildinfo`: the Go version and the build settings (GOEXPERIMENT,
//! -buildmode) the toolchain stamps into every binary.

use super::bytes::{slice, u64_at, uvarint};
use super::elf::Elf;

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE_STRINGS: u8 = 2;

#[derive(Debug, Clone, Default)]
pub(crate) struct BuildInfo {
    pub version: String,
    pub experiments: Vec<String>,
}

/// `Some` when a buildinfo blob was found and its version read.
pub(crate) fn read(elf: &Elf, data: &[u8]) -> Option<BuildInfo> {
    let blob = locate(elf, data)?;
    let ptr_size = *blob.get(14)?;
    let flags = *blob.get(15)?;
    let (version, modinfo) = if flags & FLAG_INLINE_STRINGS != 0 {
        // Go 1.18+: two uvarint-prefixed strings right after the 32-byte header.
        let rest = blob.get(32..)?;
        let (version, n) = varint_string(rest)?;
        let modinfo = rest.get(n..).and_then(varint_string).map(|(s, _)| s);
        (version, modinfo.unwrap_or_default())
    } else {
        // Before 1.18 the header holds pointers to Go string headers. We only
        // need the version, to tell the user which old toolchain built it.
        if ptr_size != 8 || flags & FLAG_BIG_ENDIAN != 0 {
            return None;
        }
        let version = read_go_string(elf, data, u64_at(blob, 16)?)?;
        let modinfo = u64_at(blob, 24)
            .and_then(|p| read_go_string(elf, data, p))
            .unwrap_or_default();
        (version, modinfo)
    };
    if version.is_empty() {
        return None;
    }
    // A non-default experiment set is stamped into the version too
    // ("go1.24.11 X:noswissmap"); the release is the first word.
    let mut experiments = experiments(&modinfo);
    let release = match version.split_whitespace().next() {
        Some(first) if first.starts_with("go1") => first.to_string(),
        _ => version.clone(),
    };
    if experiments.is_empty() {
        if let Some(x) = version
            .split_whitespace()
            .find_map(|w| w.strip_prefix("X:"))
        {
            experiments = x
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    Some(BuildInfo {
        experiments,
        version: release,
    })
}

/// The section when the linker named it, else the first 16-byte-aligned
/// magic in a writable segment (debug/buildinfo searches the same way).
fn locate<'d>(elf: &Elf, data: &'d [u8]) -> Option<&'d [u8]> {
    if let Some(s) = elf.section(".go.buildinfo") {
        if let Some(b) = elf.section_bytes(data, s) {
            if b.starts_with(MAGIC) {
                return Some(b);
            }
        }
    }
    for seg in elf.loads.iter().filter(|s| s.flags & 2 != 0) {
        let Some(bytes) = slice(data, seg.offset, seg.filesz).or_else(|| {
            let start = usize::try_from(seg.offset).ok()?;
            data.get(start..)
        }) else {
            continue;
        };
        let mut at = 0usize;
        while let Some(window) = bytes.get(at..) {
            let Some(pos) = find(window, MAGIC) else {
                break;
            };
            let hit = at + pos;
            if (seg.vaddr.wrapping_add(hit as u64)) % 16 == 0 {
                return bytes.get(hit..);
            }
            at = hit + 1;
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while let Some(rel) = hay.get(i..)?.iter().position(|&b| b == first) {
        let at = i + rel;
        if hay.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

fn varint_string(b: &[u8]) -> Option<(String, usize)> {
    let (len, n) = uvarint(b)?;
    let len = usize::try_from(len).ok()?;
    let bytes = b.get(n..n.checked_add(len)?)?;
    Some((String::from_utf8_lossy(bytes).into_owned(), n + len))
}

fn read_go_string(elf: &Elf, data: &[u8], header: u64) -> Option<String> {
    let ptr = elf.read_ptr(data, header)?;
    let len = elf.read_ptr(data, header.checked_add(8)?)?;
    if len > 1 << 20 {
        return None;
    }
    let bytes = elf.read_vaddr(data, ptr, len)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// `build\tGOEXPERIMENT=a,b` in the module info; the empty list when absent.
pub(crate) fn experiments(modinfo: &str) -> Vec<String> {
    modinfo
        .lines()
        .filter_map(|l| l.strip_prefix("build\tGOEXPERIMENT="))
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Minor version of a Go 1.x release string: "go1.24.11" → 24,
/// "go1.26rc1" → 26, "devel go1.27-abcdef Tue ..." → 27.
pub(crate) fn go_minor(version: &str) -> Option<u32> {
    let at = version.find("go1.")?;
    let digits: String = version[at + 4..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_strings() {
        assert_eq!(go_minor("go1.24.11"), Some(24));
        assert_eq!(go_minor("go1.26rc1"), Some(26));
        assert_eq!(go_minor("go1.21"), Some(21));
        assert_eq!(
            go_minor("devel go1.27-abcdef12 Tue Jan 1 00:00:00 2026 +0000"),
            Some(27)
        );
        assert_eq!(go_minor("go1.17.13"), Some(17));
        assert_eq!(go_minor("devel +abcdef"), None);
        assert_eq!(go_minor("go1."), None);
        assert_eq!(go_minor(""), None);
    }

    #[test]
    fn reads_experiments() {
        let m = "path\tx\nmod\tx\t(devel)\t\nbuild\t-buildmode=pie\nbuild\tGOEXPERIMENT=noswissmap,aliastypeparams\nbuild\tGOOS=linux\n";
        assert_eq!(experiments(m), vec!["noswissmap", "aliastypeparams"]);
        assert!(experiments("build\tGOOS=linux").is_empty());
    }

    #[test]
    fn finds_magic() {
        assert_eq!(find(b"xx\xff Go buildinf:", MAGIC), Some(2));
        assert_eq!(find(b"\xff Go build", MAGIC), None);
        assert_eq!(find(b"", MAGIC), None);
    }
}
