//! The parts of ELF64 we need: sections, loadable segments, the symbol table
//! and RELATIVE relocations, kept as plain offsets so `GoBinary` can own the
//! file bytes without borrowing from itself.

use super::bytes::{cstr_at, slice, u16_at, u32_at, u64_at, u8_at, ScanBudget};

pub(crate) const SHT_SYMTAB: u32 = 2;
pub(crate) const SHT_RELA: u32 = 4;
pub(crate) const SHT_NOBITS: u32 = 8;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const R_X86_64_RELATIVE: u64 = 8;
pub(crate) const STT_FUNC: u8 = 2;
/// Real executables have a handful of PT_LOADs and RELA tables; past these
/// caps the file is crafted, and every segment is scanned whole (buildinfo,
/// moduledata), so they bound that work.
const MAX_LOADS: usize = 16;
const MAX_RELA_TABLES: usize = 8;

#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub name: String,
    pub kind: u32,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Symbol {
    pub value: u64,
    pub info: u8,
}

#[derive(Debug, Clone, Copy)]
struct Table {
    offset: u64,
    count: u64,
}

#[derive(Debug)]
pub(crate) enum ElfError {
    NotElf(String),
    Unsupported(String),
}

#[derive(Debug)]
pub(crate) struct Elf {
    pub machine: u16,
    e_type: u16,
    pub sections: Vec<Section>,
    pub loads: Vec<Segment>,
    symtab: Option<(Table, Table)>,
    /// (offset, addend) of every R_X86_64_RELATIVE entry, sorted by offset
    /// (file order among equal offsets): read once, searched per pointer.
    relative: Vec<(u64, u64)>,
}

impl Elf {
    pub fn parse(data: &[u8]) -> Result<Elf, ElfError> {
        if data.get(..4) != Some(b"\x7fELF") {
            return Err(ElfError::NotElf("not an ELF file".into()));
        }
        match (u8_at(data, 4), u8_at(data, 5)) {
            (Some(2), Some(1)) => {}
            (Some(1), _) => return Err(ElfError::Unsupported("32-bit ELF".into())),
            (_, Some(2)) => return Err(ElfError::Unsupported("big-endian ELF".into())),
            _ => return Err(ElfError::NotElf("corrupt ELF identification".into())),
        }
        let bad = || ElfError::NotElf("truncated ELF header".into());
        let e_type = u16_at(data, 16).ok_or_else(bad)?;
        let machine = u16_at(data, 18).ok_or_else(bad)?;
        let phoff = u64_at(data, 32).ok_or_else(bad)?;
        let shoff = u64_at(data, 40).ok_or_else(bad)?;
        let phentsize = u64::from(u16_at(data, 54).ok_or_else(bad)?);
        let phnum = u64::from(u16_at(data, 56).ok_or_else(bad)?);
        let shentsize = u64::from(u16_at(data, 58).ok_or_else(bad)?);
        let mut shnum = u64::from(u16_at(data, 60).ok_or_else(bad)?);
        let mut shstrndx = u64::from(u16_at(data, 62).ok_or_else(bad)?);

        let mut loads = Vec::new();
        if phentsize >= 56 {
            for i in 0..phnum {
                let Some(e) = i
                    .checked_mul(phentsize)
                    .and_then(|o| o.checked_add(phoff))
                    .and_then(|at| slice(data, at, 56))
                else {
                    break;
                };
                let (Some(kind), Some(flags), Some(offset), Some(vaddr), Some(filesz)) = (
                    u32_at(e, 0),
                    u32_at(e, 4),
                    u64_at(e, 8),
                    u64_at(e, 16),
                    u64_at(e, 32),
                ) else {
                    break;
                };
                if kind == PT_LOAD && loads.len() < MAX_LOADS {
                    loads.push(Segment {
                        flags,
                        offset,
                        vaddr,
                        filesz,
                    });
                }
            }
        }

        let mut raw = Vec::new();
        if shoff != 0 && shentsize >= 64 {
            // Extended numbering: the real counts live in section 0.
            if shnum == 0 {
                shnum = slice(data, shoff, 64)
                    .and_then(|e| u64_at(e, 32))
                    .unwrap_or(0);
            }
            if shstrndx == 0xffff {
                shstrndx = u64::from(
                    slice(data, shoff, 64)
                        .and_then(|e| u32_at(e, 40))
                        .unwrap_or(0),
                );
            }
            let cap = (data.len() as u64 / shentsize).min(shnum);
            for i in 0..cap {
                let Some(e) = i
                    .checked_mul(shentsize)
                    .and_then(|o| o.checked_add(shoff))
                    .and_then(|at| slice(data, at, 64))
                else {
                    break;
                };
                let (Some(name), Some(kind), Some(addr), Some(offset), Some(size), Some(link)) = (
                    u32_at(e, 0),
                    u32_at(e, 4),
                    u64_at(e, 16),
                    u64_at(e, 24),
                    u64_at(e, 32),
                    u32_at(e, 40),
                ) else {
                    break;
                };
                raw.push((name, kind, addr, offset, size, link));
            }
        }
        let shstr = raw.get(shstrndx as usize).map(|s| s.3);
        let sections: Vec<Section> = raw
            .iter()
            .map(|&(name, kind, addr, offset, size, _)| Section {
                name: shstr
                    .and_then(|base| base.checked_add(u64::from(name)))
                    .and_then(|o| cstr_at(data, o, 256))
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
                kind,
                addr,
                offset,
                size,
            })
            .collect();

        let symtab = raw.iter().find(|s| s.1 == SHT_SYMTAB).and_then(|s| {
            let strtab = raw.get(s.5 as usize)?;
            Some((
                Table {
                    offset: s.3,
                    count: s.4 / 24,
                },
                Table {
                    offset: strtab.3,
                    count: strtab.4,
                },
            ))
        });
        let mut relative: Vec<(u64, u64)> = raw
            .iter()
            .filter(|s| s.1 == SHT_RELA)
            .take(MAX_RELA_TABLES)
            .flat_map(|s| relative_relocs(data, s.3, s.4 / 24))
            .collect();
        relative.sort_by_key(|r| r.0);

        Ok(Elf {
            machine,
            e_type,
            sections,
            loads,
            symtab,
            relative,
        })
    }

