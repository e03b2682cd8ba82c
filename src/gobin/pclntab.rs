//! Go's runtime symbol table (pclntab, Go 1.18+ layout): function entries,
//! names and pc → file:line, which survive `-ldflags=-s -w`.
//!
//! Layout as in golang/go src/runtime/symtab.go and src/debug/gosym/pclntab.go.

use super::bytes::{cstr_at, i32_at, slice, u32_at, u64_at, u8_at, uvarint, ScanBudget};

pub(crate) const MAGIC_GO118: u32 = 0xffff_fff0;
pub(crate) const MAGIC_GO120: u32 = 0xffff_fff1;
const HEADER_LEN: u64 = 72;
const FUNC_FIXED_LEN: u64 = 44;
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
const INLINED_CALL_LEN: u64 = 16;
/// Go's longest names (generic instantiations) stay far below this; the cap
/// only stops a corrupt offset from making one lookup scan the whole file.
const MAX_NAME: usize = 64 << 10;
/// Deeper inline chains than this mean a corrupt or cyclic tree.
const MAX_INLINE_DEPTH: usize = 64;

/// A source location, as Go's own tracebacks print it (the protocol's type,
/// so symbolized frames go on the wire unchanged).
pub use crate::protocol::Frame;

/// Absolute file offsets of the pclntab's parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pclntab {
    pub nfunc: u64,
    quantum: u64,
    pub text_start: u64,
    funcnametab: u64,
    cutab: u64,
    filetab: u64,
    pctab: u64,
    functab: u64,
    /// File offset of `go:func.*`, the base of funcdata offsets (inline trees).
    gofunc: Option<u64>,
}

/// One function as the functab knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Func {
    pub entry: u64,
    /// Entry of the next function: the end of this one, padding included.
    pub end: u64,
    /// File offset of the `_func` record.
    off: u64,
}

/// One function's inline tree, with its pc → tree index table decoded once.
#[derive(Debug)]
pub(crate) struct InlineTree {
    entry: u64,
    /// File offset of the tree's first `inlinedCall`.
    tree: u64,
    /// The index table as runs: (end pc, index) in pc order.
    runs: Vec<(u64, i32)>,
}

impl InlineTree {
    /// The inline-tree index at `pc`; -1 (none) outside the table.
    fn index_at(&self, pc: u64) -> i32 {
        if pc < self.entry {
            return -1;
        }
        let i = self.runs.partition_point(|&(end, _)| end <= pc);
        self.runs.get(i).map_or(-1, |&(_, v)| v)
    }
}

/// The fields of a pcHeader that tell whether it is one.
pub(crate) fn header_plausible(b: &[u8]) -> bool {
    let magic = u32_at(b, 0);
    (magic == Some(MAGIC_GO120) || magic == Some(MAGIC_GO118))
        && b.get(4..6) == Some(&[0, 0])
        && matches!(b.get(6), Some(1 | 2 | 4))
        && b.get(7) == Some(&8)
}

impl Pclntab {
    /// `header` and `limit` are file offsets; `text_start` is the header's
    /// textStart after the caller resolved relocations and PIE fallbacks.
    pub fn parse(data: &[u8], header: u64, limit: u64, text_start: u64) -> Option<Pclntab> {
        let h = slice(data, header, HEADER_LEN)?;
        if !header_plausible(h) {
            return None;
        }
        let quantum = u64::from(*h.get(6)?);
        let nfunc = u64_at(h, 8)?;
        let rel = |at: u64| -> Option<u64> {
            let off = header.checked_add(u64_at(h, at)?)?;
            (off <= limit).then_some(off)
        };
        let t = Pclntab {
            nfunc,
            quantum,
            text_start,
            funcnametab: rel(32)?,
            cutab: rel(40)?,
            filetab: rel(48)?,
            pctab: rel(56)?,
            functab: rel(64)?,
            gofunc: None,
        };
        // The functab (nfunc+1 pairs) must be in the file, or nothing works.
        let table_len = nfunc.checked_add(1)?.checked_mul(8)?;
        if t.functab.checked_add(table_len)? > limit.min(data.len() as u64) {
            return None;
        }
        Some(t)
    }

