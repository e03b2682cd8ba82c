//! One tracing session as a type: the loaded probes, the processes they
//! watch and the lines they become, from the first attach to the summary.

use super::budget::Budget;
use super::decode::{Decoder, Process};
use super::launch::HeldChild;
use super::probes::{self, Probes};
use super::stats::StatsBuilder;
use super::{discover, stop_flag, Options};
use crate::gobin::{GoBinError, GoBinary};
use crate::protocol::{Attached, Detached, ErrorLine, Line, LineSink, Summary};
use anyhow::{anyhow, bail, Result};
use libbpf_rs::{OpenObject, RingBuffer};
use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why another process's executable could not be opened, said as what to do.
fn unreadable_exe(pid: u32, e: &std::io::Error) -> anyhow::Error {
    if super::has_cap(super::CAP_SYS_PTRACE) {
        anyhow!(
            "pid {pid}: its executable is not readable ({e}) even with CAP_SYS_PTRACE: it runs in another user namespace or is protected (an LSM policy, or a kernel thread); trace it from where it runs"
        )
    } else {
        anyhow!(
            "pid {pid}: its executable is not readable ({e}): reading another process's /proc/PID/exe needs CAP_SYS_PTRACE (agent pods add it; locally, run as root)"
        )
    }
}

/// A binary's refusal, naming the binary where the error itself does not.
pub(super) fn refusal(e: GoBinError, shown: &str) -> anyhow::Error {
    match e {
        GoBinError::NotReadable(_) | GoBinError::NotGo(_) | GoBinError::Unaligned(_) => {
            anyhow::Error::new(e)
        }
        _ => anyhow::Error::new(e).context(shown.to_string()),
    }
}

/// Binaries are parsed once per file, however many processes run them.
#[derive(Default)]
pub(super) struct BinaryCache(HashMap<(u64, u64), Arc<GoBinary>>);

impl BinaryCache {
    pub(super) fn open(&mut self, path: &Path, shown: &str) -> Result<Arc<GoBinary>, GoBinError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| GoBinError::NotReadable(format!("{shown}: {e}")))?;
        let id = (meta.dev(), meta.ino());
        if let Some(bin) = self.0.get(&id) {
            return Ok(bin.clone());
        }
        let bin = Arc::new(GoBinary::open(path)?);
        self.0.insert(id, bin.clone());
        Ok(bin)
    }
}

pub(super) struct Pending {
    pub(super) pid: u32,
    pub(super) path: PathBuf,
    pub(super) shown: String,
    pub(super) bin: Arc<GoBinary>,
    /// The container it was found in (agent pods trace several at once).
    pub(super) container_id: Option<String>,
}

pub(super) fn resolve_pid(cache: &mut BinaryCache, pid: u32) -> Result<Pending> {
    if !discover::pid_exists(pid) {
        bail!("no process with pid {pid}: check the pid (ps -e) and try again");
    }
    let (path, shown) = discover::exe_path(pid).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            unreadable_exe(pid, &e)
        } else {
            anyhow!(
                "pid {pid}: cannot find its executable ({e}); is it a kernel thread or a zombie?"
            )
        }
    })?;
    let bin = cache
        .open(&path, &shown)
        .map_err(|e| refusal(e, &shown).context(format!("pid {pid}")))?;
    Ok(Pending {
        pid,
        path,
        shown,
        bin,
        container_id: None,
    })
}

/// What the run traces beyond the processes found up front.
pub(super) struct Targets {
    /// The `-- CMD` child, held before its exec until its probes are live.
    pub(super) child: Option<HeldChild>,
    /// Normalized container ids, rescanned for new processes.
    pub(super) containers: Vec<String>,
    pub(super) cache: BinaryCache,
}

/// `watch`'s aggregates, emitted every `every`.
struct StatsEvery {
    builder: StatsBuilder,
    every: Duration,
    last: Instant,
}

