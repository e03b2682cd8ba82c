//! The node agent: finds target processes, attaches the BPF probes, and turns
//! what they see into protocol lines. It knows nothing of Kubernetes; the
//! hidden `agent` subcommand and local `trace` both run it.

mod abi;
pub mod bare;
mod decode;
pub mod discover;
mod launch;
mod probes;
mod shared_array;
mod stats;

mod skel {
    #![allow(clippy::all, dead_code, non_camel_case_types, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/mapguard.skel.rs"));
}

pub use discover::{cgroup_names_container, normalize_container_id};

use crate::gobin::{GoBinError, GoBinary};
use crate::protocol::{Attached, Detached, ErrorLine, Line, LineSink, Op, Summary};
use anyhow::{anyhow, bail, Result};
use decode::{Decoder, Process};
use launch::HeldChild;
use probes::Probes;
use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const NOT_PERMITTED: &str =
    "not permitted: tracing needs root, or CAP_BPF and CAP_PERFMON (run it with sudo)";

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// This process's effective capabilities.
fn cap_eff() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn has_cap(bit: u32) -> bool {
    cap_eff() & (1u64 << bit) != 0
}

/// Why another process's executable could not be opened, said as what to do.
fn unreadable_exe(pid: u32, e: &std::io::Error) -> anyhow::Error {
    if has_cap(CAP_SYS_PTRACE) {
        anyhow!(
            "pid {pid}: its executable is not readable ({e}) even with CAP_SYS_PTRACE: it runs in another user namespace or is protected (an LSM policy, or a kernel thread); trace it from where it runs"
        )
    } else {
        anyhow!(
            "pid {pid}: its executable is not readable ({e}): reading another process's /proc/PID/exe needs CAP_SYS_PTRACE (agent pods add it; locally, run as root)"
        )
    }
}

/// What to look at.
pub enum Target {
    /// Running processes on this host.
    Pids(Vec<u32>),
    /// Start this command (argv) with every probe live; ends when it exits.
    /// Its stdout and stderr go to `output`, else both to our stderr: our
    /// stdout is data only.
    Command {
        argv: Vec<String>,
        output: Option<PathBuf>,
    },
    /// Every process of these containers, including ones that start later.
    Containers { ids: Vec<String>, pids: Vec<u32> },
}

pub struct Options {
    pub ops: Vec<Op>,
    pub map_type: Option<Regex>,
    pub key: Option<Regex>,
    pub sample_every: u32,
    /// 0: unlimited.
    pub max_events_per_sec: u64,
    pub duration: Option<Duration>,
    pub stack: bool,
    pub max_key_bytes: u32,
    /// Entry + RET probes: writers in flight and delete latency.
    pub track_writers: bool,
    /// Aggregates instead of one line per operation.
    pub watch: Option<WatchOptions>,
}

pub struct WatchOptions {
    pub interval: Duration,
    /// Hot keys shown per map.
    pub top: usize,
    /// Keys the kernel's hot-key table holds; 0: no hot keys.
    pub hot_keys_size: u32,
    /// Rows per caller pc rather than per caller line.
    pub by_pc: bool,
}

/// Set by SIGINT/SIGTERM; the run ends cleanly with a summary.
pub fn stop_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        stop_flag().store(true, Ordering::SeqCst);
    }
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| unsafe {
        // SAFETY: the handler only stores to an atomic.
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    });
    &STOP
}

/// Checks the privileges BPF needs before anything is loaded, so the user
/// gets one clear line rather than a libbpf error.
pub(crate) fn check_permitted() -> Result<()> {
    let (sys_admin, perfmon, bpf) = (
        has_cap(CAP_SYS_ADMIN),
        has_cap(CAP_PERFMON),
        has_cap(CAP_BPF),
    );
    if (bpf || sys_admin) && (perfmon || sys_admin) {
        Ok(())
    } else {
        bail!(NOT_PERMITTED)
    }
}