    /// Raw `textStart` of a header at `header` (0 in relocated PIE builds).
    pub fn raw_text_start(data: &[u8], header: u64) -> Option<u64> {
        u64_at(data, header.checked_add(24)?)
    }

    fn pair(&self, data: &[u8], i: u64) -> Option<(u64, u64)> {
        let e = slice(data, self.functab.checked_add(i.checked_mul(8)?)?, 8)?;
        Some((u64::from(u32_at(e, 0)?), u64::from(u32_at(e, 4)?)))
    }

    pub fn func(&self, data: &[u8], i: u64) -> Option<Func> {
        if i >= self.nfunc {
            return None;
        }
        let (entryoff, funcoff) = self.pair(data, i)?;
        let (endoff, _) = self.pair(data, i + 1)?;
        Some(Func {
            entry: self.text_start.checked_add(entryoff)?,
            end: self.text_start.checked_add(endoff)?,
            off: self.functab.checked_add(funcoff)?,
        })
    }

    /// The function whose [entry, next entry) holds `pc`.
    pub fn find(&self, data: &[u8], pc: u64) -> Option<Func> {
        let off = pc.checked_sub(self.text_start)?;
        if self.nfunc == 0 || off > u64::from(u32::MAX) {
            return None;
        }
        // Last i with entryoff(i) <= off; the table is sorted by the linker.
        let (mut lo, mut hi) = (0u64, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.pair(data, mid)?.0 <= off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let f = self.func(data, lo)?;
        (f.entry <= pc && pc < f.end).then_some(f)
    }

    pub fn name<'d>(&self, data: &'d [u8], f: &Func) -> Option<&'d str> {
        let name_off = i32_at(data, f.off.checked_add(4)?)?;
        self.name_at(data, name_off)
    }

    fn name_at<'d>(&self, data: &'d [u8], name_off: i32) -> Option<&'d str> {
        let at = self.name_offset(name_off)?;
        std::str::from_utf8(cstr_at(data, at, MAX_NAME)?).ok()
    }

    /// File offset of the name at `name_off` in the funcnametab.
    fn name_offset(&self, name_off: i32) -> Option<u64> {
        self.funcnametab.checked_add(u64::try_from(name_off).ok()?)
    }

    /// Calls `f` with each function's name until it returns false (or the
    /// names read exceed the file's `ScanBudget`: only a crafted table).
    pub fn for_each<'d>(&self, data: &'d [u8], mut f: impl FnMut(&'d str, Func) -> bool) {
        let mut budget = ScanBudget::new(data);
        for i in 0..self.nfunc {
            let Some(func) = self.func(data, i) else {
                return;
            };
            let Some(at) = func
                .off
                .checked_add(4)
                .and_then(|o| i32_at(data, o))
                .and_then(|o| self.name_offset(o))
            else {
                continue;
            };
            let Some(name) = budget.cstr_at(data, at, MAX_NAME) else {
                return;
            };
            if let Some(name) = name.and_then(|n| std::str::from_utf8(n).ok()) {
                if !f(name, func) {
                    return;
                }
            }
        }
    }

    fn field_u32(&self, data: &[u8], f: &Func, at: u64) -> Option<u32> {
        u32_at(data, f.off.checked_add(at)?)
    }

    fn table_value(&self, data: &[u8], f: &Func, table: u32, pc: u64) -> Option<i32> {
        if table == 0 {
            return None;
        }
        let start = usize::try_from(self.pctab.checked_add(u64::from(table))?).ok()?;
        pcvalue(data.get(start..)?, f.entry, self.quantum, pc)
    }

    fn pcdata(&self, data: &[u8], f: &Func, index: u32, pc: u64) -> Option<i32> {
        let npcdata = self.field_u32(data, f, 28)?;
        if index >= npcdata {
            return None;
        }
        let table = self.field_u32(data, f, FUNC_FIXED_LEN + 4 * u64::from(index))?;
        self.table_value(data, f, table, pc)
    }

    /// File offset of funcdata `index`, when present.
    fn funcdata(&self, data: &[u8], f: &Func, index: u32) -> Option<u64> {
        let npcdata = u64::from(self.field_u32(data, f, 28)?);
        let nfuncdata = u8_at(data, f.off.checked_add(43)?)?;
        if index >= u32::from(nfuncdata) {
            return None;
        }
        let at = FUNC_FIXED_LEN + 4 * npcdata + 4 * u64::from(index);
        let off = self.field_u32(data, f, at)?;
        if off == u32::MAX {
            return None;
        }
        self.gofunc?.checked_add(u64::from(off))
    }

    /// Source file and line of the instruction at `pc` in `f`; with inlining
    /// this is the innermost inlined function's location.
    pub fn file_line(&self, data: &[u8], f: &Func, pc: u64) -> Option<(String, u32)> {
        let name = self.file_at(data, f, pc)?;
        let line = self.table_value(data, f, self.field_u32(data, f, 24)?, pc)?;
        let line = u32::try_from(line).ok()?;
        Some((String::from_utf8_lossy(name).into_owned(), line))
    }

    /// The name of the source file of the instruction at `pc` in `f`.
    fn file_at<'d>(&self, data: &'d [u8], f: &Func, pc: u64) -> Option<&'d [u8]> {
        let fileno = self.table_value(data, f, self.field_u32(data, f, 20)?, pc)?;
        let cu = u64::from(self.field_u32(data, f, 32)?);
        let idx = cu.checked_add(u64::try_from(fileno).ok()?)?;
        let file_off = u32_at(data, self.cutab.checked_add(idx.checked_mul(4)?)?)?;
        if file_off == u32::MAX {
            return None;
        }
        cstr_at(
            data,
            self.filetab.checked_add(u64::from(file_off))?,
            MAX_NAME,
        )
    }

    /// Frames for `pc`, innermost first: the inlined calls (when the inline
    /// tree is reachable) and last the physical function itself.
    pub fn frames(&self, data: &[u8], pc: u64) -> Vec<Frame> {
        self.frames_indexed(data, pc)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    /// [`Pclntab::frames`], each with its inline-tree index (-1 for the
    /// physical function): what tells two inlined copies of one function apart.
    pub(crate) fn frames_indexed(&self, data: &[u8], pc: u64) -> Vec<(Frame, i32)> {
        let mut out = Vec::new();
        let Some(f) = self.find(data, pc) else {
            return out;
        };
        let Some(outer) = self.name(data, &f) else {
            return out;
        };
        let tree = self.funcdata(data, &f, FUNCDATA_INL_TREE);
        let mut pc = pc;
        let mut index = tree.and_then(|_| self.pcdata(data, &f, PCDATA_INL_TREE_INDEX, pc));
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = self.file_line(data, &f, pc).unwrap_or_default();
            let call = match (tree, index) {
                (Some(tree), Some(i)) if i >= 0 => {
                    self.inlined_call(data, tree, i as u64).map(|c| (c, i))
                }
                _ => None,
            };
            let Some(((name, parent_pc), i)) = call else {
                out.push((
                    Frame {
                        func: outer.to_string(),
                        file,
                        line,
                    },
                    -1,
                ));
                return out;
            };
            out.push((
                Frame {
                    func: name.to_string(),
                    file,
                    line,
                },
                i,
            ));
            pc = f.entry.saturating_add(parent_pc);
            index = self.pcdata(data, &f, PCDATA_INL_TREE_INDEX, pc);
        }
        out
    }

    /// The source file of `f` itself: the file at its entry, unless the
    /// code there was inlined from elsewhere (a frameless function can start
    /// with an inlined body), which leaves it unknown.
    pub(crate) fn own_file<'d>(&self, data: &'d [u8], f: &Func) -> Option<&'d str> {
        if self.funcdata(data, f, FUNCDATA_INL_TREE).is_some()
            && self
                .pcdata(data, f, PCDATA_INL_TREE_INDEX, f.entry)
                .is_some_and(|i| i >= 0)
        {
            return None;
        }
        std::str::from_utf8(self.file_at(data, f, f.entry)?).ok()
    }

    /// The inline tree of `f` decoded for many look-ups; None when `f`
    /// inlined nothing (or its tree is unreadable).
    pub(crate) fn inline_tree(&self, data: &[u8], f: &Func) -> Option<InlineTree> {
        let tree = self.funcdata(data, f, FUNCDATA_INL_TREE)?;
        if PCDATA_INL_TREE_INDEX >= self.field_u32(data, f, 28)? {
            return None;
        }
        let table = self.field_u32(
            data,
            f,
            FUNC_FIXED_LEN + 4 * u64::from(PCDATA_INL_TREE_INDEX),
        )?;
        if table == 0 {
            return None;
        }
        let start = usize::try_from(self.pctab.checked_add(u64::from(table))?).ok()?;
        let runs = pcvalue_runs(data.get(start..)?, f.entry, self.quantum, f.end);
        Some(InlineTree {
            entry: f.entry,
            tree,
            runs,
        })
    }

    /// The inlined calls in force at `pc` of `t`'s function, innermost
    /// first, as (inline-tree index, function name).
    pub(crate) fn inlined_at<'d>(
        &self,
        data: &'d [u8],
        t: &InlineTree,
        pc: u64,
    ) -> Vec<(i32, &'d str)> {
        let mut out = Vec::new();
        let mut index = t.index_at(pc);
        while index >= 0 && out.len() < MAX_INLINE_DEPTH {
            let Some((name, parent_pc)) = self.inlined_call(data, t.tree, index as u64) else {
                break;
            };
            out.push((index, name));
            index = t.index_at(t.entry.saturating_add(parent_pc));
        }
        out
    }

    pub fn with_gofunc(self, gofunc: Option<u64>) -> Pclntab {
        Pclntab { gofunc, ..self }
    }

    /// Whether `self.gofunc` is right: the first inline trees it leads to
    /// must name real functions and point back inside their outer function.
    /// A tree-less program (built with -l) passes: nothing depends on it.
    pub fn inline_trees_resolve(&self, data: &[u8]) -> bool {
        let mut checked = 0;
        for i in 0..self.nfunc.min(4000) {
            let Some(f) = self.func(data, i) else {
                return false;
            };
            let Some(tree) = self.funcdata(data, &f, FUNCDATA_INL_TREE) else {
                continue;
            };
            let ok = self
                .inlined_call(data, tree, 0)
                .is_some_and(|(name, parent_pc)| {
                    parent_pc < f.end.saturating_sub(f.entry)
                        && !name.is_empty()
                        && name.bytes().all(|b| b >= 0x20)
                });
            if !ok {
                return false;
            }
            checked += 1;
            if checked == 8 {
                break;
            }
        }
        true
    }

    /// runtime.inlinedCall: funcID u8, pad [3]u8, nameOff i32, parentPc i32, startLine i32.
    fn inlined_call<'d>(&self, data: &'d [u8], tree: u64, i: u64) -> Option<(&'d str, u64)> {
        let e = slice(
            data,
            tree.checked_add(i.checked_mul(INLINED_CALL_LEN)?)?,
            INLINED_CALL_LEN,
        )?;
        let name = self.name_at(data, i32_at(e, 4)?)?;
        let parent_pc = u64::try_from(i32_at(e, 8)?).ok()?;
        Some((name, parent_pc))
    }
}