pub(super) struct Agent<'a, 'obj> {
    opts: &'a Options,
    session: Session<'a>,
    probes: Probes<'obj>,
    ring: RingBuffer<'obj>,
    inbox: probes::Inbox,
    decoder: Decoder,
    cache: BinaryCache,
    child: Option<HeldChild>,
    containers: Vec<String>,
    started: Instant,
    /// Every process ever attached (their kernel aggregates outlive them).
    procs: HashMap<u32, Process>,
    /// The attached processes still running.
    alive: HashSet<u32>,
    seen: HashSet<u32>,
    /// Container processes that were not Go, by the executable they ran then.
    not_go: HashMap<u32, Option<PathBuf>>,
    stats: Option<StatsEvery>,
    last_scan: Instant,
    exit_status: Option<i32>,
    /// Containers whose processes all failed so far: when every container is
    /// here and nothing was ever attached, no target can be traced.
    failed: HashSet<String>,
    untraceable: Option<anyhow::Error>,
    /// `--max-overhead`: the windows, and what the last stats line estimated.
    budget: Option<Budget>,
    estimation: Option<(crate::protocol::OpCounts, crate::protocol::Estimation)>,
}

impl<'a, 'obj> Agent<'a, 'obj> {
    /// Loads the BPF side for `opts`; nothing is attached yet.
    pub(super) fn new(
        storage: &'obj mut MaybeUninit<OpenObject>,
        opts: &'a Options,
        sink: &'a mut dyn LineSink,
        targets: Targets,
    ) -> Result<Agent<'a, 'obj>> {
        let probes = Probes::load(
            storage,
            &probes::Config {
                max_key_bytes: opts.max_key_bytes,
                sample_every: opts.sample_every,
                want_stack: opts.stack,
                emit_events: opts.watch.is_none(),
                aggregate: opts.watch.is_some(),
                hot_keys_size: opts.watch.as_ref().map_or(0, |w| w.hot_keys_size),
                track_writes: opts.track_writers,
                max_events_per_sec: opts.max_events_per_sec,
                budgeted: opts
                    .watch
                    .as_ref()
                    .is_some_and(|w| w.max_overhead.is_some()),
            },
        )?;
        // Calibrated before anything is attached: no target pays for it.
        let budget = opts
            .watch
            .as_ref()
            .and_then(|w| w.max_overhead)
            .map(|p| Budget::new(p.value()));
        let inbox = probes::Inbox::default();
        let ring = probes.ring(inbox.clone())?;
        let decoder = Decoder::new();
        let started = Instant::now();
        let stats = opts.watch.as_ref().map(|w| StatsEvery {
            builder: StatsBuilder::new(w.top, w.top_maps, w.by_pc),
            every: w.interval,
            last: Instant::now(),
        });
        Ok(Agent {
            opts,
            session: Session {
                sink,
                filtered_out: 0,
                sink_failed: None,
            },
            probes,
            ring,
            inbox,
            decoder,
            cache: targets.cache,
            child: targets.child,
            containers: targets.containers,
            started,
            procs: HashMap::new(),
            alive: HashSet::new(),
            seen: HashSet::new(),
            not_go: HashMap::new(),
            stats,
            last_scan: Instant::now(),
            exit_status: None,
            failed: HashSet::new(),
            untraceable: None,
            budget,
            estimation: None,
        })
    }

    /// Attaches the targets found up front, then lets a held child run.
    /// `refused`: the processes that could not even be looked at (gone, not
    /// Go), each said already with its pid.
    pub(super) fn start(
        &mut self,
        pending: Vec<Pending>,
        refused: Vec<anyhow::Error>,
    ) -> Result<()> {
        // One process that cannot be traced must not stop the others: its
        // failure is an error line. Only when none of them attaches is it the
        // run's error (the one line a user of `--pid`/`-- CMD` expects).
        let mut failures = refused;
        for p in pending {
            let pid = p.pid;
            if let Err(e) = self.attach(p) {
                failures.push(e.context(format!("pid {pid}")));
            }
        }
        if self.alive.is_empty() && self.containers.is_empty() {
            let others = failures.len().saturating_sub(1);
            if let Some(e) = failures.into_iter().next() {
                return Err(match others {
                    0 => e,
                    n => e.context(format!(
                        "no process could be traced ({n} more failed likewise)"
                    )),
                });
            }
        } else {
            for e in failures {
                self.session.error(format!("{e:#}"));
            }
        }
        self.session.flush();
        self.release_child()?;
        self.last_scan = Instant::now();
        Ok(())
    }

