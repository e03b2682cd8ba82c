//! The loaded BPF object: probe attachment per process, exact counters and
//! the event ring buffer. The only module that talks to libbpf.

use super::abi::{self, TargetSlot};
use super::breakpoints::{self, Breakpoints, Unswitchable};
use super::shared_array::SharedArray;
use super::skel::types::{self, counter, limits};
use super::skel::{MapguardSkel, MapguardSkelBuilder, OpenMapguardSkel};
use crate::gobin::{GoBinary, KeyKind, MapImpl, ProbePoint, WrapperMap};
use crate::protocol::{Op, OpCounts, ReadFaults};
use anyhow::{anyhow, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    Link, MapCore, MapFlags, OpenObject, RingBuffer, RingBufferBuilder, UprobeMultiOpts, UprobeOpts,
};
use plain::Plain;
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Ways per set of the hot-key and row tables.
const HOT_WAYS: u32 = limits::HOT_WAYS.0;
// gobin (every OS, no skeleton) builds the wrapper bits the program reads.
const _: () = assert!(limits::WRAP_GRANULE_SHIFT.0 == crate::gobin::GRANULE_SHIFT);
const _: () = assert!(limits::WRAP_WORDS.0 as usize == crate::gobin::WRAP_MAX_WORDS);
const ROW_WAYS: u32 = limits::ROW_WAYS.0;

pub struct Config {
    pub max_key_bytes: u32,
    pub sample_every: u32,
    pub want_stack: bool,
    /// One ring-buffer record per operation (trace); else aggregates only (watch).
    pub emit_events: bool,
    /// Per (pid, map type, caller, op) counts and the hot-key table.
    pub aggregate: bool,
    /// Keys the hot-key table holds, rounded up to a power of two; 0: no
    /// hot keys (keys are then never read).
    pub hot_keys_size: u32,
    /// Entry + RET probes: concurrent writers and delete latency.
    pub track_writes: bool,
    /// 0: unlimited.
    pub max_events_per_sec: u64,
    /// `--max-overhead`: map-op probes are attached only for windows the
    /// agent opens (`arm`, `open`), and hits are counted per process.
    pub budgeted: bool,
}

/// What the probes of one process saw since it was attached (`--max-overhead`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SlotCount {
    /// Every hit, gated or not: what the probes cost the process.
    pub hits: u64,
    /// Operations seen while the window was open, by op.
    pub ops: [u64; 3],
    /// The program's time on these hits, and the runs it was timed on (those
    /// not preempted mid-way).
    pub prog_ns: u64,
    pub prog_runs: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub ops: OpCounts,
    pub emitted: u64,
    pub dropped: u64,
    pub sampled_out: u64,
    pub read_faults: ReadFaults,
    pub rate_limited: u64,
    pub hot_keys_evicted: u64,
    pub rows_untracked: u64,
    pub concurrent_writes: u64,
}

/// What a probe point reports.
#[derive(Clone, Copy)]
enum Probe {
    Map(Op, KeyKind),
    /// runtime.fatal: the crash message.
    Fatal,
    /// A RET of a map function: the write begun at entry is over.
    Ret,
}

