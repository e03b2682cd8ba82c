//! Which functions only pass a map operation on, so that the caller a user
//! sees is the code that asked for it: the runtime's own frames, reflect
//! (`Value.SetMapIndex` → `reflect.mapassign_faststr0` → the runtime), the
//! standard `maps` package, and generic helpers that only forward (a
//! generic function whose every call goes to the runtime or to another
//! such helper). The probe walks frame pointers past them; this module
//! says where they are, as one bit per 32-byte granule of text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::calls::{call_sites, calls, MAX_BODY};
use super::pclntab::Func;
use super::{Frame, GoBinary};

/// Packages whose frames are never the caller a user means.
const WRAPPER_PACKAGES: [&str; 4] = ["runtime.", "internal/runtime/", "reflect.", "maps."];

/// Their source directories under GOROOT/src (internal/runtime's are its
/// subdirectories). go1.23 to go1.26 name the closures of an inlined
/// `maps.Insert` or `maps.All` after the caller's package
/// (`main.f.Insert[...]-range1`), so only their file says whose code they are.
const WRAPPER_DIRS: [&str; 3] = ["runtime", "reflect", "maps"];
const WRAPPER_DIR_TREE: &str = "internal/runtime/";

/// Longest physical function whose calls are read to judge the generic
/// copies inlined into it; a larger one keeps those copies as callers.
const MAX_CALLER_BODY: u64 = 1 << 20;

/// Go's amd64 linker aligns every function to 32 bytes, so no granule of
/// this size holds two functions (a granule that would is left unmarked).
pub const GRANULE_SHIFT: u32 = 5;
/// The most words the BPF table (WRAP_WORDS) holds for all binaries.
pub const MAX_WORDS: usize = 1 << 18;

/// Bit `g % 64` of word `g / 64` is set when granule `g`, at link address
/// `lo + g * 32`, lies in a wrapper.
#[derive(Debug)]
pub struct WrapperMap {
    pub lo: u64,
    pub words: Vec<u64>,
    /// Generic functions found to only forward (for `check` and tests).
    pub forwarders: Vec<String>,
    /// GOROOT/src as this binary's file names spell it ("" with -trimpath);
    /// None when runtime.main's file does not say it.
    goroot_src: Option<String>,
    /// Entries of the wrapper functions and out-of-line forwarders, sorted.
    entries: Vec<u64>,
    /// Per physical function (by entry), which generic copies inlined into
    /// it only forward, by inline-tree index: read from its machine code on
    /// its first event, since caller_at runs per event.
    inlined: Mutex<HashMap<u64, Arc<HashMap<i32, bool>>>>,
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

    fn in_wrapper_file(&self, file: &str) -> bool {
        self.goroot_src
            .as_deref()
            .is_some_and(|src| in_wrapper_dir(file, src))
    }

    fn is_wrapper_entry(&self, addr: u64) -> bool {
        self.entries.binary_search(&addr).is_ok()
    }
}

/// Whether `file` lies in a wrapper package's directory of the GOROOT whose
/// source directory is `goroot_src` (ending in '/', or "" when trimmed): a
/// user package whose path merely ends in /maps is elsewhere.
fn in_wrapper_dir(file: &str, goroot_src: &str) -> bool {
    let Some((dir, _)) = file
        .strip_prefix(goroot_src)
        .and_then(|rel| rel.rsplit_once('/'))
    else {
        return false;
    };
    WRAPPER_DIRS.contains(&dir) || dir.starts_with(WRAPPER_DIR_TREE)
}

/// GOROOT/src as spelled in `file`, the source file of a `runtime.`
/// function: `/usr/local/go/src/runtime/proc.go` gives `/usr/local/go/src/`,
/// a -trimpath `runtime/proc.go` gives "".
fn goroot_src_of(file: &str) -> Option<&str> {
    let (dir, _) = file.rsplit_once('/')?;
    let src = dir.strip_suffix("runtime")?;
    (src.is_empty() || src.ends_with('/')).then_some(src)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wrapper,
    Generic,
    Other,
}

