//! The BPF ABI on the agent's side. Its one source is bpf/mapguard.bpf.c:
//! the skeleton generates its enums and structs from the program's BTF
//! (`skel::types`), and this module marks them plain, so that records and
//! map values are copied with `plain`, never cast.

use super::skel::types;
use plain::Plain;
use std::mem::size_of;

/// Marks each generated type plain, once, and lists it for the size check.
macro_rules! plain_types {
    ($($t:ident),* $(,)?) => {
        $(
            // SAFETY: libbpf-cargo generates every one `repr(C)` from BTF,
            // of integers, arrays of them and the C enums (`repr(transparent)`
            // integers) only: any bytes are a valid value, and the type's
            // size and alignment are the program's (`sizes_are_the_programs`).
            unsafe impl Plain for types::$t {}
        )*

        /// Each plain type's name in the program's BTF, and its size here.
        #[cfg(test)]
        const SIZES: &[(&str, usize)] = &[$((stringify!($t), size_of::<types::$t>())),*];
    };
}

plain_types!(
    event, target_cfg, row_set, row_count, row_meta, agg_key, agg_val, hot_set, hot_count,
    hot_meta, lat_key, lat_val, slot_count,
);

/// Copies a value out of `bytes`; None if they are too few.
pub fn from_bytes<T: Plain + Default>(bytes: &[u8]) -> Option<T> {
    let mut v = T::default();
    plain::copy_from_bytes(&mut v, bytes).ok()?;
    Some(v)
}

/// One slot of the `targets` map, kept as the bytes libbpf takes. Fields are
/// written one at a time through a typed view of those bytes, so every byte,
/// padding or not, stays initialized and the whole goes to the map without
/// a cast.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct TargetSlot([u8; size_of::<types::target_cfg>()]);

const _: () = assert!(std::mem::align_of::<types::target_cfg>() <= 8);

impl TargetSlot {
    /// An empty slot: the probe ignores it (tgid 0).
    pub fn empty() -> TargetSlot {
        TargetSlot([0; size_of::<types::target_cfg>()])
    }

    pub fn cfg(&mut self) -> &mut types::target_cfg {
        // The buffer is the type's size and at least its alignment.
        plain::from_mut_bytes(&mut self.0).expect("a TargetSlot holds exactly one target_cfg")
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::btf::types::{MemberAttr, Struct};
    use libbpf_rs::btf::{Btf, HasSize};

    /// The generated types are laid out as the program lays them out: a
    /// size off here would shift every field after it when copying.
    #[test]
    fn sizes_are_the_programs() {
        let object = include_bytes!(concat!(env!("OUT_DIR"), "/mapguard.bpf.o"));
        let btf = Btf::from_raw("mapguard", object)
            .expect("reading the object's BTF")
            .expect("the object carries BTF");
        for &(name, size) in SIZES {
            let ty = btf
                .type_by_name::<Struct>(name)
                .unwrap_or_else(|| panic!("struct {name} in the program's BTF"));
            assert_eq!(ty.size(), size, "size of struct {name}");
        }
        // A record's length is checked against the header (all before `key`).
        let event = btf.type_by_name::<Struct>("event").unwrap();
        let key = event
            .iter()
            .find(|m| m.name.is_some_and(|n| n == "key"))
            .expect("event.key");
        let MemberAttr::Normal { offset } = key.attr else {
            panic!("event.key is not a bit field");
        };
        assert_eq!(offset as usize / 8, std::mem::offset_of!(types::event, key));
    }

    #[test]
    fn a_target_slot_is_its_fields() {
        let mut slot = TargetSlot::empty();
        slot.cfg().tgid = 7;
        slot.cfg().wrap_lo = 1 << 40;
        let back: types::target_cfg = from_bytes(slot.bytes()).unwrap();
        assert_eq!((back.tgid, back.wrap_lo, back.goid_off), (7, 1 << 40, 0));
    }
}