/// MAPGUARD_MAX_TARGETS=N (at most MAX_TARGETS) lowers the slot count, so a
/// test can make one process of several fail to attach for real.
fn max_targets() -> u32 {
    let most = limits::MAX_TARGETS.0;
    std::env::var("MAPGUARD_MAX_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(most, |n: u32| n.clamp(1, most))
}

/// The attach cookie the BPF program reads: which probe, the key kind and
/// the process's target slot (enum cookie in the BPF source).
fn cookie(probe: Probe, slot: u32) -> u64 {
    let (op, key_kind) = match probe {
        Probe::Map(op, k) => (op_raw(op), k),
        Probe::Fatal => (types::op::PROBE_FATAL, KeyKind::None),
        Probe::Ret => (types::op::PROBE_RET, KeyKind::None),
    };
    u64::from(op.0)
        | u64::from(key_kind_raw(key_kind).0) << types::cookie::COOKIE_KIND_SHIFT.0
        | u64::from(slot) << types::cookie::COOKIE_SLOT_SHIFT.0
}

pub(super) fn op_raw(op: Op) -> types::op {
    match op {
        Op::Delete => types::op::OP_DELETE,
        Op::Assign => types::op::OP_ASSIGN,
        Op::Clear => types::op::OP_CLEAR,
    }
}

pub fn op_from_raw(op: types::op) -> Option<Op> {
    match op {
        types::op::OP_DELETE => Some(Op::Delete),
        types::op::OP_ASSIGN => Some(Op::Assign),
        types::op::OP_CLEAR => Some(Op::Clear),
        _ => None,
    }
}

fn key_kind_raw(kind: KeyKind) -> types::key_kind {
    match kind {
        KeyKind::None => types::key_kind::KEY_NONE,
        KeyKind::Fast32 => types::key_kind::KEY_FAST32,
        KeyKind::Fast64 => types::key_kind::KEY_FAST64,
        KeyKind::Fast64Ptr => types::key_kind::KEY_FAST64PTR,
        KeyKind::FastStr => types::key_kind::KEY_FASTSTR,
        KeyKind::Generic => types::key_kind::KEY_GENERIC,
    }
}

pub fn key_kind_from_raw(kind: types::key_kind) -> KeyKind {
    match kind {
        types::key_kind::KEY_FAST32 => KeyKind::Fast32,
        types::key_kind::KEY_FAST64 => KeyKind::Fast64,
        types::key_kind::KEY_FAST64PTR => KeyKind::Fast64Ptr,
        types::key_kind::KEY_FASTSTR => KeyKind::FastStr,
        types::key_kind::KEY_GENERIC => KeyKind::Generic,
        _ => KeyKind::None,
    }
}

/// Whether bounded runs may switch windows by writing text: the kernel lets
/// this agent (it refuses under PROC_MEM_NO_FORCE), and
/// MAPGUARD_WINDOWS_BY_LINKS=1 does not ask for the slower path, which it
/// forces so that it stays tested.
fn text_switch_allowed() -> bool {
    if std::env::var_os("MAPGUARD_WINDOWS_BY_LINKS").is_some_and(|v| v == "1") {
        return false;
    }
    match breakpoints::writable_text() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("warning: --max-overhead: windows come from attaching and detaching probes, slower and dearer, since this kernel does not let the agent write text: {e:#}");
            false
        }
    }
}

/// EACCES from a perf-event uprobe, the path kernels without uprobe_multi take.
const PERF_UPROBE_DENIED: &str = "permission denied: without uprobe_multi (kernels before 6.6) each uprobe is a perf event, which current kernels allow only with CAP_SYS_ADMIN; in a cluster pass --privileged, locally run as full root";

pub struct Probes<'obj> {
    skel: MapguardSkel<'obj>,
    /// Per traced pid: its slot, what the slot holds, and its links.
    links: HashMap<u32, Traced>,
    wrap: WrapTable,
    free_slots: Vec<u32>,
    /// Whether the kernel takes uprobe_multi links; learnt at the first attach.
    multi: bool,
    track_writes: bool,
    budgeted: bool,
    /// Whether windows may be switched by writing text (see breakpoints.rs):
    /// asked of the kernel once, when the run is bounded.
    text_switch: bool,
    rows: RowTable,
    /// None when hot keys are off.
    hot_table: Option<HotTable>,
}

struct Traced {
    slot: u32,
    cfg: TargetSlot,
    /// Whether the probe walks past wrapper frames for it (its binary's
    /// words are in `wrapbits` and its load address is known).
    walking: bool,
    /// Its binary: whose words in `wrapbits` it uses.
    bin: Arc<GoBinary>,
    _links: Vec<Link>,
    /// `--max-overhead`: the map-op probes, attached only while armed.
    cycled: Option<Cycled>,
}

/// The map-op probes of a bounded-overhead run, live only in windows.
struct Cycled {
    path: std::path::PathBuf,
    points: Vec<(ProbePoint, Probe)>,
    links: Vec<Link>,
    switch: Switch,
}

/// How a process's windows are opened and shut.
enum Switch {
    /// By writing the probed bytes, the links held for the run; None until
    /// its binary is mapped (a command held before its exec), the probes
    /// live but gated meanwhile.
    Text(Option<Breakpoints>),
    /// By attaching and dropping the links.
    Links,
}

/// How windows are switched, as `stats` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSwitch {
    Text,
    Link,
}

/// Which words of `wrapbits` each binary's wrapper map holds: one copy per
/// binary however many of its processes run, given back with the last one.
#[derive(Default)]
struct WrapTable {
    /// (first word, words, users, the binary) in word order.
    regions: Vec<(u32, u32, u32, Arc<GoBinary>)>,
    warned_full: bool,
}

