//! Command-line surface. Usage reads as `kubectl mapguard ...`, the way a
//! kubectl plugin is invoked.

use crate::agent_config::Percent;
use crate::duration::parse_duration;
use crate::protocol::Op;
use crate::render::{AuditFormat, CheckFormat, TraceFormat, WatchFormat};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-mapguard",
    bin_name = "kubectl mapguard",
    version,
    about = "See Go map deletes, assigns and clears in running processes and pods, live, with eBPF",
    after_help = "Cluster examples:\n  kubectl mapguard trace deploy/checkout -n shop --ops delete\n  kubectl mapguard watch -l app=web -A --context prod-eu --context prod-us\n\nLocal examples (as root):\n  kubectl mapguard trace -- ./server --port 8080\n  kubectl mapguard trace --pid 4242 --ops delete --map-type 'map\\[string\\]' -o json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream every map delete, assign and clear of the target, one line each.
    Trace(TraceArgs),
    /// Live rates per map type and caller, hot keys, concurrent writes, delete latency.
    Watch(WatchArgs),
    /// A bounded audit of map deletes: a report, a policy verdict and an exit code for CI gates.
    #[command(name = "delete-audit")]
    DeleteAudit(AuditArgs),
    /// Can this Go binary (or this pod's) be traced? Version, map implementation, probe points.
    Check(CheckArgs),
    /// Delete every agent pod this tool left behind (found by label).
    Cleanup(CleanupArgs),
    /// Node agent: trace the processes of one container, JSON lines on stdout.
    #[command(hide = true)]
    Agent(AgentArgs),
    /// Benchmark baseline: count-only uprobes at mapguard's probe points on CMD.
    #[command(hide = true, name = "bench-bare-probe")]
    BenchBareProbe(BareArgs),
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filters: Filters,

    #[command(flatten)]
    pub cluster: ClusterFlags,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = TraceFormat::Table)]
    pub output: TraceFormat,

    /// Leave out the header row of `-o table|wide`.
    #[arg(long = "no-headers")]
    pub no_headers: bool,

    #[command(flatten)]
    pub local: LocalFlags,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub probe: ProbeFlags,

    #[command(flatten)]
    pub watch: WatchFlags,

    #[command(flatten)]
    pub cluster: ClusterFlags,

    /// Output format: a refreshing table, or one `stats` JSON line per interval.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = WatchFormat::Table)]
    pub output: WatchFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics while watching (e.g. 127.0.0.1:9464).
    #[arg(long = "metrics-addr", value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// Alert on this policy's sliding-window rules (max_deletes within window) while watching.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,

    /// Post each alert, Slack-compatible, to this URL (needs --policy).
    #[arg(long = "alert-webhook", value_name = "URL")]
    pub alert_webhook: Option<String>,

    #[command(flatten)]
    pub local: LocalFlags,
}

/// What `trace`, `watch` and the agent all choose: which operations, for how long, and
/// whether writers are tracked.
#[derive(Args, Debug, Clone)]
pub struct ProbeFlags {
    /// Operations to probe, comma separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_op, default_value = "delete,assign,clear")]
    pub ops: Vec<Op>,

    /// Stop after this long (e.g. 30s, 5m); default: until the targets exit or Ctrl-C.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Count writers in flight with a probe on every RET of the map functions: names
    /// both goroutines of a concurrent write and measures delete latency. Each
    /// return costs a single-stepped probe (about 20 µs per write on kernel 6.18).
    #[arg(long = "track-writers")]
    pub track_writers: bool,
}

/// What to trace on this machine instead of in a cluster.
#[derive(Args, Debug, Clone, Default)]
pub struct LocalFlags {
    /// A running Go process on this machine (repeatable).
    #[arg(long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<u32>,

    /// Where CMD's own stdout and stderr go: this file (created or
    /// truncated). Without it, both go to mapguard's stderr, so stdout holds
    /// mapguard's data only, in every output format.
    #[arg(long = "cmd-output", value_name = "FILE", requires = "command")]
    pub cmd_output: Option<std::path::PathBuf>,