    fn attach(&mut self, p: Pending) -> Result<()> {
        self.seen.insert(p.pid);
        let names = self.probes.attach(p.pid, &p.path, &p.bin, &self.opts.ops)?;
        if let Some(b) = self.budget.as_mut() {
            b.add(p.pid, &self.probes);
        }
        if p.bin.goid_offset().is_none() {
            eprintln!(
                "warning: pid {}: goroutine ids unknown for {} without DWARF; events carry goid null",
                p.pid,
                p.bin.go_version()
            );
        }
        self.session.emit(&Line::Attached(Attached {
            pid: p.pid,
            exe: p.shown.clone(),
            go_version: p.bin.go_version().to_string(),
            map_impl: serde_json::to_value(p.bin.map_impl())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            probes: names,
            goid_known: p.bin.goid_offset().is_some(),
            container_id: p.container_id.clone(),
        }));
        let mut proc = Process::new(p.bin, p.shown);
        // A running process has its binary mapped already (a held child has
        // not: it learns its bias once released).
        if proc.learn_bias(p.pid) {
            self.probes.walk_callers(p.pid, proc.bias.unwrap_or(0));
        }
        self.procs.insert(p.pid, proc);
        self.alive.insert(p.pid);
        Ok(())
    }

    fn release_child(&mut self) -> Result<()> {
        let Some(c) = self.child.as_mut() else {
            return Ok(());
        };
        c.release()?;
        // Its exec has mapped the binary (it is stopped there where ptrace
        // is allowed; else within moments): a PIE's load address is read
        // before its first map operation, so that the caller walk sees them
        // all (and before the process can end: watch gets no events to read
        // it on).
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(proc) = self.procs.get_mut(&c.pid) {
            if proc.learn_bias(c.pid) {
                self.probes.walk_callers(c.pid, proc.bias.unwrap_or(0));
                // Mapped: a bounded run switches its probes off now, before
                // the runtime's start-up pays a trap for each map write.
                self.probes.settle(c.pid);
                break;
            }
            if Instant::now() > deadline || c.try_wait().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        c.resume();
        Ok(())
    }

    /// Waits briefly for events and delivers them; notes the child's exit.
    pub(super) fn tick(&mut self) -> Result<()> {
        let mut wait = match &self.budget {
            Some(b) => b.next_deadline().saturating_duration_since(Instant::now()),
            None => Duration::from_millis(100),
        };
        // A short --interval is kept, not stretched to the idle poll's length.
        if let Some(s) = &self.stats {
            wait = wait.min(s.every.saturating_sub(s.last.elapsed()));
        }
        // The ring's poll waits in whole milliseconds, and a shorter wait
        // would spin: rounded up. A window whose credit runs out sooner is
        // shut by its program, which wakes this poll.
        let wait = Duration::from_millis(wait.as_micros().div_ceil(1000) as u64);
        probes::poll(&self.ring, wait)?;
        if let Some(b) = self.budget.as_mut() {
            b.step(&mut self.probes);
        }
        self.deliver();
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait() {
                self.exit_status = Some(status);
            }
        }
        Ok(())
    }

    fn deliver(&mut self) {
        self.session
            .deliver(&self.inbox, &self.decoder, &mut self.procs, self.opts);
    }