impl WrapTable {
    /// The first free run of `len` words.
    fn place(&self, len: u32) -> Option<u32> {
        let mut at = 0u32;
        for &(first, n, _, _) in &self.regions {
            if first - at >= len {
                return Some(at);
            }
            at = first + n;
        }
        (limits::WRAP_WORDS.0 - at >= len).then_some(at)
    }
}

/// The per (pid, op, map type, caller) rows, mapped.
struct RowTable {
    sets: SharedArray<types::row_set>,
    counts: SharedArray<types::row_count>,
    metas: SharedArray<types::row_meta>,
}

/// One key of the hot-key table.
pub struct HotKeyRaw {
    idx: usize,
    tag: u64,
    pub pid: u32,
    pub map: u64,
    pub maptype: u64,
    pub deletes: u64,
    pub assigns: u64,
}

impl HotKeyRaw {
    pub fn total(&self) -> u64 {
        self.deletes + self.assigns
    }
}

/// The hot-key table, mapped.
struct HotTable {
    sets: SharedArray<types::hot_set>,
    counts: SharedArray<types::hot_count>,
    metas: SharedArray<types::hot_meta>,
}

/// Sets of HOT_WAYS ways for a table of at least `size` keys (a power of two).
fn hot_key_sets(size: u32) -> u32 {
    (size.max(HOT_WAYS).next_power_of_two() / HOT_WAYS).max(1)
}

/// Raw event records, copied out of the ring buffer for the caller to decode.
pub type Inbox = Rc<RefCell<Vec<types::event>>>;

