//! Raw ring-buffer records → protocol lines: key formatting by the key's Go
//! kind, map type names, and caller/stack symbolization through pclntab.

use super::abi;
use super::probes::{key_kind_from_raw, op_from_raw};
use super::skel::types::{ev_flag, event as RawEvent, rec};
use crate::gobin::{GoBinary, KeyKind, KeyType};
use crate::protocol::{ConcurrentWrite, Event, Fatal, Frame, Line};
use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::sync::Arc;

/// Whether `flags` (an event's) has `flag`.
fn has(flags: u8, flag: ev_flag) -> bool {
    u32::from(flags) & flag.0 != 0
}

/// abi.Kind values that matter for formatting.
mod kind {
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const INT64: u8 = 6;
    pub const UINT: u8 = 7;
    pub const UINTPTR: u8 = 12;
    pub const FLOAT32: u8 = 13;
    pub const FLOAT64: u8 = 14;
    pub const CHAN: u8 = 18;
    pub const MAP: u8 = 21;
    pub const POINTER: u8 = 22;
    pub const STRING: u8 = 24;
    pub const UNSAFE_POINTER: u8 = 26;
}

/// What decoding needs to know about one traced process.
pub struct Process {
    pub bin: Arc<GoBinary>,
    pub exe_shown: String,
    /// Runtime address minus link address; read lazily because a `-- CMD`
    /// child has not exec'd its binary yet when it is attached.
    pub bias: Option<u64>,
    types: HashMap<u64, (Option<String>, Option<KeyType>)>,
}

impl Process {
    pub fn new(bin: Arc<GoBinary>, exe_shown: String) -> Process {
        Process {
            bin,
            exe_shown,
            bias: None,
            types: HashMap::new(),
        }
    }

    /// Reads the load bias while the process lives: aggregates are named
    /// after it has gone, when /proc/PID/maps is empty.
    pub(super) fn learn_bias(&mut self, pid: u32) -> bool {
        if self.bias.is_none() {
            let (vaddr, offset) = self.bin.exec_bias_base();
            self.bias = super::discover::load_bias(pid, &self.exe_shown, vaddr, offset);
        }
        self.bias.is_some()
    }

    fn bias(&mut self, pid: u32) -> u64 {
        self.learn_bias(pid);
        self.bias.unwrap_or(0)
    }

    pub(super) fn map_type(&mut self, pid: u32, maptype: u64) -> (Option<String>, Option<KeyType>) {
        if maptype == 0 {
            return (None, None);
        }
        let bias = self.bias(pid);
        let bin = &self.bin;
        self.types
            .entry(maptype)
            .or_insert_with(|| {
                let link = maptype.wrapping_sub(bias);
                (bin.map_type_name(link), bin.map_key_info(link))
            })
            .clone()
    }

    /// The bytes of a constant at `addr` in the process, read from its binary.
    fn static_bytes(&mut self, pid: u32, addr: u64, len: u32) -> Option<Vec<u8>> {
        let bias = self.bias(pid);
        self.bin
            .static_bytes(addr.wrapping_sub(bias), u64::from(len.min(1024)))
    }

    /// The innermost function at pc, inlined or not: the one whose line it is.
    pub(super) fn symbolize(&mut self, pid: u32, pc: u64) -> Option<Frame> {
        let bias = self.bias(pid);
        self.bin.symbolize(pc.wrapping_sub(bias))
    }

    /// A return address (0: none) names the call before it: pc-1 lies in the call.
    pub(super) fn symbolize_return(&mut self, pid: u32, ret: u64) -> Option<Frame> {
        ret.checked_sub(1).and_then(|pc| self.symbolize(pid, pc))
    }

    /// The caller and `via` of an operation from the probe's return
    /// addresses: `via` is set when the probe climbed past wrapper frames.
    pub(super) fn caller_and_via(
        &mut self,
        pid: u32,
        caller: u64,
        via: u64,
    ) -> (Option<Frame>, Option<Frame>) {
        let Some(pc) = caller.checked_sub(1) else {
            return (None, None);
        };
        let bias = self.bias(pid);
        let (caller, inlined_via) = self.bin.caller_at(pc.wrapping_sub(bias));
        let via = self.symbolize_return(pid, via).or(inlined_via);
        (caller, via)
    }