    /// Start this command with every probe live, and follow it until it
    /// exits. `trace` and `watch` then exit with its status (128+N for signal
    /// N) unless the run ended it (--duration, Ctrl-C); `delete-audit` keeps
    /// the verdict's exit code and puts the command's status in its report.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl LocalFlags {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.command.is_empty()
    }
}

/// What `watch` and the agent's watch mode share.
#[derive(Args, Debug, Clone)]
pub struct WatchFlags {
    /// How often to refresh (and to print a `stats` line).
    #[arg(long, value_name = "D", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Hot keys to show per map.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,

    /// Maps whose hot keys are named, busiest first. The others are counted
    /// (`hot_keys_maps_omitted`) and their key totals folded into one
    /// `map_keys` entry per map type: a service that makes a map per request
    /// would otherwise list thousands.
    #[arg(long = "top-maps", value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub top_maps: u32,

    /// Keys the kernel's hot-key table holds (rounded up to a power of two);
    /// evictions are counted and shown. 0 turns hot keys off: no key is read,
    /// the cheapest watch.
    #[arg(long = "hot-keys-size", value_name = "N", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(0..=4_194_304))]
    pub hot_keys_size: u32,

    /// One row per caller instruction (with its `pc`) instead of one per
    /// caller line: a line that calls the map function from several places.
    #[arg(long = "by-pc")]
    pub by_pc: bool,

    /// Bound what probing costs each target to PCT % of its own CPU time
    /// (e.g. 2 or 2%): probes live in short windows and every count becomes
    /// an estimate, marked as one, with its 95% interval.
    #[arg(long = "max-overhead", value_name = "PCT", value_parser = Percent::parse)]
    pub max_overhead: Option<Percent>,
}

/// What a cluster run needs: which pods, in which clusters, and how the
/// agent pods are made.
#[derive(Args, Debug, Clone)]
pub struct ClusterFlags {
    #[command(flatten)]
    pub targets: TargetFlags,

    #[command(flatten)]
    pub kube: KubeFlags,

    #[command(flatten)]
    pub agent_pods: AgentPodFlags,
}

/// Which pods to trace in the cluster(s).
#[derive(Args, Debug, Clone, Default)]
pub struct TargetFlags {
    /// pod/NAME, deploy/NAME, sts/NAME or ds/NAME (repeatable); a deployment means all its running replicas.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Pods matching this label selector (e.g. app=web,tier!=cache).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Namespace of the targets (default: the context's namespace, else "default").
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,

    /// Look for targets in every namespace.
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespace")]
    pub all_namespaces: bool,

    /// Only this container of each pod (default: all of them).
    #[arg(short = 'c', long = "container", value_name = "NAME")]
    pub container: Option<String>,
}

impl TargetFlags {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.selector.is_none()
    }
}

/// The kubectl flags a plugin must parse itself (kubectl does not pass its own).
#[derive(Args, Debug, Clone, Default)]
pub struct KubeFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, several paths merged, else ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Kube context to use (repeatable: streams of all contexts are merged).
    #[arg(long = "context", value_name = "NAME")]
    pub contexts: Vec<String>,

    /// Every context of the kubeconfig.
    #[arg(long = "all-contexts", conflicts_with = "contexts")]
    pub all_contexts: bool,

    /// The kubeconfig cluster to use instead of the context's.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use instead of the context's.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Username to impersonate for the operation.
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,

    /// Group to impersonate (repeatable).
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_groups: Vec<String>,

    /// Time limit for each API request that is not a stream (e.g. 10s).
    #[arg(long = "request-timeout", value_name = "D", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
}

/// Where the agent pods live (run, and swept by `cleanup`).
#[derive(Args, Debug, Clone)]
pub struct AgentNamespace {
    /// Namespace of the agent pods; it must allow privileged Pod Security (manifests/namespace.yaml).
    #[arg(
        long = "agent-namespace",
        value_name = "NS",
        default_value = "mapguard"
    )]
    pub agent_namespace: String,
}