impl<'obj> Probes<'obj> {
    pub fn load(storage: &'obj mut MaybeUninit<OpenObject>, cfg: &Config) -> Result<Probes<'obj>> {
        let mut open: OpenMapguardSkel<'obj> = MapguardSkelBuilder::default()
            .open(storage)
            .context("opening the BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| anyhow!("the BPF object has no read-only data section"))?;
        rodata.max_key_bytes = cfg.max_key_bytes.min(limits::MAX_KEY.0);
        rodata.sample_every = cfg.sample_every.max(1);
        rodata.want_stack = cfg.want_stack;
        rodata.emit_events = cfg.emit_events;
        rodata.aggregate = cfg.aggregate;
        rodata.hot_keys = cfg.aggregate && cfg.hot_keys_size > 0;
        rodata.track_writes = cfg.track_writes;
        rodata.budgeted = cfg.budgeted;
        if !cfg.budgeted {
            open.maps
                .slot_counts
                .set_max_entries(1)
                .context("sizing the per-process counters")?;
        }
        if cfg.max_events_per_sec > 0 {
            rodata.event_interval_ns = (1_000_000_000 / cfg.max_events_per_sec).max(1);
            // A tenth of a second of credit: short bursts pass, floods do not.
            rodata.burst_ns = 100_000_000;
        }
        let hot_keys_on = rodata.hot_keys;
        if !cfg.emit_events {
            // Aggregates send only alarms (concurrent writes, fatals): 1 MiB
            // holds thousands, where trace's 16 MiB would all be resident.
            open.maps
                .events
                .set_max_entries(1 << 20)
                .context("sizing the event ring buffer")?;
        }
        // MAPGUARD_ROW_SETS=N (a power of two, at most ROW_SETS) shrinks the
        // row table, so tests can drive rows into the overflow hash.
        let most = limits::ROW_SETS.0;
        let row_sets = std::env::var("MAPGUARD_ROW_SETS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| n.is_power_of_two() && *n <= most)
            .unwrap_or(most);
        rodata.row_set_mask = row_sets - 1;
        open.maps
            .rowsets
            .set_max_entries(row_sets)
            .and_then(|()| open.maps.rowcounts.set_max_entries(row_sets))
            .and_then(|()| open.maps.rowmeta.set_max_entries(row_sets * ROW_WAYS))
            .context("sizing the row table")?;
        let sets = hot_key_sets(cfg.hot_keys_size);
        rodata.hot_set_mask = sets - 1;
        open.maps
            .hotsets
            .set_max_entries(sets)
            .and_then(|()| open.maps.hotcounts.set_max_entries(sets))
            .and_then(|()| open.maps.hotfps.set_max_entries(sets))
            .and_then(|()| open.maps.hotmeta.set_max_entries(sets * HOT_WAYS))
            .context("sizing the hot-key table")?;
        let skel = open.load().map_err(|e| {
            if e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
                anyhow!(super::NOT_PERMITTED)
            } else {
                anyhow!("loading the BPF program failed: {e}")
            }
        })?;
        let rows = RowTable {
            sets: SharedArray::map(skel.maps.rowsets.as_fd(), row_sets)?,
            counts: SharedArray::map(skel.maps.rowcounts.as_fd(), row_sets)?,
            metas: SharedArray::map(skel.maps.rowmeta.as_fd(), row_sets * ROW_WAYS)?,
        };
        let hot_table = if hot_keys_on {
            Some(HotTable {
                sets: SharedArray::map(skel.maps.hotsets.as_fd(), sets)?,
                counts: SharedArray::map(skel.maps.hotcounts.as_fd(), sets)?,
                metas: SharedArray::map(skel.maps.hotmeta.as_fd(), sets * HOT_WAYS)?,
            })
        } else {
            None
        };
        // MAPGUARD_NO_UPROBE_MULTI=1 forces the per-probe path older kernels take, so it stays tested.
        let multi = std::env::var_os("MAPGUARD_NO_UPROBE_MULTI").is_none_or(|v| v != "1");
        Ok(Probes {
            skel,
            links: HashMap::new(),
            wrap: WrapTable::default(),
            free_slots: (0..max_targets()).rev().collect(),
            multi,
            track_writes: cfg.track_writes,
            budgeted: cfg.budgeted,
            text_switch: cfg.budgeted && text_switch_allowed(),
            rows,
            hot_table,
        })
    }

    /// Attaches every probe point of `bin` whose op is wanted, for `pid` only,
    /// and registers the pid's per-binary constants. `path` is the binary as
    /// this host sees it. Returns the probed function names.
    pub fn attach(
        &mut self,
        pid: u32,
        path: &Path,
        bin: &Arc<GoBinary>,
        ops: &[Op],
    ) -> Result<Vec<String>> {
        let slot = self.free_slots.pop().ok_or_else(|| {
            anyhow!(
                "already tracing {} processes, the most one agent can: narrow the targets",
                max_targets()
            )
        })?;
        let mut cfg = TargetSlot::empty();
        let c = cfg.cfg();
        c.tgid = pid;
        c.goid_off = bin.goid_offset().unwrap_or(0) as u32;
        c.map_impl = match bin.map_impl() {
            MapImpl::Classic => types::map_impl::MAP_CLASSIC,
            MapImpl::Swiss => types::map_impl::MAP_SWISS,
        };
        let mut points: Vec<(ProbePoint, Probe)> = bin
            .probe_points()
            .into_iter()
            .filter(|p| ops.contains(&p.op))
            .map(|p| {
                let probe = Probe::Map(p.op, p.key_kind);
                (p, probe)
            })
            .collect();
        if self.track_writes {
            let rets: Vec<(ProbePoint, Probe)> = points
                .iter()
                .flat_map(|(p, _)| {
                    bin.return_points(&p.func).into_iter().filter_map(|addr| {
                        let file_offset = bin.file_offset(addr)?;
                        Some((
                            ProbePoint {
                                addr,
                                file_offset,
                                ..p.clone()
                            },
                            Probe::Ret,
                        ))
                    })
                })
                .collect();
            points.extend(rets);
        }
        let fatal = bin
            .probe_point_for("runtime.fatal")
            .map(|p| (p, Probe::Fatal));
        let mut names: Vec<String> = points
            .iter()
            .chain(fatal.iter())
            .filter(|(_, probe)| !matches!(probe, Probe::Ret))
            .map(|(p, _)| p.func.clone())
            .collect();
        names.dedup();
        // A bounded run keeps only the fatal probe attached (it costs nothing
        // until the process dies); the rest come and go with windows.
        let (permanent, cycled) = if self.budgeted {
            c.gated = 1;
            if let Err(e) = self.zero_slot_count(slot) {
                self.free_slots.push(slot);
                return Err(e);
            }
            (fatal.into_iter().collect::<Vec<_>>(), Some(points))
        } else {
            points.extend(fatal);
            (points, None)
        };
        let links = match self.attach_points(pid, slot, path, &permanent) {
            Ok(links) => links,
            Err(e) => {
                self.free_slots.push(slot);
                return Err(e);
            }
        };
        // The slot's pid goes in last: a hit before every probe is live would
        // give a partial view that `attached` would not admit to.
        if let Err(e) = self.set_slot(slot, &cfg) {
            drop(links);
            self.free_slots.push(slot);
            return Err(e).context("registering the target pid");
        }
        self.links.insert(
            pid,
            Traced {
                slot,
                cfg,
                walking: false,
                bin: Arc::clone(bin),
                _links: links,
                cycled: cycled.map(|points| Cycled {
                    path: path.to_path_buf(),
                    points,
                    links: Vec::new(),
                    switch: Switch::Links,
                }),
            },
        );
        if self.text_switch {
            self.hold_for_text(pid);
        }
        // A fixed-address binary is where it was linked; a PIE's caller walk
        // waits for its load address (`walk_callers`).
        if !bin.pie() {
            self.walk_callers(pid, 0);
        }
        Ok(names)
    }

    /// Lets the probe name callers above wrapper frames for `pid`, whose
    /// binary is loaded `bias` bytes above its link addresses. Without it (a
    /// binary with no wrappers, a full table) callers are the immediate frame.
    pub fn walk_callers(&mut self, pid: u32, bias: u64) {
        let Some(t) = self.links.get(&pid) else {
            return;
        };
        if t.walking {
            return;
        }
        let bin = Arc::clone(&t.bin);
        let Some(map) = bin.wrappers() else {
            return;
        };
        let Some(first) = self.wrap_region(&bin, map) else {
            return;
        };
        let words = map.words.len() as u32;
        let Some(t) = self.links.get_mut(&pid) else {
            return;
        };
        t.walking = true;
        let c = t.cfg.cfg();
        c.wrap_first = first;
        c.wrap_words = words;
        c.wrap_lo = map.lo.wrapping_add(bias);
        let (slot, cfg) = (t.slot, t.cfg);
        if self.set_slot(slot, &cfg).is_err() {
            self.release_region(&bin);
        }
    }

    /// The words of `bin`'s map in `wrapbits`, written on first use.
    fn wrap_region(&mut self, bin: &Arc<GoBinary>, map: &WrapperMap) -> Option<u32> {
        let table = &mut self.wrap;
        if let Some(r) = table.regions.iter_mut().find(|r| Arc::ptr_eq(&r.3, bin)) {
            r.2 += 1;
            return Some(r.0);
        }
        let len = u32::try_from(map.words.len()).ok()?;
        let Some(first) = table.place(len) else {
            if !table.warned_full {
                table.warned_full = true;
                eprintln!(
                    "warning: too much Go code traced at once to skip runtime and reflect frames in all of it: some callers are the immediate frame"
                );
            }
            return None;
        };
        for (i, word) in map.words.iter().enumerate() {
            let key = first + i as u32;
            self.skel
                .maps
                .wrapbits
                .update(&key.to_ne_bytes(), &word.to_ne_bytes(), MapFlags::ANY)
                .ok()?;
        }
        let at = table.regions.partition_point(|r| r.0 < first);
        table.regions.insert(at, (first, len, 1, Arc::clone(bin)));
        Some(first)
    }

    fn release_region(&mut self, bin: &Arc<GoBinary>) {
        let regions = &mut self.wrap.regions;
        if let Some(i) = regions.iter().position(|r| Arc::ptr_eq(&r.3, bin)) {
            regions[i].2 -= 1;
            if regions[i].2 == 0 {
                regions.remove(i);
            }
        }
    }

    /// One uprobe_multi link for all points when the kernel has it, else one
    /// link per point. The first failure of the per-point path says why and
    /// stops: the next point would fail alike.
    fn attach_points(
        &mut self,
        pid: u32,
        slot: u32,
        path: &Path,
        points: &[(ProbePoint, Probe)],
    ) -> Result<Vec<Link>> {
        if points.is_empty() {
            return Ok(Vec::new());
        }
        if self.multi {
            let opts = UprobeMultiOpts {
                offsets: points.iter().map(|(p, _)| p.file_offset as usize).collect(),
                cookies: points
                    .iter()
                    .map(|&(_, probe)| cookie(probe, slot))
                    .collect(),
                ..Default::default()
            };
            match self
                .skel
                .progs
                .map_op_multi
                .attach_uprobe_multi_with_opts(pid as i32, path, "", opts)
            {
                Ok(link) => return Ok(vec![link]),
                // EOPNOTSUPP/EINVAL: a kernel before 6.6. Anything else is real.
                Err(e)
                    if matches!(
                        e.kind(),
                        libbpf_rs::ErrorKind::Unsupported | libbpf_rs::ErrorKind::InvalidInput
                    ) =>
                {
                    self.multi = false;
                }
                Err(e) => return Err(anyhow!("attaching to pid {pid}: {e}")),
            }
        }
        points
            .iter()
            .map(|(p, probe)| {
                self.attach_one(
                    &self.skel.progs.map_op,
                    pid,
                    path,
                    p.file_offset,
                    cookie(*probe, slot),
                )
                .with_context(|| format!("attaching to {} in pid {pid}", p.func))
            })
            .collect()
    }

    fn attach_one(
        &self,
        prog: &libbpf_rs::ProgramMut<'obj>,
        pid: u32,
        path: &Path,
        offset: u64,
        cookie: u64,
    ) -> Result<Link> {
        let opts = UprobeOpts {
            cookie,
            retprobe: false,
            ..Default::default()
        };
        prog.attach_uprobe_with_opts(pid as i32, path, offset as usize, opts)
            .map_err(|e| {
                if e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
                    anyhow!(PERF_UPROBE_DENIED)
                } else {
                    anyhow!("{e}")
                }
            })
    }

    /// Drops the probes of a process that ended or is left.
    pub fn detach(&mut self, pid: u32) {
        let Some(t) = self.links.remove(&pid) else {
            return;
        };
        // Disarmed before the links go, so the slot is free for the next
        // process only once nothing of this one can hit it.
        let _ = self.set_slot(t.slot, &TargetSlot::empty());
        if t.walking {
            self.release_region(&t.bin);
        }
        self.free_slots.push(t.slot);
        drop(t);
    }

    /// Attaches `pid`'s map-op probes for the whole run, to be switched by
    /// writing text; on failure its windows come from links.
    fn hold_for_text(&mut self, pid: u32) {
        let Some(t) = self.links.get(&pid) else {
            return;
        };
        let (slot, Some(c)) = (t.slot, t.cycled.as_ref()) else {
            return;
        };
        let (path, points) = (c.path.clone(), c.points.clone());
        match self.attach_points(pid, slot, &path, &points) {
            Ok(links) => {
                if let Some(c) = self.links.get_mut(&pid).and_then(|t| t.cycled.as_mut()) {
                    c.links = links;
                    c.switch = Switch::Text(None);
                }
                self.settle(pid);
            }
            Err(e) => eprintln!("warning: pid {pid}: windows by attaching probes: {e:#}"),
        }
    }

    /// Finds the breakpoints of a process switched by text once its binary
    /// is mapped, and shuts them unless a window is open. A process whose
    /// text cannot be written goes over to links, probes dropped.
    pub fn settle(&mut self, pid: u32) {
        let Some(t) = self.links.get_mut(&pid) else {
            return;
        };
        let gated = t.cfg.cfg().gated != 0;
        let Some(c) = t.cycled.as_mut() else {
            return;
        };
        if !matches!(c.switch, Switch::Text(None)) {
            return;
        }
        let points: Vec<&ProbePoint> = c.points.iter().map(|(p, _)| p).collect();
        let found = Breakpoints::find(pid, &c.path, &points).and_then(|mut bp| {
            if gated {
                bp.set(false).map_err(Unswitchable::Never)?;
            }
            Ok(bp)
        });
        match found {
            Ok(bp) => c.switch = Switch::Text(Some(bp)),
            Err(Unswitchable::NotYet) => {}
            Err(Unswitchable::Never(e)) => {
                eprintln!("warning: pid {pid}: {e:#}; its windows come from attaching probes");
                c.links.clear();
                c.switch = Switch::Links;
            }
        }
    }

    /// How `pid`'s windows are switched.
    pub fn window_switch(&self, pid: u32) -> WindowSwitch {
        match self.links.get(&pid).and_then(|t| t.cycled.as_ref()) {
            Some(Cycled {
                switch: Switch::Text(_),
                ..
            }) => WindowSwitch::Text,
            _ => WindowSwitch::Link,
        }
    }

    /// `--max-overhead`: makes `pid`'s map-op probes live (its window still
    /// shut: see `open`).
    pub fn arm(&mut self, pid: u32) -> Result<()> {
        self.settle(pid);
        let Some(t) = self.links.get_mut(&pid) else {
            return Ok(());
        };
        let (slot, Some(c)) = (t.slot, t.cycled.as_mut()) else {
            return Ok(());
        };
        match &mut c.switch {
            Switch::Text(Some(bp)) => return bp.set(true),
            // Not mapped yet: the held links are live already.
            Switch::Text(None) => return Ok(()),
            Switch::Links if !c.links.is_empty() => return Ok(()),
            Switch::Links => {}
        }
        let (path, points) = (c.path.clone(), c.points.clone());
        let links = self.attach_points(pid, slot, &path, &points)?;
        if let Some(c) = self.links.get_mut(&pid).and_then(|t| t.cycled.as_mut()) {
            c.links = links;
        }
        Ok(())
    }

    /// Makes `pid`'s map-op probes cost it nothing from here on.
    pub fn disarm(&mut self, pid: u32) {
        let Some(c) = self.links.get_mut(&pid).and_then(|t| t.cycled.as_mut()) else {
            return;
        };
        match &mut c.switch {
            Switch::Text(Some(bp)) => {
                // Fails only once the process has exited or exec'd: then
                // nothing of it is left to switch.
                let _ = bp.set(false);
            }
            Switch::Text(None) => {}
            Switch::Links => c.links.clear(),
        }
    }

    /// Opens `pid`'s window for at most `hits` more map operations (the
    /// program shuts it itself past them), or shuts it (None): while shut, a
    /// hit is only counted.
    pub fn open(&mut self, pid: u32, hits: Option<u32>) -> Result<()> {
        let Some(t) = self.links.get_mut(&pid) else {
            return Ok(());
        };
        let c = t.cfg.cfg();
        c.gated = u8::from(hits.is_none());
        c.window_hits = hits.map_or(0, |n| n.min(i32::MAX as u32) as i32);
        let (slot, cfg) = (t.slot, t.cfg);
        self.set_slot(slot, &cfg)
    }

    /// What `pid`'s probes have counted since it was attached.
    pub fn slot_count(&self, pid: u32) -> Option<SlotCount> {
        let slot = self.links.get(&pid)?.slot;
        let cpus = self
            .skel
            .maps
            .slot_counts
            .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()?;
        let mut sum = SlotCount::default();
        for bytes in cpus {
            let v: types::slot_count = abi::from_bytes(&bytes)?;
            sum.hits += v.hits;
            sum.prog_ns += v.prog_ns;
            sum.prog_runs += v.prog_runs;
            for (a, b) in sum.ops.iter_mut().zip(v.ops.iter()) {
                *a += b;
            }
        }
        Some(sum)
    }

    fn zero_slot_count(&self, slot: u32) -> Result<()> {
        let map = &self.skel.maps.slot_counts;
        let zero = vec![0u8; map.value_size() as usize];
        let cpus = libbpf_rs::num_possible_cpus().context("counting CPUs")?;
        map.update_percpu(&slot.to_ne_bytes(), &vec![zero; cpus], MapFlags::ANY)
            .map_err(|e| anyhow!("clearing the per-process counters: {e}"))
    }

    fn set_slot(&self, slot: u32, value: &TargetSlot) -> Result<()> {
        self.skel
            .maps
            .targets
            .update(&slot.to_ne_bytes(), value.bytes(), MapFlags::ANY)
            .map_err(|e| anyhow!("{e}"))
    }

    pub fn counters(&self) -> Counters {
        let read = |slot: counter| percpu_sum(&self.skel.maps.counters, slot.0);
        let mut ops = OpCounts::default();
        for op in Op::ALL {
            // The map ops' slots start at C_OPS, in enum op's order.
            ops.add(
                op,
                read(counter(counter::C_OPS.0 + u32::from(op_raw(op).0))),
            );
        }
        Counters {
            ops,
            emitted: read(counter::C_EMITTED),
            dropped: read(counter::C_DROPPED),
            sampled_out: read(counter::C_SAMPLED_OUT),
            read_faults: ReadFaults {
                key: read(counter::C_FAULT_KEY),
                map_header: read(counter::C_FAULT_HEADER),
                goid: read(counter::C_FAULT_GOID),
                caller_frame: read(counter::C_FAULT_FRAME),
            },
            rate_limited: read(counter::C_RATE_LIMITED),
            hot_keys_evicted: read(counter::C_HOTKEY_EVICTED),
            rows_untracked: read(counter::C_AGG_FULL),
            concurrent_writes: read(counter::C_CONCURRENT),
        }
    }

    /// Per (pid, op, map type, caller) counts, exact since the start: the
    /// row table's, then the rows that found their set full. A row caught
    /// mid-claim (its description not yet written) is left for the next read.
    pub fn rows(&self) -> Vec<(types::agg_key, types::agg_val)> {
        let t = &self.rows;
        let mut rows = Vec::new();
        for set in 0..t.sets.len() {
            // As for hot keys: only ways that hold a row are copied out.
            let Some(s) = t
                .sets
                .get(set)
                .filter(|s| s.tag.iter().any(|&tag| tag != 0))
            else {
                continue;
            };
            let Some(c) = t.counts.get(set) else { continue };
            for (way, &tag) in s.tag.iter().enumerate() {
                if tag == 0 {
                    continue;
                }
                let idx = set * ROW_WAYS as usize + way;
                let Some(m) = t.metas.get(idx).filter(|m| m.tag == tag) else {
                    continue;
                };
                let key = types::agg_key {
                    pid: m.pid,
                    op: m.op,
                    maptype: m.maptype,
                    caller: m.caller,
                };
                let val = types::agg_val {
                    count: c.way[way].count,
                    map_len: c.way[way].map_len,
                    via: m.via,
                };
                rows.push((key, val));
            }
        }
        rows.extend(read_all(&self.skel.maps.agg));
        rows
    }

    /// Every key the hot-key table holds, with its exact counts since it
    /// took its way. A way caught mid-claim (its description not yet written)
    /// is left for the next read.
    pub fn hot_keys(&self) -> Vec<HotKeyRaw> {
        let Some(t) = &self.hot_table else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for set in 0..t.sets.len() {
            // Empty sets cost one tag line: counts and descriptions are
            // copied only for ways that hold a key.
            let Some(s) = t
                .sets
                .get(set)
                .filter(|s| s.tag.iter().any(|&tag| tag != 0))
            else {
                continue;
            };
            let Some(c) = t.counts.get(set) else { continue };
            for (way, &tag) in s.tag.iter().enumerate() {
                let idx = set * HOT_WAYS as usize + way;
                if tag == 0 {
                    continue;
                }
                let Some(m) = t.metas.get(idx).filter(|m| m.tag == tag) else {
                    continue;
                };
                keys.push(HotKeyRaw {
                    idx,
                    tag,
                    pid: m.pid,
                    map: m.map,
                    maptype: m.maptype,
                    deletes: c.deletes[way],
                    assigns: c.assigns[way],
                });
            }
        }
        keys
    }

    /// What the table says of `k` (its key bytes), unless the way changed
    /// hands since `hot_keys` read it.
    pub fn hot_key_meta(&self, k: &HotKeyRaw) -> Option<types::hot_meta> {
        let m = self.hot_table.as_ref()?.metas.get(k.idx)?;
        (m.tag == k.tag).then_some(m)
    }

    pub fn latencies(&self) -> Vec<(types::lat_key, types::lat_val)> {
        read_all(&self.skel.maps.latency)
    }

    /// A ring buffer reader that appends each record, parsed, to `inbox`
    /// (one copy out of the ring; malformed records are skipped).
    pub fn ring(&self, inbox: Inbox) -> Result<RingBuffer<'obj>> {
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&self.skel.maps.events, move |data: &[u8]| {
                if let Some(ev) = super::decode::raw_event(data) {
                    inbox.borrow_mut().push(ev);
                }
                0
            })
            .context("opening the event ring buffer")?;
        builder.build().context("opening the event ring buffer")
    }
}

