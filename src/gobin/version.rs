//! The Go release of a binary whose `.go.buildinfo` was removed, read from
//! its runtime: each release since 1.21 added runtime functions that every
//! program links (the scheduler, GC and panic machinery, not library code),
//! and the map implementation shows in which map functions exist.
//!
//! Markers were read off real amd64 builds of several programs per
//! release (Go 1.21–1.27), keeping functions present in every program of
//! that release and every later one, and in no program of an earlier one.

/// Functions a release first linked into every program, newest last.
const MARKERS: [(u32, &[&str]); 7] = [
    // The traceback unwinder of 1.21; absent: older than any release we read.
    (21, &["runtime.(*unwinder).next"]),
    (
        22,
        &["runtime.(*_panic).nextDefer", "runtime.(*_panic).start"],
    ),
    (
        23,
        &["runtime.(*timer).maybeAdd", "runtime.(*timer).modify"],
    ),
    (
        24,
        &[
            "runtime.casGToWaitingForSuspendG",
            "runtime.(*mspan).typePointersOfType",
        ],
    ),
    (
        25,
        &[
            "runtime.(*cleanupQueue).enqueue",
            "runtime.(*gcWork).tryGetObj",
        ],
    ),
    (26, &["runtime.(*g).isMaybeRunnable"]),
    (27, &["runtime.addModuleItabs", "runtime.mallocPanic"]),
];

/// What the runtime says of a binary's release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guess {
    /// The newest release whose markers it links (0: none, older than 1.21).
    pub minor: u32,
    /// True when a newer release than the markers know could have built it.
    pub or_newer: bool,
    /// `internal/runtime/maps` is linked: swiss maps.
    pub swiss: bool,
}

impl Guess {
    /// What the version reads as: "go1.25", or "go1.27+" when open-ended.
    pub fn version(&self) -> String {
        let plus = if self.or_newer { "+" } else { "" };
        format!("go1.{}{plus}", self.minor)
    }

    /// The release when it is pinned (goid offsets are known per release).
    pub fn exact_minor(&self) -> Option<u32> {
        (!self.or_newer && self.minor > 0).then_some(self.minor)
    }
}

/// Reads the guess off every function name of the binary.
pub fn guess<'a>(names: impl IntoIterator<Item = &'a str>) -> Guess {
    let mut present = [false; MARKERS.len()];
    let mut swiss = false;
    for name in names {
        if name.starts_with("internal/runtime/maps.") {
            swiss = true;
        }
        if !name.starts_with("runtime.") {
            continue;
        }
        for (i, (_, funcs)) in MARKERS.iter().enumerate() {
            if funcs.contains(&name) {
                present[i] = true;
            }
        }
    }
    // The newest release present wins: a later release that drops an older
    // marker still reads as itself.
    let newest = present.iter().rposition(|&p| p);
    let minor = newest.map_or(0, |i| MARKERS[i].0);
    Guess {
        minor,
        or_newer: newest == Some(MARKERS.len() - 1),
        swiss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_marker_names_the_release() {
        let g = guess([
            "runtime.(*unwinder).next",
            "runtime.(*_panic).start",
            "main.main",
        ]);
        assert_eq!(
            (g.version(), g.exact_minor(), g.swiss),
            ("go1.22".into(), Some(22), false)
        );
        let g = guess([
            "runtime.(*unwinder).next",
            "runtime.(*g).isMaybeRunnable",
            "internal/runtime/maps.(*Map).Delete",
        ]);
        assert_eq!(
            (g.version(), g.exact_minor(), g.swiss),
            ("go1.26".into(), Some(26), true)
        );
    }

    #[test]
    fn the_newest_known_release_is_open_ended() {
        let g = guess(["runtime.mallocPanic", "internal/runtime/maps.(*Map).Delete"]);
        assert_eq!((g.version(), g.exact_minor()), ("go1.27+".into(), None));
    }

    #[test]
    fn no_marker_is_older_than_any_release_read() {
        let g = guess(["runtime.main", "main.main"]);
        assert_eq!(g.minor, 0);
        assert_eq!(g.exact_minor(), None);
    }
}