/// A binary's refusal, naming the binary where the error itself does not.
fn refusal(e: GoBinError, shown: &str) -> anyhow::Error {
    match e {
        GoBinError::NotReadable(_) | GoBinError::NotGo(_) => anyhow::Error::new(e),
        _ => anyhow::Error::new(e).context(shown.to_string()),
    }
}

/// Binaries are parsed once per file, however many processes run them.
#[derive(Default)]
struct BinaryCache(HashMap<(u64, u64), Arc<GoBinary>>);

impl BinaryCache {
    fn open(&mut self, path: &Path, shown: &str) -> Result<Arc<GoBinary>, GoBinError> {
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

struct Pending {
    pid: u32,
    path: PathBuf,
    shown: String,
    bin: Arc<GoBinary>,
    /// The container it was found in (agent pods trace several at once).
    container_id: Option<String>,
}

fn resolve_pid(cache: &mut BinaryCache, pid: u32) -> Result<Pending> {
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

/// Runs one tracing session and returns its summary. Every line, the summary
/// included, goes to `sink`; a sink error (e.g. a closed pipe) ends the run.
pub fn run(target: Target, opts: &Options, sink: &mut dyn LineSink) -> Result<Summary> {
    let stop = stop_flag();
    let mut cache = BinaryCache::default();
    let mut child: Option<HeldChild> = None;
    let mut pending = Vec::new();
    let containers: Vec<String> = match &target {
        Target::Pids(pids) => {
            for &pid in pids {
                pending.push(resolve_pid(&mut cache, pid)?);
            }
            Vec::new()
        }
        Target::Command { argv, output } => {
            let cmd = argv
                .first()
                .ok_or_else(|| anyhow!("no command given after --"))?;
            let path = launch::resolve_command(cmd).ok_or_else(|| {
                anyhow!("command not found: {cmd} (give a path, or put it on $PATH)")
            })?;
            let shown = path.to_string_lossy().into_owned();
            let bin = cache.open(&path, &shown).map_err(|e| refusal(e, &shown))?;
            check_permitted()?;
            let held = HeldChild::spawn(&path, argv, output.as_deref())?;
            pending.push(Pending {
                pid: held.pid,
                path,
                shown,
                bin,
                container_id: None,
            });
            child = Some(held);
            Vec::new()
        }
        Target::Containers { ids, pids } => {
            let ids: Vec<String> = ids
                .iter()
                .map(|id| normalize_container_id(id).to_string())
                .collect();
            for &pid in pids {
                pending.push(resolve_pid(&mut cache, pid)?);
            }
            ids
        }
    };
    check_permitted()?;

    let mut storage = MaybeUninit::uninit();
    let mut probes = Probes::load(
        &mut storage,
        &probes::Config {
            max_key_bytes: opts.max_key_bytes,
            sample_every: opts.sample_every,
            want_stack: opts.stack,
            emit_events: opts.watch.is_none(),
            aggregate: opts.watch.is_some(),
            hot_keys_size: opts.watch.as_ref().map_or(0, |w| w.hot_keys_size),
            track_writes: opts.track_writers,
            max_events_per_sec: opts.max_events_per_sec,
        },
    )?;
    let inbox = probes::Inbox::default();
    let ring = probes.ring(inbox.clone())?;
    let decoder = Decoder::new();
    let started = Instant::now();
    // Every process ever attached (their kernel aggregates outlive them), and
    // the ones still running.
    let mut procs: HashMap<u32, Process> = HashMap::new();
    let mut alive: HashSet<u32> = HashSet::new();
    let mut seen: HashSet<u32> = HashSet::new();
    // Container processes that were not Go, by the executable they ran then.
    let mut not_go: HashMap<u32, Option<PathBuf>> = HashMap::new();
    let mut stats = opts.watch.as_ref().map(|w| {
        (
            stats::StatsBuilder::new(w.top, w.by_pc),
            w.interval,
            Instant::now(),
        )
    });
    let mut session = Session {
        sink,
        filtered_out: 0,
        sink_closed: false,
    };

    // One process that cannot be traced must not stop the others: its
    // failure is an error line. Only when none of them attaches is it the
    // run's error (the one line a user of `--pid`/`-- CMD` expects).
    let mut failures = Vec::new();
    for p in pending {
        let pid = p.pid;
        if let Err(e) = attach(
            &mut probes,
            &mut procs,
            &mut alive,
            &mut seen,
            p,
            opts,
            &mut session,
        ) {
            failures.push((pid, e));
        }
    }
    if alive.is_empty() && containers.is_empty() {
        if let Some((_, e)) = failures.into_iter().next() {
            return Err(e);
        }
    } else {
        for (pid, e) in failures {
            session.error(format!("pid {pid}: {e:#}"));
        }
    }
    session.flush();
    if let Some(c) = child.as_mut() {
        c.release()?;
        // Its exec maps the binary within moments; a PIE's load address must
        // be read before the process can end (watch gets no events to read it on).
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(proc) = procs.get_mut(&c.pid) {
            if proc.learn_bias(c.pid) {
                probes.walk_callers(c.pid, proc.bias.unwrap_or(0));
                break;
            }
            if Instant::now() > deadline || c.try_wait().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    let mut last_scan = Instant::now();
    let mut exit_status = None;
    // Containers whose processes all failed so far: when every container is
    // here and nothing was ever attached, no target can be traced.
    let mut failed: HashSet<&str> = HashSet::new();
    let mut untraceable = None;
    loop {
        probes::poll(&ring, Duration::from_millis(100))?;
        session.deliver(&inbox, &decoder, &mut procs, opts);

        if let Some(c) = child.as_mut() {
            if let Some(status) = c.try_wait() {
                exit_status = Some(status);
            }
        }
        // Events a process emitted before it ended are already in the ring:
        // drain them before saying it is gone.
        let gone: Vec<u32> = alive
            .iter()
            .copied()
            .filter(|&pid| match child.as_ref() {
                Some(c) if c.pid == pid => exit_status.is_some(),
                _ => !discover::pid_exists(pid),
            })
            .collect();
        if !gone.is_empty() {
            let _ = ring.consume();
            session.deliver(&inbox, &decoder, &mut procs, opts);
            for pid in gone {
                probes.detach(pid);
                alive.remove(&pid);
                session.emit(&Line::Detached(Detached {
                    pid,
                    reason: "exited".into(),
                }));
            }
        }
        if !containers.is_empty() && last_scan.elapsed() >= Duration::from_secs(1) {
            last_scan = Instant::now();
            for id in &containers {
                for pid in discover::pids_in_container(Path::new("/proc"), id) {
                    if seen.contains(&pid) {
                        // An entrypoint script that execs the server keeps its
                        // pid: look again when its executable changes.
                        match not_go.get(&pid) {
                            Some(exe) if *exe != discover::exe_link(pid) => {
                                not_go.remove(&pid);
                            }
                            _ => continue,
                        }
                    }
                    seen.insert(pid);
                    let outcome = resolve_pid(&mut cache, pid).and_then(|mut p| {
                        p.container_id = Some(id.clone());
                        attach(
                            &mut probes,
                            &mut procs,
                            &mut alive,
                            &mut seen,
                            p,
                            opts,
                            &mut session,
                        )
                        .map_err(|e| e.context(format!("pid {pid}")))
                    });
                    match outcome {
                        Ok(()) => {}
                        // Shells, pause containers and short-lived helpers are not Go.
                        Err(e) if matches!(e.downcast_ref(), Some(GoBinError::NotGo(_))) => {
                            not_go.insert(pid, discover::exe_link(pid));
                        }
                        Err(e) => {
                            failed.insert(id.as_str());
                            session.error(format!("{e:#}"));
                        }
                    }
                }
            }
            if procs.is_empty() && failed.len() == containers.len() {
                untraceable = Some(anyhow!(
                    "no target process could be traced (the error lines above say why)"
                ));
            }
        }

        if let Some((builder, interval, last)) = stats.as_mut() {
            if last.elapsed() >= *interval {
                *last = Instant::now();
                let snapshot = builder.snapshot(
                    &probes,
                    &probes.counters(),
                    &mut procs,
                    decoder.now_unix_ns(),
                );
                session.emit(&Line::Stats(snapshot));
                session.flush();
            }
        }

        let timed_out = opts.duration.is_some_and(|d| started.elapsed() >= d);
        let all_gone = containers.is_empty() && alive.is_empty();
        if stop.load(Ordering::SeqCst)
            || timed_out
            || all_gone
            || session.sink_closed
            || untraceable.is_some()
        {
            break;
        }
    }

    let _ = ring.consume();
    session.deliver(&inbox, &decoder, &mut procs, opts);
    for pid in alive.drain() {
        probes.detach(pid);
        let reason = if stop.load(Ordering::SeqCst) {
            "interrupted"
        } else if untraceable.is_some() {
            "left: no target could be traced"
        } else {
            "duration reached"
        };
        session.emit(&Line::Detached(Detached {
            pid,
            reason: reason.into(),
        }));
    }
    let mut command_stopped = false;
    if let Some(c) = child.as_mut() {
        if exit_status.is_none() {
            exit_status = Some(c.terminate());
            command_stopped = true;
        }
    }
    let counters = probes.counters();
    if let Some((builder, _, _)) = stats.as_mut() {
        let snapshot = builder.snapshot(&probes, &counters, &mut procs, decoder.now_unix_ns());
        session.emit(&Line::Stats(snapshot));
    }
    let summary = Summary {
        ops: counters.ops,
        events_emitted: counters.emitted.saturating_sub(session.filtered_out),
        drops: counters.dropped,
        sampled_out: counters.sampled_out,
        rate_limited: counters.rate_limited,
        filtered_out: session.filtered_out,
        read_faults: counters.read_faults.total(),
        read_fault_causes: counters.read_faults,
        duration_ms: started.elapsed().as_millis() as u64,
        exit_status,
        command_stopped,
        lost_in_transit: 0,
    };
    session.emit(&Line::Summary(summary.clone()));
    session.flush();
    match untraceable {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

fn attach(
    probes: &mut Probes<'_>,
    procs: &mut HashMap<u32, Process>,
    alive: &mut HashSet<u32>,
    seen: &mut HashSet<u32>,
    p: Pending,
    opts: &Options,
    session: &mut Session<'_>,
) -> Result<()> {
    seen.insert(p.pid);
    let names = probes.attach(p.pid, &p.path, &p.bin, &opts.ops)?;
    if p.bin.goid_offset().is_none() {
        eprintln!(
            "warning: pid {}: goroutine ids unknown for {} without DWARF; events carry goid null",
            p.pid,
            p.bin.go_version()
        );
    }
    session.emit(&Line::Attached(Attached {
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
    // A running process has its binary mapped already (a held child has not:
    // it learns its bias once released).
    if proc.learn_bias(p.pid) {
        probes.walk_callers(p.pid, proc.bias.unwrap_or(0));
    }
    procs.insert(p.pid, proc);
    alive.insert(p.pid);
    Ok(())
}

struct Session<'a> {
    sink: &'a mut dyn LineSink,
    filtered_out: u64,
    sink_closed: bool,
}

impl Session<'_> {
    fn emit(&mut self, line: &Line) {
        if !self.sink_closed && self.sink.line(line).is_err() {
            self.sink_closed = true;
        }
    }

    fn error(&mut self, message: String) {
        self.emit(&Line::Error(ErrorLine { message }));
    }

    fn flush(&mut self) {
        if !self.sink_closed && self.sink.flush().is_err() {
            self.sink_closed = true;
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