    /// Every frame at pc, innermost inlined call first, as Go tracebacks list them.
    fn symbolize_inline(&mut self, pid: u32, pc: u64) -> Vec<Frame> {
        let bias = self.bias(pid);
        self.bin.symbolize_inline(pc.wrapping_sub(bias))
    }
}

/// Reads one record; short records (no stack, partial key) are zero-filled.
pub fn raw_event(data: &[u8]) -> Option<RawEvent> {
    if data.len() < offset_of!(RawEvent, key) {
        return None;
    }
    let mut whole = [0u8; size_of::<RawEvent>()];
    let n = data.len().min(whole.len());
    whole[..n].copy_from_slice(&data[..n]);
    abi::from_bytes(&whole)
}

pub struct Decoder {
    /// Unix time minus boot time, so kernel timestamps become wall-clock.
    pub boot_to_unix_ns: u64,
}

impl Decoder {
    pub fn new() -> Decoder {
        let now = |clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes into the timespec we own.
            unsafe { libc::clock_gettime(clock, &mut ts) };
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        };
        Decoder {
            boot_to_unix_ns: now(libc::CLOCK_REALTIME).saturating_sub(now(libc::CLOCK_BOOTTIME)),
        }
    }

    pub fn now_unix_ns(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    pub fn decode(&self, ev: &RawEvent, proc: &mut Process) -> Option<Line> {
        let pid = ev.pid;
        let goid = has(ev.flags, ev_flag::EV_GOID_KNOWN).then_some(ev.goid);
        let captured = (ev.key_captured as usize).min(ev.key.len());
        let key_bytes = &ev.key[..captured];
        let ts = ev.ts.wrapping_add(self.boot_to_unix_ns);
        if ev.rec == rec::REC_FATAL {
            let message = if captured == 0 && ev.key_len > 0 {
                proc.static_bytes(pid, ev.map, ev.key_len)
                    .unwrap_or_default()
            } else {
                key_bytes.to_vec()
            };
            return Some(Line::Fatal(Fatal {
                ts,
                pid,
                message: String::from_utf8_lossy(&message).into_owned(),
                goid,
            }));
        }
        let op = op_from_raw(ev.op)?;
        let (caller, via) = proc.caller_and_via(pid, ev.caller, ev.via);
        if ev.rec == rec::REC_CONCURRENT {
            let other = has(ev.flags, ev_flag::EV_OTHER_KNOWN);
            return Some(Line::ConcurrentWrite(ConcurrentWrite {
                ts,
                pid,
                op,
                map: format!("0x{:x}", ev.map),
                map_type: proc.map_type(pid, ev.maptype).0,
                goid,
                caller,
                other_goid: other.then_some(ev.other_goid),
                other_caller: if other {
                    proc.symbolize_return(pid, ev.other_caller)
                } else {
                    None
                },
            }));
        }
        let key_kind = key_kind_from_raw(ev.key_kind);
        let (map_type, key_type) = proc.map_type(pid, ev.maptype);
        // An unread key is null, like a clear's, and counted in read_faults.key.
        let key = if has(ev.flags, ev_flag::EV_KEY_FAULT) {
            None
        } else {
            format_key(key_kind, ev.go_kind, key_type, key_bytes)
        };
        let key_hash = key.is_some().then(|| format!("0x{:016x}", ev.key_hash));
        let key_truncated = key.is_some() && (captured as u32) < ev.key_len;
        let stack = (ev.stack_bytes > 0).then(|| {
            let n = (ev.stack_bytes as usize / 8).min(ev.stack.len());
            ev.stack[..n]
                .iter()
                .enumerate()
                .filter(|(_, &pc)| pc != 0)
                .flat_map(|(i, &pc)| proc.symbolize_inline(pid, if i == 0 { pc } else { pc - 1 }))
                .collect()
        });
        Some(Line::Event(Event {
            ts,
            op,
            pid,
            tid: ev.tid,
            goid,
            map: format!("0x{:x}", ev.map),
            map_type,
            map_len: ev.map_len,
            key,
            key_truncated,
            key_hash,
            caller,
            via,
            concurrent_write: has(ev.flags, ev_flag::EV_WRITING)
                || has(ev.flags, ev_flag::EV_OTHER_KNOWN),
            stack,
        }))
    }
}

