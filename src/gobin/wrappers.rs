//! Which functions only pass a map operation on, so that the caller a user
//! sees is the code that asked for it: the runtime's own frames, reflect
//! (`Value.SetMapIndex` → `reflect.mapassign_faststr0` → the runtime), the
//! standard `maps` package, and generic helpers that only forward (a
//! generic function whose every call goes to the runtime or to another
//! such helper). The probe walks frame pointers past them; this module
//! says where they are, as one bit per 32-byte granule of text.

use super::calls::{calls, MAX_BODY};
use super::{Frame, GoBinary};

/// Packages whose frames are never the caller a user means.
const WRAPPER_PACKAGES: [&str; 4] = ["runtime.", "internal/runtime/", "reflect.", "maps."];

/// Go's amd64 linker aligns every function to 32 bytes, so no granule of
/// this size holds two functions (a granule that would is left unmarked).
pub const GRANULE_SHIFT: u32 = 5;
/// The most words the BPF table (WRAP_WORDS) holds for all binaries.
pub const MAX_WORDS: usize = 1 << 18;

/// Bit `g % 64` of word `g / 64` is set when granule `g`, at link address
/// `lo + g * 32`, lies in a wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapperMap {
    pub lo: u64,
    pub words: Vec<u64>,
    /// Generic functions found to only forward (for `check` and tests).
    pub forwarders: Vec<String>,
}

impl WrapperMap {
    /// Whether return address `ret` (link address) is in a wrapper, as the probe decides it.
    pub fn holds_return(&self, ret: u64) -> bool {
        let Some(off) = ret.checked_sub(1).and_then(|r| r.checked_sub(self.lo)) else {
            return false;
        };
        let g = off >> GRANULE_SHIFT;
        usize::try_from(g / 64)
            .ok()
            .and_then(|w| self.words.get(w))
            .is_some_and(|word| word >> (g % 64) & 1 == 1)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wrapper,
    Generic,
    Other,
}

struct Function {
    entry: u64,
    end: u64,
    kind: Kind,
}

fn kind_of(name: &str) -> Kind {
    if WRAPPER_PACKAGES.iter().any(|p| name.starts_with(p)) {
        Kind::Wrapper
    } else if name.contains('[') {
        Kind::Generic
    } else {
        Kind::Other
    }
}

impl GoBinary {
    /// The caller a user means for the call at `pc` (a return address
    /// minus one), and the immediate frame when that is another: the probe
    /// climbed past wrappers' own frames, and this looks past wrappers the
    /// compiler inlined into the caller (maps.Copy into the function that
    /// calls it), innermost first.
    pub fn caller_at(&self, pc: u64) -> (Option<Frame>, Option<Frame>) {
        let mut frames = self.pcln.frames(&self.data, pc);
        let forwarders = self.wrappers().map_or(&[][..], |m| &m.forwarders[..]);
        let wraps = |f: &Frame| kind_of(&f.func) == Kind::Wrapper || forwarders.contains(&f.func);
        match frames.iter().position(|f| !wraps(f)) {
            Some(i) if i > 0 => {
                let via = frames[0].clone();
                (Some(frames.swap_remove(i)), Some(via))
            }
            _ => (frames.into_iter().next(), None),
        }
    }