/// Decodes a pc-value table as runtime.pcvalue does: pairs of (zigzag value
/// delta, pc delta × quantum) starting from value -1 at `entry`; a zero value
/// delta after the first pair ends the table. Returns the value in force at
/// `target`, or None when `target` lies past the table.
pub(crate) fn pcvalue(table: &[u8], entry: u64, quantum: u64, target: u64) -> Option<i32> {
    if target < entry {
        return None;
    }
    let mut p = table;
    let mut pc = entry;
    let mut val: i32 = -1;
    loop {
        let first = pc == entry;
        let (uvdelta, n) = uvarint(p)?;
        if uvdelta == 0 && !first {
            return None;
        }
        p = p.get(n..)?;
        let uvdelta = uvdelta as u32;
        let delta = (uvdelta >> 1) as i32 ^ -((uvdelta & 1) as i32);
        val = val.wrapping_add(delta);
        let (pcdelta, n) = uvarint(p)?;
        p = p.get(n..)?;
        pc = pc.checked_add(pcdelta.checked_mul(quantum)?)?;
        if target < pc {
            return Some(val);
        }
    }
}

/// The whole of a pc-value table (see [`pcvalue`]) as runs of (end pc,
/// value), in pc order, up to `limit` (the function's end: a corrupt table
/// cannot run on past it).
pub(crate) fn pcvalue_runs(table: &[u8], entry: u64, quantum: u64, limit: u64) -> Vec<(u64, i32)> {
    let mut out = Vec::new();
    let mut p = table;
    let mut pc = entry;
    let mut val: i32 = -1;
    while pc < limit {
        let first = pc == entry;
        let Some((uvdelta, n)) = uvarint(p) else {
            break;
        };
        if uvdelta == 0 && !first {
            break;
        }
        let Some(rest) = p.get(n..) else {
            break;
        };
        let uvdelta = uvdelta as u32;
        let delta = (uvdelta >> 1) as i32 ^ -((uvdelta & 1) as i32);
        val = val.wrapping_add(delta);
        let Some((pcdelta, n)) = uvarint(rest) else {
            break;
        };
        p = rest.get(n..).unwrap_or_default();
        let Some(end) = pcdelta.checked_mul(quantum).and_then(|d| pc.checked_add(d)) else {
            break;
        };
        if end == pc {
            // Covers no pc.
            continue;
        }
        out.push((end, val));
        pc = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag(v: i32) -> u32 {
        ((v << 1) ^ (v >> 31)) as u32
    }

    fn encode(pairs: &[(i32, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |mut v: u64, out: &mut Vec<u8>| loop {
            if v < 0x80 {
                out.push(v as u8);
                break;
            }
            out.push((v as u8) | 0x80);
            v >>= 7;
        };
        for &(dv, dpc) in pairs {
            put(u64::from(zigzag(dv)), &mut out);
            put(dpc, &mut out);
        }
        out.push(0);
        out
    }

    #[test]
    fn pcvalue_walks_ranges() {
        // value 10 on [0x1000,0x1004), 12 on [0x1004,0x1010), 7 on [0x1010,0x1200)
        let t = encode(&[(11, 4), (2, 12), (-5, 0x1f0)]);
        assert_eq!(pcvalue(&t, 0x1000, 1, 0x1000), Some(10));
        assert_eq!(pcvalue(&t, 0x1000, 1, 0x1003), Some(10));
        assert_eq!(pcvalue(&t, 0x1000, 1, 0x1004), Some(12));
        assert_eq!(pcvalue(&t, 0x1000, 1, 0x100f), Some(12));
        assert_eq!(pcvalue(&t, 0x1000, 1, 0x1010), Some(7));
        assert_eq!(pcvalue(&t, 0x1000, 1, 0x11ff), Some(7));
        assert_eq!(pcvalue(&t, 0x1000, 1, 0x1200), None);
        assert_eq!(pcvalue(&t, 0x1000, 1, 0xfff), None);
    }

    #[test]
    fn pcvalue_first_delta_may_be_zero() {
        // A first value delta of 0 keeps -1 (e.g. "not inlined") and is not the end.
        let t = encode(&[(0, 8), (3, 8)]);
        assert_eq!(pcvalue(&t, 0x10, 1, 0x10), Some(-1));
        assert_eq!(pcvalue(&t, 0x10, 1, 0x18), Some(2));
        assert_eq!(pcvalue(&t, 0x10, 1, 0x20), None);
    }

    #[test]
    fn pcvalue_applies_quantum_and_survives_garbage() {
        let t = encode(&[(5, 2)]);
        assert_eq!(pcvalue(&t, 0x100, 4, 0x107), Some(4));
        assert_eq!(pcvalue(&t, 0x100, 4, 0x108), None);
        assert_eq!(pcvalue(&[], 0, 1, 0), None);
        assert_eq!(pcvalue(&[0xff; 32], 0, 1, 5), None);
        assert_eq!(
            pcvalue(
                &[0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                u64::MAX - 1,
                1,
                u64::MAX
            ),
            None
        );
    }

    #[test]
    fn header_check() {
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&MAGIC_GO120.to_le_bytes());
        h[6] = 1;
        h[7] = 8;
        assert!(header_plausible(&h));
        h[7] = 4;
        assert!(!header_plausible(&h));
        assert!(!header_plausible(&h[..5]));
    }
}
