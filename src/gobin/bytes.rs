//! Bounds-checked little-endian reads over untrusted file bytes.
//!
//! Every offset in a Go binary's tables comes from the file itself, so every
//! read goes through these helpers and yields `None` instead of panicking.

pub(crate) fn slice(data: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    data.get(start..start.checked_add(len)?)
}

pub(crate) fn u8_at(data: &[u8], off: u64) -> Option<u8> {
    data.get(usize::try_from(off).ok()?).copied()
}

pub(crate) fn u16_at(data: &[u8], off: u64) -> Option<u16> {
    let b = slice(data, off, 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

pub(crate) fn u32_at(data: &[u8], off: u64) -> Option<u32> {
    let b: [u8; 4] = slice(data, off, 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

pub(crate) fn i32_at(data: &[u8], off: u64) -> Option<i32> {
    u32_at(data, off).map(|v| v as i32)
}

pub(crate) fn u64_at(data: &[u8], off: u64) -> Option<u64> {
    let b: [u8; 8] = slice(data, off, 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// A NUL-terminated string; `max` bounds the search so a missing terminator in
/// a corrupt file cannot make us scan megabytes per lookup.
pub(crate) fn cstr_at(data: &[u8], off: u64, max: usize) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let rest = data.get(start..)?;
    let rest = &rest[..rest.len().min(max)];
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

/// What a loop of `cstr_at` lookups over one table may read in all: twice
/// the file. A real string table is read about once per pass; a crafted
/// table can point every entry at the same long unterminated run, which
/// makes one pass quadratic in the file size.
pub(crate) struct ScanBudget(u64);

impl ScanBudget {
    pub fn new(data: &[u8]) -> ScanBudget {
        ScanBudget((data.len() as u64).saturating_mul(2))
    }

    /// `cstr_at`, charged the bytes it reads; `None` once the budget is spent.
    pub fn cstr_at<'d>(
        &mut self,
        data: &'d [u8],
        off: u64,
        max: usize,
    ) -> Option<Option<&'d [u8]>> {
        let found = cstr_at(data, off, max);
        let read = match found {
            Some(s) => s.len() + 1,
            None => {
                usize::try_from(off).map_or(0, |start| data.len().saturating_sub(start).min(max))
            }
        };
        self.0 = self.0.checked_sub(read as u64)?;
        Some(found)
    }
}

/// Unsigned LEB128 as Go's encoding/binary and runtime write it. Returns the
/// value and the number of bytes consumed; rejects encodings longer than a u64.
pub(crate) fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_decodes_go_encodings() {
        assert_eq!(uvarint(&[0]), Some((0, 1)));
        assert_eq!(uvarint(&[0x7f]), Some((127, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(uvarint(&max), Some((u64::MAX, 10)));
    }

    #[test]
    fn uvarint_rejects_truncated_and_overlong() {
        assert_eq!(uvarint(&[]), None);
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[0xff; 10]), None);
        assert_eq!(
            uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }

    #[test]
    fn reads_are_bounds_checked() {
        let d = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u32_at(&d, 0), Some(0x04030201));
        assert_eq!(u32_at(&d, 5), None);
        assert_eq!(u64_at(&d, 0), Some(0x0807060504030201));
        assert_eq!(u64_at(&d, 1), None);
        assert_eq!(u64_at(&d, u64::MAX), None);
        assert_eq!(slice(&d, u64::MAX, 2), None);
        assert_eq!(cstr_at(b"abc\0def", 0, 16), Some(&b"abc"[..]));
        assert_eq!(cstr_at(b"abcdef", 0, 16), None);
        assert_eq!(cstr_at(b"abc\0", 0, 2), None);
    }
}
