#!/usr/bin/env python3
"""Tiny synthetic Go executables (a few KiB) for the `gobin` fuzz target.

Real Go binaries are 1.5-2 MB, which libFuzzer mutates slowly. These files
hold just what `kubectl_mapguard::gobin` reads, laid out as Go's linker lays
it out (amd64, Go 1.20+ pclntab), so GoBinary::from_bytes accepts them and
every accessor has something to chew on:

  - .go.buildinfo with an inline version string and module info,
  - .gopclntab: pcHeader, function names, cutab, filetab, pc tables, functab
    and _func records (one with an inline tree),
  - .text with Go-style prologues (stack-bound check, jbe morestack),
  - runtime.firstmoduledata pointing back at the pclntab, with types,
    rodata and gofunc words,
  - abi.Type descriptors for map[string]int, .typelink,
  - .symtab/.strtab, and DWARF (.debug_info compressed with zlib) holding
    runtime.g.goid and runtime.g.m,
  - a PIE variant whose pointers live only in R_X86_64_RELATIVE addends.

Plus garbled variants (truncated, wrong class/endianness/arch, header tables
pointing past the end, old Go version).

Usage: tiny_go_elf.py OUTDIR    (writes gobin-*.elf files; standard library only)
"""

import os
import struct
import sys
import zlib

BASE = 0x400000
EM_X86_64 = 62
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA = 1, 2, 3, 4
SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHF_COMPRESSED = 2, 4, 1, 0x800
R_X86_64_RELATIVE = 8


def uvarint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(v):
    return (v << 1) ^ (v >> 31) if v >= 0 else ((-v) << 1) - 1


def pctable(pairs):
    """(value delta, pc delta) pairs, then the terminating 0."""
    out = bytearray()
    for dv, dpc in pairs:
        out += uvarint(zigzag(dv)) + uvarint(dpc)
    out.append(0)
    return bytes(out)


class Image:
    """A flat file mapped 1:1 at BASE; blobs are placed at aligned offsets."""

    def __init__(self):
        self.buf = bytearray(0x200)  # room for the ELF header and phdrs
        self.sections = []  # (name, type, flags, offset, size, link, entsize)

    def place(self, blob, align=8):
        while len(self.buf) % align:
            self.buf.append(0)
        off = len(self.buf)
        self.buf += blob
        return off

    def section(self, name, kind, flags, off, size, link=0, entsize=0):
        self.sections.append((name, kind, flags, off, size, link, entsize))
        return len(self.sections)  # index, counting the null section

    def put64(self, off, v):
        struct.pack_into("<Q", self.buf, off, v)


def go_prologue_func(body_nops=4):
    # cmp rsp,[r14+0x10]; jbe morestack; push rbp; mov rbp,rsp; nop*n;
    # pop rbp; ret; morestack: call rel32 0; jmp entry; int3 padding.
    code = bytearray(b"\x49\x3b\x66\x10\x76\x00\x55\x48\x89\xe5")
    code += b"\x90" * body_nops + b"\x5d\xc3"
    morestack = len(code)
    code[5] = morestack - 6
    code += b"\xe8\x00\x00\x00\x00"
    code += b"\xeb" + bytes([(0 - (len(code) + 2)) & 0xFF])
    return bytes(code)


def nosplit_func():
    # mov rax,[rsp+8]; ret
    return b"\x48\x8b\x44\x24\x08\xc3"


FUNC_SIZE = 32

# name, code, file index, has an inline tree
FUNCS = [
    ("main.main", go_prologue_func(), 0, True),
    ("runtime.fatal", go_prologue_func(2), 1, False),
    ("runtime.mapassign_faststr", go_prologue_func(), 1, False),
    ("runtime.mapclear", nosplit_func(), 1, False),
    ("runtime.mapdelete", go_prologue_func(6), 1, False),
    ("runtime.mapdelete_fast64", go_prologue_func(), 1, False),
]
FILES = [b"/src/main.go", b"/go/src/runtime/map.go"]


