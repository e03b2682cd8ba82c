//! `--max-overhead`: a process's windows opened and shut by writing its
//! probed instructions' first byte, not by attaching and detaching links.
//!
//! The uprobes stay registered for the whole run; the kernel put an `int3`
//! at each probe point when they were. Shutting a window writes the
//! instruction's own byte back through /proc/PID/mem, and opening it writes
//! `int3` again: a few microseconds a point, where a uprobe_multi attach
//! took 5-18 ms here and a detach 20-60 ms (an RCU grace period each), during
//! which every hit was paid for and the agent was blocked.
//!
//! Why this is safe:
//! - Only one-byte instructions are switched (`push rbp`, `ret`): a thread
//!   running the code sees either the whole old instruction or the whole
//!   new one, never a torn mix.
//! - `int3` is only ever written while the uprobe it belongs to is
//!   registered: a `Breakpoints` lives beside the link it was read from and
//!   is dropped with it. An `int3` with no uprobe behind it would be a
//!   SIGTRAP in the target.
//! - When the link goes, the kernel restores the original byte where it finds
//!   `int3` and leaves alone a point where it finds the original already.
//! - The file is bound to the process's address space as it was when
//!   opened: after an exec or an exit every write fails, and never lands in
//!   another program.

use crate::gobin::ProbePoint;
use anyhow::{Context, Result};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const INT3: u8 = 0xcc;

/// The probe points of one process whose byte can be switched.
pub struct Breakpoints {
    mem: File,
    /// (address in the process, the instruction's own byte)
    sites: Vec<(u64, u8)>,
    on: bool,
}

/// Why a process's points cannot be switched by writing its text.
pub enum Unswitchable {
    /// Its binary is not mapped yet (a command held before its exec).
    NotYet,
    /// Never: windows must come from links.
    Never(anyhow::Error),
}

impl Breakpoints {
    /// Finds `points` of `path` in `pid`'s address space, with `int3` at each
    /// (the registered uprobes' work), and opens its memory for writing.
    pub fn find(
        pid: u32,
        path: &Path,
        points: &[&ProbePoint],
    ) -> Result<Breakpoints, Unswitchable> {
        let never = |e: anyhow::Error| Unswitchable::Never(e);
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(never)?;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .with_context(|| format!("reading /proc/{pid}/maps"))
            .map_err(never)?;
        let text = text_mappings(&maps, meta.ino());
        if text.is_empty() {
            return Err(Unswitchable::NotYet);
        }
        let file = File::open(path)
            .with_context(|| format!("opening {}", path.display()))
            .map_err(never)?;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .with_context(|| format!("opening /proc/{pid}/mem for writing"))
            .map_err(never)?;
        let mut sites = Vec::with_capacity(points.len());
        for p in points {
            let addr = text
                .iter()
                .find_map(|m| m.address_of(p.file_offset))
                .ok_or(Unswitchable::NotYet)?;
            let mut insn = [0u8; 16];
            let n = file
                .read_at(&mut insn, p.file_offset)
                .with_context(|| format!("reading {} at {:#x}", path.display(), p.file_offset))
                .map_err(never)?;
            if one_byte_instruction(&insn[..n]).is_none() {
                return Err(never(anyhow::anyhow!(
                    "the probe in {} is not on a one-byte instruction",
                    p.func
                )));
            }
            let mut now = [0u8];
            mem.read_exact_at(&mut now, addr)
                .with_context(|| format!("reading pid {pid} at {addr:#x}"))
                .map_err(never)?;
            if now[0] != INT3 {
                return Err(never(anyhow::anyhow!(
                    "no breakpoint where the probe in {} should be (found {:#04x})",
                    p.func,
                    now[0]
                )));
            }
            sites.push((addr, insn[0]));
        }
        Ok(Breakpoints {
            mem,
            sites,
            on: true,
        })
    }

    /// Turns every point on (`int3`) or off (the instruction's own byte).
    pub fn set(&mut self, on: bool) -> Result<()> {
        if self.on == on {
            return Ok(());
        }
        for &(addr, orig) in &self.sites {
            let byte = if on { INT3 } else { orig };
            self.mem
                .write_all_at(&[byte], addr)
                .with_context(|| format!("writing the probe byte at {addr:#x}"))?;
        }
        self.on = on;
        Ok(())
    }
}

/// Whether this agent may write another program's text through
/// /proc/PID/mem: checked on its own text, writing back the byte already
/// there. Kernels built to refuse forced writes (PROC_MEM_NO_FORCE, or
/// FORCE_PTRACE for a non-tracer) say no here, once, not mid-run.
pub fn writable_text() -> Result<()> {
    let addr = writable_text as *const () as u64;
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .context("opening /proc/self/mem")?;
    let mut b = [0u8];
    mem.read_exact_at(&mut b, addr)
        .context("reading own text")?;
    mem.write_all_at(&b, addr)
        .context("writing own text through /proc/self/mem")?;
    Ok(())
}

/// An executable mapping of the binary.
struct TextMapping {
    start: u64,
    end: u64,
    offset: u64,
}

impl TextMapping {
    fn address_of(&self, file_offset: u64) -> Option<u64> {
        let at = file_offset.checked_sub(self.offset)?;
        (at < self.end - self.start).then_some(self.start + at)
    }
}

/// The executable mappings of the file with inode `ino` in a maps listing.
fn text_mappings(maps: &str, ino: u64) -> Vec<TextMapping> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms, off, _dev, inode) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            if !perms.contains('x') || inode.parse::<u64>().ok()? != ino {
                return None;
            }
            let (lo, hi) = range.split_once('-')?;
            Some(TextMapping {
                start: u64::from_str_radix(lo, 16).ok()?,
                end: u64::from_str_radix(hi, 16).ok()?,
                offset: u64::from_str_radix(off, 16).ok()?,
            })
        })
        .collect()
}

/// The instruction's byte when `code` starts with a one-byte instruction.
fn one_byte_instruction(code: &[u8]) -> Option<u8> {
    let mut d = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE);
    let insn = d.decode();
    (!insn.is_invalid() && insn.len() == 1).then(|| code[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_byte_instructions_are_switched() {
        assert_eq!(one_byte_instruction(&[0x55, 0x48, 0x89, 0xe5]), Some(0x55)); // push rbp
        assert_eq!(one_byte_instruction(&[0xc3]), Some(0xc3)); // ret
        assert_eq!(one_byte_instruction(&[0x48, 0x83, 0xec, 0x18]), None); // sub rsp, 0x18
        assert_eq!(one_byte_instruction(&[0xf3, 0x0f, 0x1e, 0xfa]), None); // endbr64
        assert_eq!(one_byte_instruction(&[]), None);
    }

    #[test]
    fn addresses_come_from_the_binarys_executable_mappings() {
        let maps = "\
00400000-00401000 r--p 00000000 fd:01 77 /srv/app
00401000-00500000 r-xp 00001000 fd:01 77 /srv/app
00500000-00600000 r--p 00100000 fd:01 77 /srv/app
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /lib/other.so
";
        let text = text_mappings(maps, 77);
        assert_eq!(text.len(), 1);
        assert_eq!(text[0].address_of(0x9886), Some(0x409886));
        assert_eq!(text[0].address_of(0x800), None, "before the text");
        assert_eq!(text[0].address_of(0x100000), None, "past the text");
        assert!(text_mappings(maps, 5).is_empty());
    }
}