/// PROTOCOL.md: strings as text, integers in decimal, pointers as 0x-hex,
/// anything else as the hex of its bytes.
pub fn format_key(
    key_kind: KeyKind,
    go_kind: u8,
    key_type: Option<KeyType>,
    bytes: &[u8],
) -> Option<String> {
    let kind = match key_kind {
        KeyKind::None => return None,
        KeyKind::FastStr => kind::STRING,
        KeyKind::Fast64Ptr => kind::POINTER,
        KeyKind::Generic if go_kind != 0 => go_kind,
        // The fast paths only say "4 or 8 plain bytes": the key type tells
        // a signed int from an unsigned one, a pointer or a small struct.
        _ => key_type.map_or(kind::INT, |t| t.kind),
    };
    let int = |signed: bool| -> Option<String> {
        let mut buf = [0u8; 8];
        let n = bytes.len();
        if !matches!(n, 1 | 2 | 4 | 8) {
            return None;
        }
        buf[..n].copy_from_slice(bytes);
        let u = u64::from_le_bytes(buf);
        Some(if signed {
            let shift = 64 - 8 * n as u32;
            (((u << shift) as i64) >> shift).to_string()
        } else {
            u.to_string()
        })
    };
    let formatted = match kind {
        kind::STRING => Some(String::from_utf8_lossy(bytes).into_owned()),
        kind::INT..=kind::INT64 => int(true),
        kind::UINT..=kind::UINTPTR => int(false),
        kind::BOOL if bytes.len() == 1 => Some((bytes[0] != 0).to_string()),
        kind::FLOAT32 if bytes.len() == 4 => {
            Some(f32::from_le_bytes(bytes.try_into().ok()?).to_string())
        }
        kind::FLOAT64 if bytes.len() == 8 => {
            Some(f64::from_le_bytes(bytes.try_into().ok()?).to_string())
        }
        kind::POINTER | kind::UNSAFE_POINTER | kind::CHAN | kind::MAP if bytes.len() == 8 => Some(
            format!("0x{:x}", u64::from_le_bytes(bytes.try_into().ok()?)),
        ),
        _ => None,
    };
    Some(formatted.unwrap_or_else(|| hex(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kt(kind: u8, size: u64) -> Option<KeyType> {
        Some(KeyType { kind, size })
    }

    #[test]
    fn integers_follow_their_go_kind() {
        let minus_one = (-1i32).to_le_bytes();
        assert_eq!(
            format_key(KeyKind::Fast32, 0, kt(5, 4), &minus_one).unwrap(),
            "-1"
        );
        assert_eq!(
            format_key(KeyKind::Fast32, 0, kt(10, 4), &minus_one).unwrap(),
            "4294967295"
        );
        let big = u64::MAX.to_le_bytes();
        assert_eq!(
            format_key(KeyKind::Fast64, 0, kt(11, 8), &big).unwrap(),
            "18446744073709551615"
        );
        assert_eq!(
            format_key(KeyKind::Fast64, 0, kt(kind::INT64, 8), &big).unwrap(),
            "-1"
        );
        assert_eq!(
            format_key(KeyKind::Generic, 4, None, &(-2i16).to_le_bytes()).unwrap(),
            "-2"
        );
    }

    #[test]
    fn pointers_structs_and_strings() {
        let p = 0xc000012345u64.to_le_bytes();
        assert_eq!(
            format_key(KeyKind::Fast64Ptr, 0, None, &p).unwrap(),
            "0xc000012345"
        );
        assert_eq!(
            format_key(KeyKind::Fast64, 0, kt(kind::POINTER, 8), &p).unwrap(),
            "0xc000012345"
        );
        // An 8-byte struct takes the fast64 path but is not a number.
        assert_eq!(
            format_key(KeyKind::Fast64, 0, kt(25, 8), &p).unwrap(),
            "45230100c0000000"
        );
        assert_eq!(
            format_key(KeyKind::FastStr, 0, None, b"user:42").unwrap(),
            "user:42"
        );
        assert_eq!(
            format_key(KeyKind::Generic, 25, None, &[1, 0, 0xff]).unwrap(),
            "0100ff"
        );
        assert_eq!(format_key(KeyKind::None, 0, None, &[]), None);
        assert_eq!(
            format_key(KeyKind::Generic, kind::FLOAT64, None, &1.5f64.to_le_bytes()).unwrap(),
            "1.5"
        );
    }

    #[test]
    fn short_records_are_rejected_or_zero_filled() {
        assert!(raw_event(&[0u8; 8]).is_none());
        let ev = raw_event(&vec![0u8; offset_of!(RawEvent, key) + 3]).unwrap();
        assert_eq!(ev.stack_bytes, 0);
    }
}