/// How the agent pods are made.
#[derive(Args, Debug, Clone)]
pub struct AgentPodFlags {
    /// Agent image (the same kubectl-mapguard binary; see manifests/Containerfile).
    #[arg(long, value_name = "IMAGE", default_value = concat!("ghcr.io/mapguard/kubectl-mapguard:v", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    #[command(flatten)]
    pub namespace: AgentNamespace,

    /// Run agent pods privileged instead of with the BPF, PERFMON and SYS_PTRACE capabilities: needed on kernels without uprobe_multi (before 6.6), whose per-probe uprobes are perf events that need CAP_SYS_ADMIN.
    #[arg(long)]
    pub privileged: bool,

    /// Leave the agent pods in place when done, for debugging (delete them with `kubectl mapguard cleanup`).
    #[arg(long)]
    pub keep: bool,

    /// How long to wait for an agent pod to start running.
    #[arg(long = "pod-running-timeout", value_name = "D", default_value = "1m", value_parser = parse_duration)]
    pub pod_running_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A Go executable on this machine, or pod/NAME (checked by an agent pod on its node).
    #[arg(value_name = "BINARY|pod/NAME")]
    pub target: String,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = CheckFormat::Table)]
    pub output: CheckFormat,

    /// Leave out the header row of the pod/NAME table.
    #[arg(long = "no-headers")]
    pub no_headers: bool,

    /// Namespace of pod/NAME (default: the context's).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,

    /// Only this container of the pod.
    #[arg(short = 'c', long = "container", value_name = "NAME")]
    pub container: Option<String>,

    #[command(flatten)]
    pub kube: KubeFlags,

    #[command(flatten)]
    pub agent_pods: AgentPodFlags,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// How long to audit (e.g. 2m): the audit is bounded.
    #[arg(long, value_name = "D", value_parser = parse_duration, required = true)]
    pub duration: Duration,

    /// Policy file (YAML): the rules the verdict checks (see README "Use in CI").
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,

    /// Common rules without a policy file (repeatable): concurrent-write, fatal, coverage,
    /// delete-rate=N (deletes/s per map type and caller).
    #[arg(long = "fail-on", value_name = "RULE", value_delimiter = ',')]
    pub fail_on: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditFormat::Table)]
    pub output: AuditFormat,

    /// Post each violation, Slack-compatible, to this URL.
    #[arg(long = "alert-webhook", value_name = "URL")]
    pub alert_webhook: Option<String>,

    /// Top deleted keys to report per map type.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,

    /// Bound what probing costs each target to PCT % of its own CPU time
    /// (e.g. 2 or 2%): the report's counts become estimates and the audit
    /// is not a full one (see README "Bounded overhead").
    #[arg(long = "max-overhead", value_name = "PCT", value_parser = Percent::parse)]
    pub max_overhead: Option<Percent>,

    #[command(flatten)]
    pub cluster: ClusterFlags,

    #[command(flatten)]
    pub local: LocalFlags,
}

#[derive(Args, Debug)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub kube: KubeFlags,

    #[command(flatten)]
    pub namespace: AgentNamespace,

    /// Sweep every namespace (needs list and delete on pods cluster-wide).
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
}

#[derive(Args, Debug)]
pub struct BareArgs {
    /// Operations to probe, comma separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_op, default_value = "delete,assign,clear")]
    pub ops: Vec<Op>,

    /// Words of the process's stack each hit reads: prices watch's reads of
    /// the process's memory at their cheapest.
    #[arg(long = "user-reads", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=3))]
    pub user_reads: u32,

    #[arg(last = true, value_name = "CMD", required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub filters: Filters,

    /// A container to trace, as a pod status names it (containerd://ID) or bare (repeatable).
    #[arg(long = "container-id", value_name = "ID", required = true)]
    pub container_ids: Vec<String>,

    /// Processes of the container already known to the caller (repeatable).
    #[arg(long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<u32>,