def build(version=b"go1.22.10", modinfo=b"", symtab=True, dwarf=True,
          compress_dwarf=True, pie=False, machine=EM_X86_64):
    img = Image()
    relas = []  # (vaddr of the pointer, target) for PIE

    def ptr(off, value):
        """A pointer at file offset `off`: in the file, or only in a RELA."""
        if pie:
            img.put64(off, 0)
            relas.append((BASE + off, value))
        else:
            img.put64(off, value)

    # .text
    text = bytearray()
    for _, code, _, _ in FUNCS:
        assert len(code) <= FUNC_SIZE
        text += code + b"\xcc" * (FUNC_SIZE - len(code))
    text_off = img.place(bytes(text), 32)
    text_va = BASE + text_off
    text_idx = img.section(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR,
                           text_off, len(text))

    # .rodata: type names, type descriptors, then go:func.* (inline trees).
    rodata = bytearray(0x180)

    def name_at(at, s):
        b = bytes([0]) + uvarint(len(s)) + s
        rodata[at:at + len(b)] = b

    name_at(0x08, b"*map[string]int")
    name_at(0x20, b"*string")
    name_at(0x30, b"*int")

    def abi_type(at, size, kind, str_off, tflag=2):
        struct.pack_into("<QQIBBBB", rodata, at, size, 0, 0x1234, tflag, 8, 8, kind)
        struct.pack_into("<i", rodata, at + 40, str_off)

    STRING_T, INT_T, MAP_T = 0x40, 0x70, 0xA0
    abi_type(STRING_T, 16, 24, 0x20)
    abi_type(INT_T, 8, 2, 0x30)
    abi_type(MAP_T, 8, 0x35, 0x08)  # kind 21 (map) with flag bits above 0x1f
    GOFUNC = 0x120
    # inlinedCall{funcID, pad, nameOff, parentPc, startLine}; name filled below
    rodata_off = img.place(bytes(rodata), 32)
    rodata_va = BASE + rodata_off
    # map type: key and elem pointers (relocated in PIE)
    ptr(rodata_off + MAP_T + 48, rodata_va + STRING_T)
    ptr(rodata_off + MAP_T + 56, rodata_va + INT_T)
    rodata_idx = img.section(".rodata", SHT_PROGBITS, SHF_ALLOC, rodata_off, len(rodata))
    typelink = struct.pack("<iii", STRING_T, MAP_T, INT_T)
    tl_off = img.place(typelink, 4)
    img.section(".typelink", SHT_PROGBITS, SHF_ALLOC, tl_off, len(typelink))

    # .gopclntab
    names = bytearray()
    name_off = {}
    for n in [f[0].encode() for f in FUNCS] + [b"main.helper"]:
        name_off[n] = len(names)
        names += n + b"\0"
    filetab = bytearray()
    cutab = bytearray()
    for f in FILES:
        cutab += struct.pack("<I", len(filetab))
        filetab += f + b"\0"
    pctab = bytearray(b"\0")  # offset 0 means "no table"

    def table(t):
        off = len(pctab)
        pctab.extend(t)
        return off

    sp_t = table(pctable([(1, 6), (8, 20), (-8, 6)]))
    file_t = [table(pctable([(i + 1, FUNC_SIZE)])) for i in range(len(FILES))]
    line_t = table(pctable([(11, 16), (2, 16)]))  # line 10, then 12
    inl_t = table(pctable([(0, 8), (1, 24)]))  # not inlined, then inline index 0

    functab = bytearray()
    funcs = bytearray()
    nfunc = len(FUNCS)
    fixed = (nfunc + 1) * 8
    for i, (name, _, fileno, inl) in enumerate(FUNCS):
        funcoff = fixed + len(funcs)
        functab += struct.pack("<II", i * FUNC_SIZE, funcoff)
        npcdata, nfuncdata = (3, 4) if inl else (0, 0)
        funcs += struct.pack("<IiiIIIIIIiBBBB", i * FUNC_SIZE, name_off[name.encode()],
                             0, 0, sp_t, file_t[fileno], line_t, npcdata, 0,
                             10 * (i + 1), 0, 0, 0, nfuncdata)
        if inl:
            funcs += struct.pack("<III", 0, 0, inl_t)
            funcs += struct.pack("<IIII", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
        while len(funcs) % 8:
            funcs.append(0)
    functab += struct.pack("<II", nfunc * FUNC_SIZE, 0)
    functab += funcs

    hdr_len = 72
    parts = [names, cutab, filetab, pctab]
    offs = []
    cur = hdr_len
    for p in parts:
        offs.append(cur)
        cur += len(p)
        cur = (cur + 7) & ~7
    functab_at = cur
    pcln = bytearray(functab_at + len(functab))
    struct.pack_into("<IBBBBQQQQQQQQ", pcln, 0, 0xFFFFFFF1, 0, 0, 1, 8,
                     nfunc, len(FILES), 0 if pie else text_va,
                     offs[0], offs[1], offs[2], offs[3], functab_at)
    for o, p in zip(offs, parts):
        pcln[o:o + len(p)] = p
    pcln[functab_at:] = functab
    pcln_off = img.place(bytes(pcln), 32)
    pcln_va = BASE + pcln_off
    if pie:
        ptr(pcln_off + 24, text_va)
    img.section(".gopclntab", SHT_PROGBITS, SHF_ALLOC, pcln_off, len(pcln))

    # the inline tree entry in go:func.*
    struct.pack_into("<BxxxiiI", img.buf, rodata_off + GOFUNC, 0,
                     name_off[b"main.helper"], 4, 7)

    # .go.buildinfo (16-byte aligned, as the scanner requires)
    bi = bytearray(b"\xff Go buildinf:" + bytes([8, 2]))
    bi += bytes(32 - len(bi))
    bi += uvarint(len(version)) + version + uvarint(len(modinfo)) + modinfo
    bi_off = img.place(bytes(bi), 32)
    data_start = bi_off
    img.section(".go.buildinfo", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, bi_off, len(bi))

    # runtime.firstmoduledata in .noptrdata
    md = bytearray(8 * 48)
    md_off = img.place(bytes(md), 32)
    ptr(md_off + 0, pcln_va)
    ptr(md_off + 8, pcln_va + offs[0])
    ptr(md_off + 8 * 37, rodata_va)  # types
    ptr(md_off + 8 * 38, rodata_va + GOFUNC)  # etypes
    ptr(md_off + 8 * 39, rodata_va)  # rodata
    ptr(md_off + 8 * 40, rodata_va + GOFUNC)  # gofunc
    img.section(".noptrdata", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, md_off, len(md))
    data_end = len(img.buf)

    if pie:
        rela = b"".join(struct.pack("<QQq", at, R_X86_64_RELATIVE, to) for at, to in relas)
        r_off = img.place(rela, 8)
        img.section(".rela.dyn", SHT_RELA, SHF_ALLOC, r_off, len(rela), entsize=24)

    if dwarf:
        abbrev = bytes([
            1, 0x11, 1, 0x03, 0x08, 0, 0,             # compile_unit, children, name string
            2, 0x13, 1, 0x03, 0x08, 0, 0,             # structure_type, children, name
            3, 0x0D, 0, 0x03, 0x08, 0x38, 0x0F, 0, 0,  # member, name, data_member_location udata
            0])
        dies = (bytes([1]) + b"runtime\0" + bytes([2]) + b"runtime.g\0"
                + bytes([3]) + b"stack\0" + uvarint(0)
                + bytes([3]) + b"m\0" + uvarint(48)
                + bytes([3]) + b"goid\0" + uvarint(152)
                + bytes([0, 0]))
        body = struct.pack("<HIB", 4, 0, 8) + dies
        info = struct.pack("<I", len(body)) + body
        for name, blob in [(".debug_abbrev", abbrev), (".debug_info", info)]:
            flags = 0
            if compress_dwarf and name == ".debug_info":
                blob = struct.pack("<IIQQ", 1, 0, len(blob), 1) + zlib.compress(blob)
                flags = SHF_COMPRESSED
            off = img.place(blob, 1)
            img.section(name, SHT_PROGBITS, flags, off, len(blob))

    if symtab:
        strtab = bytearray(b"\0")
        syms = bytearray(24)

        def sym(name, value, info, shndx):
            nonlocal strtab
            syms.extend(struct.pack("<IBBHQQ", len(strtab), info, 0, shndx, value, 0))
            strtab += name + b"\0"

        for i, (name, _, _, _) in enumerate(FUNCS):
            sym(name.encode(), text_va + i * FUNC_SIZE, 0x12, text_idx)
        sym(b"runtime.text", text_va, 0x11, text_idx)
        sym(b"runtime.types", rodata_va, 0x11, rodata_idx)
        sym(b"go:func.*", rodata_va + GOFUNC, 0x11, rodata_idx)
        sym(b"runtime.firstmoduledata", BASE + md_off, 0x11, 0)
        st_off = img.place(bytes(strtab), 1)
        sy_off = img.place(bytes(syms), 8)
        n = len(img.sections)
        img.section(".symtab", SHT_SYMTAB, 0, sy_off, len(syms), link=n + 2, entsize=24)
        img.section(".strtab", SHT_STRTAB, 0, st_off, len(strtab))

    # .shstrtab and the section headers
    shstr = bytearray(b"\0")
    name_idx = []
    for s in img.sections:
        name_idx.append(len(shstr))
        shstr += s[0].encode() + b"\0"
    name_idx.append(len(shstr))
    shstr += b".shstrtab\0"
    shs_off = img.place(bytes(shstr), 1)
    img.sections.append((".shstrtab", SHT_STRTAB, 0, shs_off, len(shstr), 0, 0))
    sh = bytearray(64)
    for (name, kind, flags, off, size, link, entsize), ni in zip(img.sections, name_idx):
        addr = BASE + off if flags & SHF_ALLOC else 0
        sh += struct.pack("<IIQQQQIIQQ", ni, kind, flags, addr, off, size, link, 0, 1, entsize)
    shoff = img.place(bytes(sh), 8)
    shnum = len(img.sections) + 1

    # program headers: R+X over the whole image, RW over the data
    phdrs = [(1, 5, 0, BASE, len(img.buf)),
             (1, 6, data_start, BASE + data_start, data_end - data_start)]
    for i, (kind, flags, off, va, size) in enumerate(phdrs):
        struct.pack_into("<IIQQQQQQ", img.buf, 64 + 56 * i, kind, flags, off, va, va,
                         size, size, 0x1000)

    e_type = 3 if pie else 2
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    struct.pack_into("<16sHHIQQQIHHHHHH", img.buf, 0, ident, e_type, machine, 1,
                     text_va, 64, shoff, 0, 64, 56, len(phdrs), 64, shnum, shnum - 1)
    return bytes(img.buf)


def sections(elf):
    """{name: (header offset, addr, offset, size)} of an ELF built above."""
    shoff, = struct.unpack_from("<Q", elf, 40)
    shnum, shstrndx = struct.unpack_from("<HH", elf, 60)
    names = struct.unpack_from("<Q", elf, shoff + 64 * shstrndx + 24)[0]
    out = {}
    for i in range(shnum):
        at = shoff + 64 * i
        name, _, _, addr, off, size = struct.unpack_from("<IIQQQQ", elf, at)
        end = elf.index(b"\0", names + name)
        out[elf[names + name:end].decode()] = (at, addr, off, size)
    return out


# Crafted files that used to make GoBinary::from_bytes quadratic (a fuzzer
# timeout): every lookup walked every segment or every relocation table.

def many_loads(size):
    """As many writable PT_LOADs as fit, each covering the whole file: each
    was scanned whole for the buildinfo magic and the moduledata."""
    n = min((size - 64) // 56, 0xFFFF)
    b = bytearray(size)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    struct.pack_into("<16sHHIQQQIHHHHHH", b, 0, ident, 2, EM_X86_64, 1, 0, 64, 0, 0,
                     64, 56, n, 64, 0, 0)
    for i in range(n):
        struct.pack_into("<IIQQQQQQ", b, 64 + 56 * i, 1, 6, 0, BASE, BASE, size, size, 0x1000)
    return bytes(b)


def many_rela_tables(pie, tables, region):
    """A PIE with `tables` RELA sections over one region of `region` bytes:
    every pointer read that needed a relocation walked all of them."""
    b = bytearray(pie)
    shoff, = struct.unpack_from("<Q", b, 40)
    shnum, = struct.unpack_from("<H", b, 60)
    headers = bytes(b[shoff:shoff + 64 * shnum])
    rel = len(b)
    b += bytes(region)
    new_shoff = len(b)
    b += headers
    for _ in range(tables):
        b += struct.pack("<IIQQQQIIQQ", 0, SHT_RELA, 0, 0, rel, region, 0, 0, 8, 24)
    struct.pack_into("<Q", b, 40, new_shoff)
    struct.pack_into("<H", b, 60, shnum + tables)
    return bytes(b)


def many_moduledata_lookalikes(pie, region):
    """A PIE whose writable segment is full of the pcHeader address with a
    zero after it, and whose RELA table has `region` bytes of entries: each
    lookalike looked its second word up in every relocation."""
    b = bytearray(pie)
    secs = sections(bytes(b))
    header_va = secs[".gopclntab"][1]
    rela_at = secs[".rela.dyn"][0]
    # the real relocations first, then zero entries up to `region` bytes
    _, _, r_off, r_size = secs[".rela.dyn"]
    rel = len(b)
    b += b[r_off:r_off + r_size] + bytes(region)
    struct.pack_into("<QQ", b, rela_at + 24, rel, r_size + region)
    w = len(b)
    b += struct.pack("<QQ", header_va, 0) * (region // 16)
    # the R+X segment covers everything, the RW one the lookalikes
    struct.pack_into("<IIQQQQQQ", b, 64, 1, 5, 0, BASE, BASE, len(b), len(b), 0x1000)
    struct.pack_into("<IIQQQQQQ", b, 64 + 56, 1, 6, w, BASE + w, BASE + w, region, region,
                     0x1000)
    return bytes(b)


def unterminated_func_names(stripped, nfunc, run):
    """A pclntab of `nfunc` functions whose names all start in the same run
    of `run` bytes without a NUL: each lookup read up to 64 KiB."""
    b = bytearray(stripped)
    sh_at, _, hdr, _ = sections(bytes(b))[".gopclntab"]
    while len(b) % 8:
        b.append(0)
    functab = len(b)
    funcoff = (nfunc + 1) * 8
    for i in range(nfunc + 1):
        b += struct.pack("<II", i * FUNC_SIZE, funcoff)
    names = len(b) + 48
    b += struct.pack("<IiiIIIIIIiBBBB", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) + bytes(4)
    b += b"A" * run
    struct.pack_into("<Q", b, hdr + 8, nfunc)
    struct.pack_into("<Q", b, hdr + 32, names - hdr)
    struct.pack_into("<Q", b, hdr + 64, functab - hdr)
    struct.pack_into("<Q", b, sh_at + 32, len(b) - hdr)
    struct.pack_into("<QQ", b, 64 + 32, len(b), len(b))  # R+X segment: all
    return bytes(b)


def unterminated_symbol_names(full, nsym, run):
    """A symtab of `nsym` symbols whose names all start in the same run of
    `run` bytes without a NUL: each lookup read up to 4 KiB."""
    b = bytearray(full)
    secs = sections(bytes(b))
    strtab = len(b)
    b += b"A" * run
    while len(b) % 8:
        b.append(0)
    symtab = len(b)
    b += struct.pack("<IBBHQQ", 0, 0x12, 0, 1, 0, 0) * nsym
    struct.pack_into("<QQ", b, secs[".strtab"][0] + 24, strtab, run)
    struct.pack_into("<QQ", b, secs[".symtab"][0] + 24, symtab, nsym * 24)
    return bytes(b)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    modinfo = (b"path\tmain\nmod\tmain\t(devel)\t\n"
               b"build\t-buildmode=exe\nbuild\tGOEXPERIMENT=noswissmap\nbuild\tGOOS=linux\n")
    full = build()
    seeds = {
        # accepted by GoBinary::from_bytes
        "gobin-tiny-go122-full.elf": full,
        "gobin-tiny-go122-plain-dwarf.elf": build(compress_dwarf=False),
        "gobin-tiny-go125-stripped.elf": build(b"go1.25.5", symtab=False, dwarf=False),
        "gobin-tiny-go124-noswiss-pie.elf": build(b"go1.24.11 X:noswissmap", modinfo,
                                                  symtab=False, dwarf=False, pie=True),
        "gobin-tiny-devel.elf": build(b"devel +abcdef", symtab=False, dwarf=False),
        # refused, each for its own reason
        "gobin-tiny-go117.elf": build(b"go1.17.13"),
        "gobin-tiny-arm64.elf": build(machine=183),
        "gobin-empty": b"",
        "gobin-magic-only": b"\x7fELF",
        "gobin-truncated-ident": full[:6],
        "gobin-truncated-header": full[:40],
        "gobin-header-and-phdrs": full[:0x100],
        "gobin-truncated-half": full[: len(full) // 2],
        "gobin-elf32": b"\x7fELF\x01\x01\x01" + full[7:64],
        "gobin-big-endian": b"\x7fELF\x02\x02\x01" + full[7:],
    }
    # section headers and program headers pointing past the end or wrapping
    bad = bytearray(full)
    struct.pack_into("<QQ", bad, 32, 0xFFFFFFFFFFFFFFF0, len(full) - 8)
    seeds["gobin-tables-past-end"] = bytes(bad)
    # extended numbering: section 0 claims 2^32-1 sections and shstrndx 5
    bad = bytearray(full[:64]) + struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0xFFFFFFFF, 5, 0, 0, 0)
    struct.pack_into("<QQ", bad, 32, 64, 64)
    struct.pack_into("<HHHHH", bad, 54, 56, 0xFFFF, 64, 0, 0xFFFF)
    seeds["gobin-extended-numbering"] = bytes(bad)
    pie = seeds["gobin-tiny-go124-noswiss-pie.elf"]
    seeds["gobin-slow-many-loads"] = many_loads(320 << 10)
    seeds["gobin-slow-many-rela-tables"] = many_rela_tables(pie, 3000, 48 << 10)
    seeds["gobin-slow-moduledata-lookalikes"] = many_moduledata_lookalikes(pie, 160 << 10)
    seeds["gobin-slow-unterminated-func-names"] = unterminated_func_names(
        seeds["gobin-tiny-go125-stripped.elf"], 8000, 64 << 10)
    seeds["gobin-slow-unterminated-symbol-names"] = unterminated_symbol_names(full, 24000, 8 << 10)
    for name, blob in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