    /// None when the binary has no wrapper functions or its text is too
    /// large for the table; the caller is then always the immediate frame.
    pub(super) fn build_wrapper_map(&self) -> Option<WrapperMap> {
        let mut funcs = Vec::new();
        let mut names = Vec::new();
        self.pcln.for_each(&self.data, |name, f| {
            let kind = kind_of(name);
            if kind == Kind::Generic {
                names.push((funcs.len(), name));
            }
            funcs.push(Function {
                entry: f.entry,
                end: f.end,
                kind,
            });
            true
        });
        // The linker sorts the functab; the searches below rely on it, and a
        // crafted table that is not sorted gets no caller walk.
        if !funcs.windows(2).all(|w| w[0].entry <= w[1].entry) {
            return None;
        }
        let forwarders = self.forwarders(&funcs, &names);
        let mut is_wrapper: Vec<bool> = funcs.iter().map(|f| f.kind == Kind::Wrapper).collect();
        for &i in &forwarders {
            is_wrapper[i] = true;
        }
        let marked = || {
            funcs
                .iter()
                .zip(&is_wrapper)
                .filter(|(_, w)| **w)
                .map(|(f, _)| f)
        };
        let lo = marked().map(|f| f.entry).min()? >> GRANULE_SHIFT << GRANULE_SHIFT;
        let hi = marked().map(|f| f.end).max()?;
        let granules = hi.checked_sub(lo)? >> GRANULE_SHIFT;
        let nwords = usize::try_from(granules.div_ceil(64)).ok()?;
        if nwords > MAX_WORDS {
            return None;
        }
        let mut words = vec![0u64; nwords];
        for f in marked() {
            // Only the granules wholly inside the function.
            let first = (f.entry - lo).div_ceil(1 << GRANULE_SHIFT);
            let last = f.end.min(hi).saturating_sub(lo) >> GRANULE_SHIFT;
            for g in first..last {
                words[(g / 64) as usize] |= 1 << (g % 64);
            }
        }
        let forwarders = names
            .iter()
            .filter(|(i, _)| forwarders.contains(i))
            .map(|(_, n)| n.to_string())
            .collect();
        Some(WrapperMap {
            lo,
            words,
            forwarders,
        })
    }

    /// Indices (into `funcs`) of the generic functions whose every call
    /// lands in a wrapper or another forwarder, found as a fixpoint.
    fn forwarders(&self, funcs: &[Function], generics: &[(usize, &str)]) -> Vec<usize> {
        let mut cands: Vec<(usize, Vec<u64>)> = generics
            .iter()
            .filter_map(|&(i, _)| {
                let f = &funcs[i];
                let len = f.end.checked_sub(f.entry).filter(|l| *l <= MAX_BODY)?;
                let code = self.elf.read_vaddr(&self.data, f.entry, len)?;
                let c = calls(code, f.entry);
                (!c.indirect).then_some((i, c.direct))
            })
            .collect();
        loop {
            let before = cands.len();
            let kept: Vec<usize> = cands.iter().map(|c| c.0).collect();
            cands.retain(|(_, targets)| {
                targets
                    .iter()
                    .all(|&t| match funcs.binary_search_by_key(&t, |f| f.entry) {
                        Ok(j) => funcs[j].kind == Kind::Wrapper || kept.binary_search(&j).is_ok(),
                        Err(_) => false,
                    })
            });
            if cands.len() == before {
                return kept;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_and_generics_are_classified_by_name() {
        assert!(kind_of("runtime.mapassign") == Kind::Wrapper);
        assert!(kind_of("internal/runtime/maps.(*Map).Delete") == Kind::Wrapper);
        assert!(kind_of("reflect.Value.SetMapIndex") == Kind::Wrapper);
        assert!(kind_of("maps.Copy[go.shape.map[string]int,go.shape.string]") == Kind::Wrapper);
        assert!(kind_of("main.put[go.shape.string,go.shape.uint8]") == Kind::Generic);
        assert!(kind_of("runtime/pprof.profileWriter") == Kind::Other);
        assert!(kind_of("example.com/maps.Set") == Kind::Other);
        assert!(kind_of("main.main") == Kind::Other);
    }

    #[test]
    fn a_return_address_at_a_function_end_belongs_to_that_function() {
        let m = WrapperMap {
            lo: 0x1000,
            words: vec![0b10],
            forwarders: Vec::new(),
        };
        // granule 1 is [0x1020, 0x1040)
        assert!(!m.holds_return(0x1020));
        assert!(m.holds_return(0x1021));
        assert!(m.holds_return(0x1040));
        assert!(!m.holds_return(0x1041));
        assert!(!m.holds_return(0));
        assert!(!m.holds_return(0xfff));
    }
}