    /// Aggregate (`stats` lines, as `watch -o json`) instead of one line per operation.
    #[arg(long)]
    pub watch: bool,

    /// Check the containers' Go binaries (one `check` line per process) and exit; no BPF.
    #[arg(long, conflicts_with = "watch")]
    pub check: bool,

    #[command(flatten)]
    pub watch_flags: WatchFlags,
}

#[derive(Args, Debug, Clone)]
pub struct Filters {
    #[command(flatten)]
    pub probe: ProbeFlags,

    /// Only events whose map type matches this regex, e.g. 'map\[string\]'.
    #[arg(long = "map-type", value_name = "RE", value_parser = parse_regex)]
    pub map_type: Option<regex::Regex>,

    /// Only events whose key (as printed) matches this regex.
    #[arg(long = "key", value_name = "RE", value_parser = parse_regex)]
    pub key: Option<regex::Regex>,

    /// Emit one event in N (counted in the kernel; the summary stays exact).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: u32,

    /// Cap on events per second, enforced in the kernel; the summary counts what it skipped.
    #[arg(long = "max-events-per-sec", value_name = "R", default_value_t = 0)]
    pub max_events_per_sec: u64,

    /// Capture each event's goroutine stack.
    #[arg(long)]
    pub stack: bool,

    /// Key bytes to capture (string keys longer than this are truncated).
    #[arg(long = "max-key-bytes", value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_key_bytes: u32,
}

/// clap's names for render's output formats, so that render knows nothing
/// of the command line.
macro_rules! value_enum {
    ($ty:ty { $($variant:ident => $name:literal $(, $help:expr)?;)+ }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$(Self::$variant),+]
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(match self {
                    $(Self::$variant => clap::builder::PossibleValue::new($name)$(.help($help))?,)+
                })
            }
        }
    };
}

const YAML_HELP: &str = "The JSON lines as YAML documents, each after `---`";

value_enum!(TraceFormat {
    Table => "table";
    Wide => "wide";
    Json => "json";
    Yaml => "yaml", YAML_HELP;
});
value_enum!(WatchFormat {
    Table => "table", "On a terminal: redrawn in place, long names shortened in the middle (…) so that the table fits the screen";
    Wide => "wide", "The table with every name whole";
    Json => "json";
    Yaml => "yaml", YAML_HELP;
});
value_enum!(AuditFormat {
    Table => "table";
    Json => "json";
    Junit => "junit";
    Yaml => "yaml", YAML_HELP;
});
value_enum!(CheckFormat {
    Table => "table";
    Json => "json";
    Yaml => "yaml", YAML_HELP;
});

fn parse_op(s: &str) -> Result<Op, String> {
    Op::parse(s.trim())
        .ok_or_else(|| format!("unknown operation {s:?}: use delete, assign or clear"))
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s)
        .map_err(|e| format!("not a valid regex: {}", e.to_string().replace('\n', " ")))
}

/// A process id: a whole number above zero.
pub fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!(
            "{s:?} is not a process id: give a whole number above zero, e.g. --pid 4242 (see `pgrep NAME`)"
        )),
        Ok(pid) => Ok(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_takes_a_command_after_dashes() {
        let cli = Cli::try_parse_from([
            "kubectl-mapguard",
            "trace",
            "-o",
            "json",
            "--ops",
            "delete",
            "--",
            "./x",
            "-v",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command else {
            panic!("not trace")
        };
        assert_eq!(t.local.command, ["./x", "-v"]);
        assert_eq!(t.filters.probe.ops, [Op::Delete]);
        assert_eq!(t.output, TraceFormat::Json);
    }

    #[test]
    fn every_subcommand_is_well_formed() {
        // clap checks duplicate and conflicting arguments only when asked.
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_ops_are_refused() {
        assert!(Cli::try_parse_from([
            "kubectl-mapguard",
            "trace",
            "--ops",
            "remove",
            "--pid",
            "1"
        ])
        .is_err());
    }
}
