//! Where to put a uprobe in a Go function: right after the stack-bound
//! check. A probe on the first instruction (`cmp rsp,[r14+0x10]`) is
//! single-stepped by the kernel (~30× slower than the emulated `push rbp`
//! that follows the check) and fires again whenever the function re-runs
//! after `morestack`, double-counting the call.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

/// The stack check sits in the first handful of instructions; looking
/// further would only risk matching an unrelated compare.
const MAX_INSNS: usize = 10;
/// Longest prologue we decode: 10 instructions of at most 15 bytes.
pub(crate) const WINDOW: usize = 150;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub addr: u64,
    pub after_stack_check: bool,
}

/// `code` holds the function's first bytes, starting at link address `entry`;
/// `end` bounds the function (the morestack path the check jumps to is inside).
pub(crate) fn probe_site(code: &[u8], entry: u64, end: u64) -> Probe {
    let at_entry = Probe {
        addr: entry,
        after_stack_check: false,
    };
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut saw_guard_cmp = false;
    for i in 0..MAX_INSNS {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            break;
        }
        if i == 0 && insn.mnemonic() == Mnemonic::Endbr64 {
            continue;
        }
        if is_stack_guard_cmp(&insn) {
            saw_guard_cmp = true;
            continue;
        }
        if is_jcc(insn.mnemonic()) {
            if saw_guard_cmp {
                let target = insn.near_branch_target();
                if insn.mnemonic() == Mnemonic::Jbe && target > entry && target < end {
                    return Probe {
                        addr: insn.next_ip(),
                        after_stack_check: true,
                    };
                }
                return at_entry;
            }
            // The huge-frame form (`mov r12,rsp; sub r12,N; jb morestack;
            // cmp r12,[r14+0x10]; jbe morestack`) has a jb before the compare.
            continue;
        }
        if leaves_straight_line(&insn) {
            // A call, jump or return before any check: a NOSPLIT function.
            return at_entry;
        }
    }
    at_entry
}

// Spelled out: iced's flow-control queries need its `instr_info` feature.
fn is_jcc(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Ja | Jae | Jb | Jbe | Je | Jg | Jge | Jl | Jle | Jne | Jno | Jnp | Jns | Jo | Jp | Js
    )
}

fn leaves_straight_line(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Jmp
            | Mnemonic::Call
            | Mnemonic::Ret
            | Mnemonic::Retf
            | Mnemonic::Int
            | Mnemonic::Int3
            | Mnemonic::Ud2
            | Mnemonic::Hlt
            | Mnemonic::Syscall
    )
}

/// `cmp reg, [r14+disp]`: comparing against g.stackguard0 (R14 holds g).
fn is_stack_guard_cmp(insn: &Instruction) -> bool {
    insn.mnemonic() == Mnemonic::Cmp
        && insn.op_count() == 2
        && insn.op_kind(0) == OpKind::Register
        && insn.op_kind(1) == OpKind::Memory
        && insn.memory_base() == Register::R14
        && insn.memory_index() == Register::None
}

/// Link addresses of every RET in `code` (a whole function starting at
/// `entry`), for probes that must see a call finish: uretprobes corrupt Go
/// stacks, a plain uprobe on each RET does not.
pub(crate) fn ret_sites(code: &[u8], entry: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            continue;
        }
        if insn.mnemonic() == Mnemonic::Ret {
            out.push(insn.ip());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_jbe_go125() {
        // cmp rsp,[r14+0x10]; jbe +0x3c; push rbp; mov rbp,rsp
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x3c, 0x55, 0x48, 0x89, 0xe5];
        let p = probe_site(&code, 0x40aea0, 0x40af20);
        assert_eq!(
            p,
            Probe {
                addr: 0x40aea6,
                after_stack_check: true
            }
        );
    }

    #[test]
    fn near_jbe_go123() {
        // cmp rsp,[r14+0x10]; jbe rel32; push rbp
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x05, 0x05, 0x00, 0x00, 0x55,
        ];
        let p = probe_site(&code, 0x462620, 0x462c00);
        assert_eq!(
            p,
            Probe {
                addr: 0x46262a,
                after_stack_check: true
            }
        );
    }

    #[test]
    fn big_frame_lea_r12() {
        // lea r12,[rsp-0x100]; cmp r12,[r14+0x10]; jbe +0x40; push rbp
        let code = [
            0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x40,
            0x55,
        ];
        let p = probe_site(&code, 0x1000, 0x1100);
        assert_eq!(
            p,
            Probe {
                addr: 0x100e,
                after_stack_check: true
            }
        );
    }

    #[test]
    fn huge_frame_sub_jb() {
        // mov r12,rsp; sub r12,0x20000; jb +0x50; cmp r12,[r14+0x10]; jbe +0x48; push rbp
        let code = [
            0x49, 0x89, 0xe4, 0x49, 0x81, 0xec, 0x00, 0x00, 0x02, 0x00, 0x72, 0x50, 0x4d, 0x3b,
            0x66, 0x10, 0x76, 0x48, 0x55,
        ];
        let p = probe_site(&code, 0x2000, 0x2100);
        assert_eq!(
            p,
            Probe {
                addr: 0x2012,
                after_stack_check: true
            }
        );
    }

    #[test]
    fn endbr64_is_skipped() {
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x49, 0x3b, 0x66, 0x10, 0x76, 0x10, 0x55,
        ];
        let p = probe_site(&code, 0x3000, 0x3100);
        assert_eq!(
            p,
            Probe {
                addr: 0x300a,
                after_stack_check: true
            }
        );
    }

    #[test]
    fn nosplit_probes_entry() {
        // push rbp; mov rbp,rsp; ... call: no stack check at all
        let code = [0x55, 0x48, 0x89, 0xe5, 0xe8, 0, 0, 0, 0, 0x5d, 0xc3];
        assert_eq!(
            probe_site(&code, 0x4000, 0x4100),
            Probe {
                addr: 0x4000,
                after_stack_check: false
            }
        );
        // mov rax,[rsp+8]; ret
        let code = [0x48, 0x8b, 0x44, 0x24, 0x08, 0xc3];
        assert_eq!(
            probe_site(&code, 0x4000, 0x4100),
            Probe {
                addr: 0x4000,
                after_stack_check: false
            }
        );
    }

    #[test]
    fn jump_target_outside_function_is_not_a_check() {
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x7f, 0x55];
        assert!(!probe_site(&code, 0x5000, 0x5010).after_stack_check);
    }

    #[test]
    fn garbage_and_truncation_fall_back_to_entry() {
        assert_eq!(probe_site(&[], 0x10, 0x20).addr, 0x10);
        assert_eq!(probe_site(&[0x49, 0x3b], 0x10, 0x20).addr, 0x10);
        assert_eq!(probe_site(&[0xff; 64], 0x10, 0x20).addr, 0x10);
        assert_eq!(
            probe_site(&[0x49, 0x3b, 0x66, 0x10, 0x76], u64::MAX - 3, u64::MAX).addr,
            u64::MAX - 3
        );
    }

    #[test]
    fn finds_rets() {
        // push rbp; ret; nop; ret
        let code = [0x55, 0xc3, 0x90, 0xc3];
        assert_eq!(ret_sites(&code, 0x100), vec![0x101, 0x103]);
    }
}