    /// Detaches the processes that ended.
    pub(super) fn reap(&mut self) {
        let gone: Vec<u32> = self
            .alive
            .iter()
            .copied()
            .filter(|&pid| match self.child.as_ref() {
                Some(c) if c.pid == pid => self.exit_status.is_some(),
                _ => !discover::pid_exists(pid),
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        // Events a process emitted before it ended are already in the ring:
        // drain them before saying it is gone.
        let _ = self.ring.consume();
        self.deliver();
        for pid in gone {
            if let Some(b) = self.budget.as_mut() {
                b.end(pid, &mut self.probes);
            }
            self.probes.detach(pid);
            self.alive.remove(&pid);
            self.session.emit(&Line::Detached(Detached {
                pid,
                reason: "exited".into(),
            }));
        }
    }

    /// Once a second, attaches the containers' processes not seen before.
    pub(super) fn rescan(&mut self) {
        if self.containers.is_empty() || self.last_scan.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_scan = Instant::now();
        for id in self.containers.clone() {
            for pid in discover::pids_in_container(Path::new("/proc"), &id) {
                self.scan_pid(&id, pid);
            }
        }
        if self.procs.is_empty() && self.failed.len() == self.containers.len() {
            self.untraceable = Some(anyhow!(
                "no target process could be traced (the error lines above say why)"
            ));
        }
    }

    fn scan_pid(&mut self, id: &str, pid: u32) {
        if self.seen.contains(&pid) {
            // An entrypoint script that execs the server keeps its pid: look
            // again when its executable changes.
            match self.not_go.get(&pid) {
                Some(exe) if *exe != discover::exe_link(pid) => {
                    self.not_go.remove(&pid);
                }
                _ => return,
            }
        }
        self.seen.insert(pid);
        let outcome = resolve_pid(&mut self.cache, pid).and_then(|mut p| {
            p.container_id = Some(id.to_string());
            self.attach(p).map_err(|e| e.context(format!("pid {pid}")))
        });
        match outcome {
            Ok(()) => {}
            // Shells, pause containers and short-lived helpers are not Go.
            Err(e) if matches!(e.downcast_ref(), Some(GoBinError::NotGo(_))) => {
                self.not_go.insert(pid, discover::exe_link(pid));
            }
            Err(e) => {
                self.failed.insert(id.to_string());
                self.session.error(format!("{e:#}"));
            }
        }
    }

    /// `watch`'s stats line, when its interval is up.
    pub(super) fn report(&mut self) {
        let Some(s) = self.stats.as_mut() else {
            return;
        };
        if s.last.elapsed() < s.every {
            return;
        }
        s.last = Instant::now();
        self.emit_stats();
        self.session.flush();
    }

    /// A `stats` line of the tables as they are now (watch mode).
    fn emit_stats(&mut self) {
        let Some(s) = self.stats.as_mut() else {
            return;
        };
        // Windows are shut first: reading the tables takes milliseconds (more
        // when the target keeps the cores busy), and a window left open
        // through them would run on, gated, at its hits' cost.
        let interval = self.budget.as_mut().map(|b| b.interval(&mut self.probes));
        let counters = self.probes.counters();
        let mut snapshot = s.builder.snapshot(
            &self.probes,
            &counters,
            &mut self.procs,
            self.decoder.now_unix_ns(),
        );
        if let Some((scales, sampling)) = interval {
            super::stats::estimate(&mut snapshot, &scales, sampling);
            self.estimation = Some((snapshot.ops.clone(), snapshot.estimation.clone()));
        }
        self.session.emit(&Line::Stats(snapshot));
    }

    /// Whether the run is over: interrupted, timed out, every target gone,
    /// nowhere to write, or nothing traceable.
    pub(super) fn done(&self) -> bool {
        let timed_out = self
            .opts
            .duration
            .is_some_and(|d| self.started.elapsed() >= d);
        let all_gone = self.containers.is_empty() && self.alive.is_empty();
        stop_flag().load(Ordering::SeqCst)
            || timed_out
            || all_gone
            || self.session.sink_failed.is_some()
            || self.untraceable.is_some()
    }

    /// Detaches what is left, stops a child still running, and emits the
    /// last stats and the summary.
    pub(super) fn finish(mut self) -> Result<Summary> {
        let _ = self.ring.consume();
        self.deliver();
        self.detach_all();
        let mut command_stopped = false;
        if let Some(c) = self.child.as_mut() {
            if self.exit_status.is_none() {
                self.exit_status = Some(c.terminate());
                command_stopped = true;
            }
        }
        self.emit_stats();
        let counters = self.probes.counters();
        let filtered_out = self.session.filtered_out;
        let (ops, mut estimation) = self
            .estimation
            .take()
            .unwrap_or((counters.ops, Default::default()));
        // The last interval is the moment of detaching, with next to no CPU
        // of its own: the summary's cost is the whole run's.
        for s in estimation.sampling.iter_mut() {
            s.overhead_pct = if s.cpu_ms > 0.0 {
                100.0 * s.probe_cpu_ms / s.cpu_ms
            } else {
                0.0
            };
        }
        let summary = Summary {
            ops,
            events_emitted: counters.emitted.saturating_sub(filtered_out),
            drops: counters.dropped,
            sampled_out: counters.sampled_out,
            rate_limited: counters.rate_limited,
            filtered_out,
            read_faults: counters.read_faults.total(),
            read_fault_causes: counters.read_faults,
            duration_ms: self.started.elapsed().as_millis() as u64,
            exit_status: self.exit_status,
            command_stopped,
            lost_in_transit: 0,
            estimation,
        };
        self.session.emit(&Line::Summary(summary.clone()));
        self.session.flush();
        if let Some(e) = self.untraceable {
            return Err(e);
        }
        match self.session.sink_failed {
            Some(e) => Err(anyhow::Error::new(e).context(crate::render::WRITE_FAILED)),
            None => Ok(summary),
        }
    }

    fn detach_all(&mut self) {
        for pid in self.alive.drain() {
            if let Some(b) = self.budget.as_mut() {
                b.end(pid, &mut self.probes);
            }
            self.probes.detach(pid);
            let reason = if stop_flag().load(Ordering::SeqCst) {
                "interrupted"
            } else if self.untraceable.is_some() {
                "left: no target could be traced"
            } else {
                "duration reached"
            };
            self.session.emit(&Line::Detached(Detached {
                pid,
                reason: reason.into(),
            }));
        }
    }
}

struct Session<'a> {
    sink: &'a mut dyn LineSink,
    filtered_out: u64,
    /// The first write that failed (a full disk, a closed stdout, a reader
    /// gone): the run ends, and says why unless the reader just left.
    sink_failed: Option<std::io::Error>,
}

impl Session<'_> {
    fn emit(&mut self, line: &Line) {
        if self.sink_failed.is_none() {
            self.sink_failed = self.sink.line(line).err();
        }
    }

    fn error(&mut self, message: String) {
        self.emit(&Line::Error(ErrorLine { message }));
    }

    fn flush(&mut self) {
        if self.sink_failed.is_none() {
            self.sink_failed = self.sink.flush().err();
        }
    }

    fn deliver(
        &mut self,
        inbox: &probes::Inbox,
        decoder: &Decoder,
        procs: &mut HashMap<u32, Process>,
        opts: &Options,
    ) {
        let records = std::mem::take(&mut *inbox.borrow_mut());
        for raw in records {
            let Some(proc) = procs.get_mut(&raw.pid) else {
                continue;
            };
            let Some(line) = decoder.decode(&raw, proc) else {
                continue;
            };
            if let Line::Event(ev) = &line {
                let type_ok = opts
                    .map_type
                    .as_ref()
                    .is_none_or(|re| ev.map_type.as_deref().is_some_and(|t| re.is_match(t)));
                let key_ok = opts
                    .key
                    .as_ref()
                    .is_none_or(|re| ev.key.as_deref().is_some_and(|k| re.is_match(k)));
                if !(type_ok && key_ok) {
                    self.filtered_out += 1;
                    continue;
                }
            }
            self.emit(&line);
        }
        self.flush();
    }
}
