//! The node agent: finds target processes, attaches the BPF probes, and turns
//! what they see into protocol lines. It knows nothing of Kubernetes; the
//! hidden `agent` subcommand and local `trace` both run it.

mod abi;
pub mod bare;
mod breakpoints;
mod budget;
mod cpu_clock;
mod decode;
pub mod discover;
mod launch;
mod probes;
mod session;
mod shared_array;
mod stats;
mod syscall_count;

mod skel {
    #![allow(clippy::all, dead_code, non_camel_case_types, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/mapguard.skel.rs"));
}

pub use discover::{cgroup_names_container, normalize_container_id};

use crate::protocol::{LineSink, Summary};
use anyhow::{anyhow, bail, Result};
use launch::HeldChild;
use session::{refusal, resolve_pid, Agent, BinaryCache, Pending, Targets};
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// What to probe and report: built from the flags in `config`, or from
/// an agent pod's argv.
pub use crate::agent_config::{AgentConfig as Options, WatchConfig as WatchOptions};

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

/// Runs one tracing session and returns its summary. Every line, the summary
/// included, goes to `sink`; a sink error (e.g. a closed pipe) ends the run.
pub fn run(target: Target, opts: &Options, sink: &mut dyn LineSink) -> Result<Summary> {
    // Installed before a `-- CMD` child starts: Ctrl-C ends the run with a summary.
    stop_flag();
    let (pending, refused, targets) = resolve(&target)?;
    check_permitted()?;
    let mut storage = MaybeUninit::uninit();
    let mut agent = Agent::new(&mut storage, opts, sink, targets)?;
    agent.start(pending, refused)?;
    loop {
        agent.tick()?;
        agent.reap();
        agent.rescan();
        agent.report();
        if agent.done() {
            break;
        }
    }
    agent.finish()
}

/// The processes `target` names, and for `-- CMD` the child, started and
/// held before its exec; and the pids that are gone or not Go, which the run
/// reports beside the others (see `Agent::start`).
fn resolve(target: &Target) -> Result<(Vec<Pending>, Vec<anyhow::Error>, Targets)> {
    let mut cache = BinaryCache::default();
    let mut child = None;
    let mut pending = Vec::new();
    let mut refused = Vec::new();
    let mut look = |pid| match resolve_pid(&mut cache, pid) {
        Ok(p) => pending.push(p),
        Err(e) => refused.push(e),
    };
    let containers = match target {
        Target::Pids(pids) => {
            pids.iter().copied().for_each(&mut look);
            Vec::new()
        }
        Target::Command { argv, output } => {
            let cmd = argv
                .first()
                .ok_or_else(|| anyhow!("no command given after --"))?;
            let path = launch::resolve_command(cmd)?;
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
            pids.iter().copied().for_each(&mut look);
            ids.iter()
                .map(|id| normalize_container_id(id).to_string())
                .collect()
        }
    };
    Ok((
        pending,
        refused,
        Targets {
            child,
            containers,
            cache,
        },
    ))
}