    pub fn is_amd64(&self) -> bool {
        self.machine == EM_X86_64
    }

    pub fn arch_name(&self) -> String {
        match self.machine {
            EM_X86_64 => "amd64".into(),
            183 => "arm64".into(),
            3 => "386".into(),
            40 => "arm".into(),
            243 => "riscv64".into(),
            21 => "ppc64".into(),
            22 => "s390x".into(),
            8 => "mips".into(),
            258 => "loong64".into(),
            m => format!("ELF machine {m}"),
        }
    }

    pub fn is_dyn(&self) -> bool {
        self.e_type == ET_DYN
    }

    pub fn has_symtab(&self) -> bool {
        self.symtab.is_some_and(|(t, _)| t.count > 0)
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    pub fn section_bytes<'d>(&self, data: &'d [u8], s: &Section) -> Option<&'d [u8]> {
        if s.kind == SHT_NOBITS {
            return None;
        }
        slice(data, s.offset, s.size)
    }

    /// The PT_LOAD whose file-backed bytes hold `vaddr`.
    pub fn load_for(&self, vaddr: u64) -> Option<&Segment> {
        self.loads
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
    }

    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        let s = self.load_for(vaddr)?;
        (vaddr - s.vaddr).checked_add(s.offset)
    }

    /// Link address of a file offset inside a loadable segment.
    pub fn offset_to_vaddr(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|s| off >= s.offset && off - s.offset < s.filesz)
            .and_then(|s| s.vaddr.checked_add(off - s.offset))
    }

    pub fn read_vaddr<'d>(&self, data: &'d [u8], vaddr: u64, len: u64) -> Option<&'d [u8]> {
        let s = self.load_for(vaddr)?;
        // The read must stay inside the segment's file image too.
        if len > s.filesz - (vaddr - s.vaddr) {
            return None;
        }
        slice(data, self.vaddr_to_offset(vaddr)?, len)
    }

    pub fn exec_segment(&self) -> Option<&Segment> {
        self.loads.iter().find(|s| s.flags & PF_X != 0)
    }

    /// A pointer-sized value stored at `vaddr`. Go's internal linker writes
    /// the link-time value into the file even in PIE, but external linkers
    /// leave 0 there and keep the value only in a RELATIVE relocation's addend.
    pub fn read_ptr(&self, data: &[u8], vaddr: u64) -> Option<u64> {
        let v = u64::from_le_bytes(self.read_vaddr(data, vaddr, 8)?.try_into().ok()?);
        if v != 0 || !self.is_dyn() {
            return Some(v);
        }
        Some(self.relative_addend(vaddr).unwrap_or(0))
    }

    fn relative_addend(&self, vaddr: u64) -> Option<u64> {
        let i = self.relative.partition_point(|r| r.0 < vaddr);
        self.relative.get(i).filter(|r| r.0 == vaddr).map(|r| r.1)
    }

    /// Link addresses whose RELATIVE relocation resolves to `target`: how a
    /// pointer to `target` is found in a PIE whose file holds zeros there.
    pub fn relative_sites(&self, target: u64) -> Vec<u64> {
        self.relative
            .iter()
            .filter(|r| r.1 == target)
            .map(|r| r.0)
            .collect()
    }

    /// Calls `f(name, symbol)` for every symbol until it returns false (or
    /// the names read exceed the file's `ScanBudget`: only a crafted table).
    pub fn for_each_symbol(&self, data: &[u8], mut f: impl FnMut(&[u8], Symbol) -> bool) {
        let Some((syms, strs)) = self.symtab else {
            return;
        };
        let mut budget = ScanBudget::new(data);
        for i in 0..syms.count {
            let Some(e) = syms
                .offset
                .checked_add(i * 24)
                .and_then(|at| slice(data, at, 24))
            else {
                return;
            };
            let (Some(name), Some(info), Some(value)) = (u32_at(e, 0), u8_at(e, 4), u64_at(e, 8))
            else {
                return;
            };
            if u64::from(name) >= strs.count {
                continue;
            }
            let Some(at) = strs.offset.checked_add(u64::from(name)) else {
                continue;
            };
            let Some(name) = budget.cstr_at(data, at, 4096) else {
                return;
            };
            let Some(name) = name else {
                continue;
            };
            if !f(name, Symbol { value, info }) {
                return;
            }
        }
    }

    pub fn symbol(&self, data: &[u8], name: &str) -> Option<Symbol> {
        let mut found = None;
        self.for_each_symbol(data, |n, s| {
            if n == name.as_bytes() {
                found = Some(s);
                false
            } else {
                true
            }
        });
        found
    }
}

/// (offset, addend) of every R_X86_64_RELATIVE entry of the RELA table of
/// `count` entries at file offset `offset`; a table cut short by a damaged
/// file simply ends early.
fn relative_relocs(data: &[u8], offset: u64, count: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    (0..count)
        .map_while(move |i| {
            let e = offset
                .checked_add(i * 24)
                .and_then(|at| slice(data, at, 24))?;
            Some((u64_at(e, 0)?, u64_at(e, 8)?, u64_at(e, 16)?))
        })
        .filter(|&(_, info, _)| info & 0xffff_ffff == R_X86_64_RELATIVE)
        .map(|(off, _, addend)| (off, addend))
}