/// Waits up to `timeout` for a wakeup, then takes whatever is waiting: the BPF
/// side wakes the reader only for full batches, so a trickle of events is
/// collected here, at most one timeout late.
pub fn poll(ring: &RingBuffer<'_>, timeout: Duration) -> Result<()> {
    match ring.poll(timeout) {
        Ok(()) => {}
        Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
        Err(e) => return Err(anyhow!("reading events: {e}")),
    }
    ring.consume().map_err(|e| anyhow!("reading events: {e}"))
}

/// Every entry of a map, in batches (a big table read key by key would cost
/// a syscall per entry each interval).
fn read_all<K: Plain + Default, V: Plain + Default>(map: &dyn MapCore) -> Vec<(K, V)> {
    let Ok(iter) = map.lookup_batch(4096, MapFlags::ANY, MapFlags::ANY) else {
        return Vec::new();
    };
    iter.filter_map(|(k, v)| Some((abi::from_bytes::<K>(&k)?, abi::from_bytes::<V>(&v)?)))
        .collect()
}

/// A per-CPU array's u64 at `key`, summed over the CPUs (0 when unreadable).
pub(crate) fn percpu_sum(map: &impl MapCore, key: u32) -> u64 {
    map.lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .map(|cpus| {
            cpus.iter()
                .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8])))
                .sum()
        })
        .unwrap_or(0)
}