struct Function {
    func: Func,
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
        let mut frames = self.pcln.frames_indexed(&self.data, pc);
        let map = self.wrappers();
        let wraps = |(f, index): &(Frame, i32)| match kind_of(&f.func) {
            Kind::Wrapper => true,
            _ if map.is_some_and(|m| m.in_wrapper_file(&f.file)) => true,
            // An inlined copy has no body of its own to read: judge it by
            // the calls made from it in the function it was inlined into.
            Kind::Generic if *index >= 0 => {
                map.is_some_and(|m| self.inlined_copy_forwards(m, pc, *index))
            }
            Kind::Generic => map.is_some_and(|m| m.forwarders.contains(&f.func)),
            Kind::Other => false,
        };
        match frames.iter().position(|f| !wraps(f)) {
            Some(i) if i > 0 => {
                let via = frames[0].0.clone();
                (Some(frames.swap_remove(i).0), Some(via))
            }
            _ => (frames.into_iter().next().map(|(f, _)| f), None),
        }
    }

    /// Whether the generic copy at inline-tree index `index` of the function
    /// holding `pc` only forwards.
    fn inlined_copy_forwards(&self, map: &WrapperMap, pc: u64, index: i32) -> bool {
        let Some(f) = self.pcln.find(&self.data, pc) else {
            return false;
        };
        let cached = map
            .inlined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.entry)
            .cloned();
        let copies = cached.unwrap_or_else(|| {
            let copies = Arc::new(self.inlined_forwarders(map, &f));
            map.inlined
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(f.entry, Arc::clone(&copies));
            copies
        });
        copies.get(&index).copied().unwrap_or(false)
    }

    /// For each generic copy inlined into `f` (by inline-tree index),
    /// whether every call made from it lands in a wrapper or a forwarder:
    /// the rule for out-of-line generics, applied to the copy's own calls.
    /// Each copy is judged alone, as the compiler may have dropped calls
    /// from one (a constant argument) and kept them in another.
    fn inlined_forwarders(&self, map: &WrapperMap, f: &Func) -> HashMap<i32, bool> {
        let mut out = HashMap::new();
        let Some(tree) = self.pcln.inline_tree(&self.data, f) else {
            return out;
        };
        let Some(code) = f
            .end
            .checked_sub(f.entry)
            .filter(|len| *len <= MAX_CALLER_BODY)
            .and_then(|len| self.elf.read_vaddr(&self.data, f.entry, len))
        else {
            return out;
        };
        for site in call_sites(code, f.entry) {
            let forwards = site.target.is_some_and(|t| map.is_wrapper_entry(t));
            for (index, name) in self.pcln.inlined_at(&self.data, &tree, site.at) {
                if kind_of(name) == Kind::Generic {
                    *out.entry(index).or_insert(true) &= forwards;
                }
            }
        }
        out
    }

    /// None when the binary has no wrapper functions or its text is too
    /// large for the table; the caller is then always the immediate frame.
    pub(super) fn build_wrapper_map(&self) -> Option<WrapperMap> {
        let mut funcs = Vec::new();
        let mut goroot_src = None;
        self.pcln.for_each(&self.data, |name, f| {
            if name == "runtime.main" {
                goroot_src = self
                    .pcln
                    .own_file(&self.data, &f)
                    .and_then(goroot_src_of)
                    .map(str::to_string);
            }
            funcs.push((
                name,
                Function {
                    func: f,
                    kind: kind_of(name),
                },
            ));
            true
        });
        // The closures of inlined std maps code (an out-of-line
        // `main.f.All[...].func1` that maps.Insert calls) sit between the
        // runtime and the caller: the probe must climb past them too.
        if let Some(src) = goroot_src.as_deref() {
            for (_, f) in funcs.iter_mut().filter(|(_, f)| f.kind != Kind::Wrapper) {
                if self
                    .pcln
                    .own_file(&self.data, &f.func)
                    .is_some_and(|file| in_wrapper_dir(file, src))
                {
                    f.kind = Kind::Wrapper;
                }
            }
        }
        let (names, funcs): (Vec<&str>, Vec<Function>) = funcs.into_iter().unzip();
        let names: Vec<(usize, &str)> = names
            .into_iter()
            .enumerate()
            .filter(|(i, _)| funcs[*i].kind == Kind::Generic)
            .collect();
        // The linker sorts the functab; the searches below rely on it, and a
        // crafted table that is not sorted gets no caller walk.
        if !funcs.windows(2).all(|w| w[0].func.entry <= w[1].func.entry) {
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
        let lo = marked().map(|f| f.func.entry).min()? >> GRANULE_SHIFT << GRANULE_SHIFT;
        let hi = marked().map(|f| f.func.end).max()?;
        let granules = hi.checked_sub(lo)? >> GRANULE_SHIFT;
        let nwords = usize::try_from(granules.div_ceil(64)).ok()?;
        if nwords > MAX_WORDS {
            return None;
        }
        let mut words = vec![0u64; nwords];
        for Function { func: f, .. } in marked() {
            // Only the granules wholly inside the function.
            let first = (f.entry - lo).div_ceil(1 << GRANULE_SHIFT);
            let last = f.end.min(hi).saturating_sub(lo) >> GRANULE_SHIFT;
            for g in first..last {
                words[(g / 64) as usize] |= 1 << (g % 64);
            }
        }
        let mut entries: Vec<u64> = marked().map(|f| f.func.entry).collect();
        entries.dedup();
        let forwarders = names
            .iter()
            .filter(|(i, _)| forwarders.contains(i))
            .map(|(_, n)| n.to_string())
            .collect();
        Some(WrapperMap {
            lo,
            words,
            forwarders,
            goroot_src,
            entries,
            inlined: Mutex::new(HashMap::new()),
        })
    }

    /// Indices (into `funcs`) of the generic functions whose every call
    /// lands in a wrapper or another forwarder, found as a fixpoint.
    fn forwarders(&self, funcs: &[Function], generics: &[(usize, &str)]) -> Vec<usize> {
        let mut cands: Vec<(usize, Vec<u64>)> = generics
            .iter()
            .filter_map(|&(i, _)| {
                let f = &funcs[i].func;
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
                targets.iter().all(
                    |&t| match funcs.binary_search_by_key(&t, |f| f.func.entry) {
                        Ok(j) => funcs[j].kind == Kind::Wrapper || kept.binary_search(&j).is_ok(),
                        Err(_) => false,
                    },
                )
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
            goroot_src: None,
            entries: Vec::new(),
            inlined: Mutex::new(HashMap::new()),
        };
        // granule 1 is [0x1020, 0x1040)
        assert!(!m.holds_return(0x1020));
        assert!(m.holds_return(0x1021));
        assert!(m.holds_return(0x1040));
        assert!(!m.holds_return(0x1041));
        assert!(!m.holds_return(0));
        assert!(!m.holds_return(0xfff));
    }

    #[test]
    fn goroot_is_read_from_the_runtimes_own_file() {
        assert_eq!(
            goroot_src_of("/usr/local/go/src/runtime/proc.go"),
            Some("/usr/local/go/src/")
        );
        assert_eq!(goroot_src_of("runtime/proc.go"), Some(""));
        assert_eq!(
            goroot_src_of("$GOROOT/src/runtime/asm_amd64.s"),
            Some("$GOROOT/src/")
        );
        assert_eq!(goroot_src_of("/x/myruntime/proc.go"), None);
        assert_eq!(goroot_src_of("/x/runtime/pprof/proto.go"), None);
        assert_eq!(goroot_src_of("proc.go"), None);
    }

    #[test]
    fn wrapper_files_are_those_of_the_goroots_wrapper_packages() {
        let src = "/opt/go/src/";
        for file in [
            "/opt/go/src/maps/iter.go",
            "/opt/go/src/maps/maps.go",
            "/opt/go/src/reflect/value.go",
            "/opt/go/src/runtime/map_swiss.go",
            "/opt/go/src/runtime/asm_amd64.s",
            "/opt/go/src/internal/runtime/maps/runtime_swiss.go",
        ] {
            assert!(in_wrapper_dir(file, src), "{file}");
        }
        for file in [
            // Other std packages, runtime's subpackages among them.
            "/opt/go/src/runtime/pprof/proto.go",
            "/opt/go/src/reflect/internal/example1/example.go",
            "/opt/go/src/encoding/json/decode.go",
            "/opt/go/src/internal/runtime.go",
            // User packages whose path ends in /maps, in GOPATH-like trees too.
            "/home/u/proj/maps/maps.go",
            "/home/u/go/src/maps/maps.go",
            "/opt/go/src2/maps/iter.go",
            "/work/tests/go/inlinedcallers/src/maps/maps.go",
            "<autogenerated>",
        ] {
            assert!(!in_wrapper_dir(file, src), "{file}");
        }
        // -trimpath: GOROOT files are relative to GOROOT/src, module files
        // start with their module path.
        for file in [
            "maps/iter.go",
            "runtime/proc.go",
            "internal/runtime/maps/map.go",
        ] {
            assert!(in_wrapper_dir(file, ""), "{file}");
        }
        for file in [
            "example.com/x/maps/file.go",
            "inlinedcallers/src/maps/maps.go",
            "example.com/maps@v1.0.0/maps.go",
            "runtime/debug/stack.go",
            "iter.go",
        ] {
            assert!(!in_wrapper_dir(file, ""), "{file}");
        }
    }
}
