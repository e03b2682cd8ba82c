//! The calls a function makes, read from its machine code: which functions
//! a wrapper forwards to, and whether it calls out through a pointer.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

/// Longest function body decoded; generic forwarders and reflect's map
/// wrappers are a few hundred bytes.
pub(crate) const MAX_BODY: u64 = 16 << 10;

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Calls {
    /// Targets of direct calls, in code order.
    pub direct: Vec<u64>,
    /// A call through a register or memory: a closure, an interface method.
    pub indirect: bool,
}

/// One call instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallSite {
    /// Link address of the call instruction.
    pub at: u64,
    /// Where a direct call goes; None for a call through a register or memory.
    pub target: Option<u64>,
}

/// `code` is the function's body, starting at link address `entry`.
pub(crate) fn calls(code: &[u8], entry: u64) -> Calls {
    let mut out = Calls::default();
    for site in call_sites(code, entry) {
        match site.target {
            Some(t) => out.direct.push(t),
            None => out.indirect = true,
        }
    }
    out
}

/// Every call in `code` (starting at link address `entry`), in code order.
pub(crate) fn call_sites(code: &[u8], entry: u64) -> Vec<CallSite> {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut out = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.mnemonic() != Mnemonic::Call {
            continue;
        }
        let target = match insn.op0_kind() {
            OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16 => {
                Some(insn.near_branch_target())
            }
            _ => None,
        };
        out.push(CallSite {
            at: insn.ip(),
            target,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_and_indirect_calls_are_told_apart() {
        // call +0 (to 0x1005); call rdx; ret
        let code = [0xe8, 0, 0, 0, 0, 0xff, 0xd2, 0xc3];
        let c = calls(&code, 0x1000);
        assert_eq!(c.direct, vec![0x1005]);
        assert!(c.indirect);
        // a jump is not a call
        let c = calls(&[0xe9, 0, 0, 0, 0], 0x1000);
        assert_eq!(c, Calls::default());
    }

    #[test]
    fn call_sites_say_where_each_call_is() {
        // nop; call +0 (to 0x1006); call qword [rax]
        let code = [0x90, 0xe8, 0, 0, 0, 0, 0xff, 0x10];
        assert_eq!(
            call_sites(&code, 0x1000),
            vec![
                CallSite {
                    at: 0x1001,
                    target: Some(0x1006)
                },
                CallSite {
                    at: 0x1006,
                    target: None
                },
            ]
        );
    }
}
