//! The JSON lines contract (version 1) shared by the agent and the CLI.
//! Add fields freely; never rename or remove one without bumping `V`.

use serde::{Deserialize, Serialize};

pub const V: u32 = 1;

/// A map operation as the Go runtime performs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Delete,
    Assign,
    Clear,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Delete, Op::Assign, Op::Clear];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Delete => "delete",
            Op::Assign => "assign",
            Op::Clear => "clear",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

/// A source location, resolved through the Go binary's pclntab.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub func: String,
    pub file: String,
    pub line: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    pub delete: u64,
    pub assign: u64,
    pub clear: u64,
}

impl OpCounts {
    pub fn get(&self, op: Op) -> u64 {
        match op {
            Op::Delete => self.delete,
            Op::Assign => self.assign,
            Op::Clear => self.clear,
        }
    }

    pub fn add(&mut self, op: Op, n: u64) {
        match op {
            Op::Delete => self.delete += n,
            Op::Assign => self.assign += n,
            Op::Clear => self.clear += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.delete + self.assign + self.clear
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attached {
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub map_impl: String,
    pub probes: Vec<String>,
    /// False when the binary's goroutine-id offset is unknown (events carry goid null).
    #[serde(default = "yes")]
    pub goid_known: bool,
    /// The container the process was found in (agent mode), without the
    /// runtime prefix; the cluster side maps it to namespace/pod/container.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts: u64,
    pub op: Op,
    pub pid: u32,
    pub tid: u32,
    pub goid: Option<u64>,
    pub map: String,
    pub map_type: Option<String>,
    pub map_len: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    pub key_truncated: bool,
    /// Absent for clear, like `key`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_hash: Option<String>,
    /// The first frame outside the runtime, reflect, the maps package and
    /// generic forwarders: the code that asked for the operation.
    pub caller: Option<Frame>,
    /// The immediate frame, when it was one of those (e.g.
    /// `reflect.mapassign_faststr0`); absent when it is the caller.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<Frame>,
    pub concurrent_write: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stack: Option<Vec<Frame>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fatal {
    #[serde(default)]
    pub ts: u64,
    pub pid: u32,
    pub message: String,
    pub goid: Option<u64>,
}

/// Another goroutine was writing the same map when this write began: the
/// race the Go runtime kills the process for ("concurrent map writes"),
/// reported before it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConcurrentWrite {
    pub ts: u64,
    pub pid: u32,
    pub op: Op,
    pub map: String,
    pub map_type: Option<String>,
    pub goid: Option<u64>,
    pub caller: Option<Frame>,
    /// The goroutine already writing, when the in-flight table knew it.
    pub other_goid: Option<u64>,
    pub other_caller: Option<Frame>,
}

/// Periodic aggregates (`watch -o json`), all from kernel maps: exact, never
/// derived from sampled or dropped events. Counts are totals since the start;
/// rates are per second over the last interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub ts: u64,
    pub interval_ms: u64,
    pub ops: OpCounts,
    /// Per (pid, map type, caller, op).
    pub rows: Vec<StatsRow>,
    /// (pid, map type, caller, op) combinations the kernel table had no room
    /// for; their operations are still in `ops`.
    pub rows_untracked: u64,
    /// The top keys of each of the busiest maps (`--top-maps`), most
    /// operations first.
    pub hot_keys: Vec<HotKey>,
    /// Maps with keys in the table whose hot keys are not named: past
    /// `--top-maps`, the quieter ones. Their keys are still in `map_keys`.
    #[serde(default)]
    pub hot_keys_maps_omitted: u64,
    /// Keys tracked per map (all of them, not only the top ones); the maps
    /// past `--top-maps` folded into one entry per process and map type.
    #[serde(default)]
    pub map_keys: Vec<MapKeys>,
    /// Operations the hot-key table could not count under their key since the start: those of a
    /// key waiting to get into a full set, and each key pushed out. Non-zero means a top list
    /// may miss a key, and key counts are lower bounds.
    pub hot_keys_evicted: u64,
    pub concurrent_writes: u64,
    pub delete_latency: Vec<LatencyHistogram>,
    pub drops: u64,
    /// `--max-overhead`: `ops` and row counts are estimates; hot keys,
    /// concurrent writes and latencies are what the windows saw.
    #[serde(flatten)]
    pub estimation: Estimation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    pub pid: u32,
    pub map_type: Option<String>,
    pub caller: Option<Frame>,
    pub op: Op,
    /// The immediate frame when the caller was found above wrappers (the busiest pc's).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<Frame>,
    pub count: u64,
    pub rate: f64,
    /// Length of the map (the last one seen from this row) before its last operation.
    pub map_len: u64,
    /// `watch --by-pc`: the caller's instruction; without it, a row holds
    /// every instruction of its caller line.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pc: Option<String>,
    #[serde(flatten)]
    pub estimate: RowEstimate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKey {
    pub pid: u32,
    pub map: String,
    pub map_type: Option<String>,
    pub key: Option<String>,
    pub key_truncated: bool,
    pub key_hash: String,
    pub deletes: u64,
    pub assigns: u64,
    /// `--max-overhead`: the counts are of the observed windows only, which
    /// saw this share of the process's operations (null: not known).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "share"
    )]
    pub observed_fraction: Option<Option<f64>>,
}

/// How many distinct keys of one map the hot-key table holds, and how many
/// of them were deleted at least once. Maps past `--top-maps` are folded,
/// per process and map type, into one entry whose `map` is `"other"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapKeys {
    pub pid: u32,
    pub map: String,
    pub map_type: Option<String>,
    pub keys: u64,
    pub keys_deleted: u64,
    /// Maps this entry holds: 1, or the number folded into `"other"`.
    #[serde(default = "one")]
    pub maps: u64,
}

fn one() -> u64 {
    1
}

/// Delete duration per map type, in log2 buckets: bucket `le_ns` counts
/// deletes that took less than `le_ns` and at least half of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    pub pid: u32,
    pub map_type: Option<String>,
    pub count: u64,
    pub sum_ns: u64,
    pub buckets: Vec<LatencyBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyBucket {
    pub le_ns: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detached {
    pub pid: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Exact, counted in the kernel before sampling, filtering or loss
    /// (estimates under `--max-overhead`: see `estimation`).
    pub ops: OpCounts,
    pub events_emitted: u64,
    /// Lost because the ring buffer was full.
    pub drops: u64,
    /// Skipped in the kernel by `--sample`.
    pub sampled_out: u64,
    /// Skipped in the kernel by `--max-events-per-sec`.
    #[serde(default)]
    pub rate_limited: u64,
    /// Received but not matching `--map-type` / `--key`.
    pub filtered_out: u64,
    /// Reads from the target that failed: the sum of `read_fault_causes`.
    #[serde(default)]
    pub read_faults: u64,
    #[serde(default)]
    pub read_fault_causes: ReadFaults,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_status: Option<i32>,
    /// `-- CMD` outlived the run (duration, Ctrl-C) and mapguard ended it:
    /// its status is then not the run's. In-process only, not on the wire.
    #[serde(skip)]
    pub command_stopped: bool,
    /// Cluster runs: events an agent sent that never arrived through its
    /// pod log (`events_emitted` counts what was sent).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub lost_in_transit: u64,
    #[serde(flatten)]
    pub estimation: Estimation,
}

/// What a probe could not read from the target, by what it was. The
/// operation is still counted; what is missing is named in the README
/// ("Read faults").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFaults {
    /// The key's bytes (or its type): the event has `key: null`.
    pub key: u64,
    /// The map's header: `map_len` 0 and no concurrent-write flag.
    pub map_header: u64,
    /// The goroutine id: `goid: null`.
    pub goid: u64,
    /// A frame above a wrapper: the caller is the immediate frame.
    pub caller_frame: u64,
}

impl ReadFaults {
    pub fn total(&self) -> u64 {
        self.key + self.map_header + self.goid + self.caller_frame
    }

    pub fn add(&mut self, o: &ReadFaults) {
        self.key += o.key;
        self.map_header += o.map_header;
        self.goid += o.goid;
        self.caller_frame += o.caller_frame;
    }
}

/// A 95% interval `[lo, hi]` of an estimated count; `hi` is null when no
/// window of the process was live yet (nothing bounds its count).
pub type Interval = (u64, Option<u64>);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpIntervals {
    pub delete: Interval,
    pub assign: Interval,
    pub clear: Interval,
}

impl OpIntervals {
    pub fn get(&self, op: Op) -> Interval {
        match op {
            Op::Delete => self.delete,
            Op::Assign => self.assign,
            Op::Clear => self.clear,
        }
    }
}

/// `--max-overhead`: how one process was observed since it was attached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub pid: u32,
    /// Share of its work during which its probes were live, its work
    /// weighed by `scaled_by`; null where it cannot be known (windows whose
    /// own CPU is lost in what their probes cost: a loop of nothing but map
    /// operations).
    #[serde(default)]
    pub observed_fraction: Option<f64>,
    /// What its windows were weighed against: `cpu` (its own CPU time, the
    /// probes' estimated cost taken out) or `syscalls` (its read and write
    /// system calls, which no probe adds to: chosen where they scale
    /// tighter, as for a service whose calls come with its requests).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scaled_by: String,
    /// Observation windows so far.
    pub windows: u64,
    /// Its own CPU time (probe cost taken out).
    pub cpu_ms: f64,
    /// What the probes are estimated to have cost it: hits × the calibrated
    /// trap, plus the program's own time as it timed itself.
    pub probe_cpu_ms: f64,
    /// probe ÷ own CPU over the last interval, in percent; in the summary,
    /// over the whole run.
    pub overhead_pct: f64,
    /// The bound it is held to (`--max-overhead`).
    pub max_overhead_pct: f64,
    /// How its windows open and shut: `text` (the probed byte written in
    /// its memory, microseconds) or `link` (probes attached and detached,
    /// milliseconds, when the kernel refuses the first).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub window_switch: String,
}

/// What a line's counts are when `--max-overhead` sampled them: all absent in
/// exact mode, where counts are exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimation {
    /// The counts are estimates: observed ÷ observed fraction.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub estimated: bool,
    /// Operations observed ÷ operations estimated; null when an estimate is
    /// open above (the share is not known).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "share"
    )]
    pub observed_fraction: Option<Option<f64>>,
    /// Exact counts of the operations that were probed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ops_observed: Option<OpCounts>,
    /// 95% intervals of `ops`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ops_interval: Option<OpIntervals>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub sampling: Vec<Sampling>,
}

/// A row's count when estimated: absent in exact mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowEstimate {
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub estimated: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count_observed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count_interval: Option<Interval>,
    /// The process's observed share (null: not known).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "share"
    )]
    pub observed_fraction: Option<Option<f64>>,
}

/// A share that an estimated line carries even when it is not known: null
/// there is `Some(None)`, and only an absent field (exact mode) is `None`.
fn share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `delete-audit`: what was seen, per audited process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub duration_ms: u64,
    /// Exact, from the kernel counters of every agent (estimates under
    /// `--max-overhead`: see `estimation`).
    pub ops: OpCounts,
    /// `--max-overhead`: the counts and rates are estimates; not a full audit.
    #[serde(flatten)]
    pub estimation: Estimation,
    pub targets: Vec<AuditTarget>,
    /// Per target, map type and caller.
    pub rows: Vec<AuditRow>,
    /// Per target and map type: distinct keys deleted, top deleted keys.
    pub keys: Vec<AuditKeys>,
    pub concurrent_writes: Vec<AuditFinding>,
    pub fatals: Vec<AuditFinding>,
    /// Problems that kept part of the audit from happening.
    pub errors: Vec<AuditFinding>,
    /// `-- CMD`: how the command ended (128+N for signal N). The verdict and
    /// the exit code stay the audit's own.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_status: Option<i32>,
    /// `--duration`, to set `duration_ms` against.
    #[serde(default)]
    pub requested_duration_ms: u64,
    /// A SIGINT or SIGTERM ended the audit before `--duration`: it covered
    /// `duration_ms` of `requested_duration_ms`, and is not a full audit.
    #[serde(default)]
    pub interrupted: bool,
}

impl Report {
    /// How much of the asked duration an interrupted audit covered, in
    /// words; None when it was not interrupted.
    pub fn interruption(&self) -> Option<String> {
        self.interrupted.then(|| {
            format!(
                "interrupted (SIGINT or SIGTERM) after {:.1}s of the {}s asked",
                self.duration_ms as f64 / 1000.0,
                seconds(self.requested_duration_ms)
            )
        })
    }
}

/// Whole seconds as `30`, anything finer as `2.5`.
fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditTarget {
    /// `namespace/pod/container` in a cluster, `pid N` here.
    pub target: String,
    pub pid: Option<u32>,
    pub exe: Option<String>,
    pub go_version: Option<String>,
    /// The map functions probed; `audited` is true once all of them were live.
    pub probes: Vec<String>,
    pub audited: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub target: String,
    pub map_type: Option<String>,
    pub caller: Option<Frame>,
    pub deletes: u64,
    pub assigns: u64,
    pub clears: u64,
    /// Deletes per second: the highest over any stats interval, and over the whole audit.
    pub peak_delete_rate: f64,
    pub mean_delete_rate: f64,
    /// `--max-overhead`: the delete count's 95% interval (the counts and
    /// rates are estimates).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletes_interval: Option<Interval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditKeys {
    pub target: String,
    pub map_type: Option<String>,
    pub distinct_keys_deleted: u64,
    /// True when the hot-key table evicted keys: the count is a lower bound.
    pub at_least: bool,
    pub top_deleted: Vec<KeyCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyCount {
    pub key: Option<String>,
    pub deletes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditFinding {
    pub target: Option<String>,
    pub message: String,
}

/// `delete-audit`'s policy verdict (the line before `summary`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    /// The audit could not run as asked (exit 2): never read this as a pass.
    pub could_not_audit: bool,
    pub violations: Vec<Outcome>,
    /// Every rule for every target, passed or not (JUnit's testcases).
    pub outcomes: Vec<Outcome>,
    /// `--max-overhead`: rules were decided on estimates, and the audit saw
    /// only part of the operations.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub rule: String,
    pub description: String,
    pub target: String,
    pub passed: bool,
    pub details: Vec<String>,
    /// How the outcome was decided when not on exact counts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorLine {
    pub message: String,
}

/// `check` of one binary (`check -o json`); agents send one per process of
/// a checked pod, with `pid` and `container_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckLine {
    pub path: String,
    pub traceable: bool,
    /// Why not, in a sentence; `reason_code` in a word (`not_found`, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason_code: Option<String>,
    /// Absent when the file could not be read as a Go binary.
    #[serde(flatten)]
    pub binary: Option<BinaryFacts>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryFacts {
    pub go_version: String,
    /// `buildinfo`, or `runtime` (read from the functions it links).
    pub version_source: String,
    /// `swiss` or `classic`.
    pub map_impl: String,
    pub experiments: Vec<String>,
    pub pie: bool,
    pub stripped: bool,
    /// `symtab` or `pclntab`.
    pub symbol_source: String,
    pub goid_offset: Option<u64>,
    /// `dwarf`, `table` or `unknown`.
    pub goid_source: String,
    pub probes: Vec<ProbeSite>,
    pub absent: Vec<AbsentFunction>,
}

/// A runtime function the agent probes, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSite {
    pub function: String,
    /// `delete`, `assign`, `clear` or `fatal`.
    pub op: String,
    pub key_kind: String,
    pub entry: String,
    pub address: String,
    pub file_offset: String,
    pub after_stack_check: bool,
}

/// A map function the binary does not have, or that could not be probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsentFunction {
    pub function: String,
    pub op: String,
    /// `not linked`, or `no probe site`.
    pub reason: String,
}

/// One JSON line. The cluster side adds `context`, `namespace`, `pod`,
/// `container` and `node` when it forwards lines from agent pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Attached(Attached),
    Event(Event),
    ConcurrentWrite(ConcurrentWrite),
    Fatal(Fatal),
    Stats(Stats),
    Detached(Detached),
    Summary(Summary),
    Error(ErrorLine),
    Report(Report),
    Verdict(Verdict),
    Check(CheckLine),
}

impl Line {
    /// The line as it goes on the wire: `{"v":1,"kind":...,...}`.
    pub fn to_json(&self) -> String {
        let body = serde_json::to_string(self).expect("protocol types serialize");
        // serde writes the internal tag first: `{"kind":...`; put `v` before it.
        format!("{{\"v\":{V},{}", &body[1..])
    }

    /// Parses one wire line, ignoring fields this version does not know.
    pub fn from_json(s: &str) -> Result<Line, String> {
        let value: serde_json::Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
        match value.get("v").and_then(|v| v.as_u64()) {
            Some(v) if v == V as u64 => {}
            Some(v) => return Err(format!("unsupported protocol version {v}")),
            None => return Err("missing protocol version \"v\"".into()),
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// A caller as one short phrase: `func (file.go:line)`, `?` when unknown.
pub fn caller_text(c: &Option<Frame>) -> String {
    c.as_ref().map_or("?".into(), |f| {
        let file = f.file.rsplit('/').next().unwrap_or(&f.file);
        format!("{} ({}:{})", f.func, file, f.line)
    })
}

/// A concurrent write, in a sentence (stderr, tables, audit findings).
pub fn concurrent_text(c: &ConcurrentWrite) -> String {
    let g = |g: Option<u64>| g.map_or("?".into(), |g| g.to_string());
    format!(
        "pid {}: concurrent write on {} {}: goroutine {} at {} while goroutine {} at {}",
        c.pid,
        c.map_type.as_deref().unwrap_or("?"),
        c.map,
        g(c.goid),
        caller_text(&c.caller),
        g(c.other_goid),
        caller_text(&c.other_caller)
    )
}

/// A fatal error, in a sentence.
pub fn fatal_text(f: &Fatal) -> String {
    format!("pid {}: fatal error: {}", f.pid, f.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_version_and_kind() {
        let line = Line::Detached(Detached {
            pid: 7,
            reason: "exited".into(),
        });
        let wire = line.to_json();
        assert!(wire.starts_with(r#"{"v":1,"kind":"detached","#), "{wire}");
        assert_eq!(Line::from_json(&wire).unwrap(), line);
    }

    #[test]
    fn wrong_version_is_refused() {
        let err = Line::from_json(r#"{"v":2,"kind":"error","message":"x"}"#).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
    }
}

/// Where a producer of lines (the agent, the cluster stream) writes them.
/// `flush` marks the end of a batch, so renderers can buffer in between.
pub trait LineSink {
    fn line(&mut self, line: &Line) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;

    /// A line forwarded from an agent pod, with where it came from.
    /// Renderers that cannot show the source print the bare line.
    fn tagged(&mut self, line: &Line, _source: &Source) -> std::io::Result<()> {
        self.line(line)
    }

    /// A SIGINT or SIGTERM ended the run before its duration did: the lines
    /// so far are all there will be. A stream needs nothing more; an audit
    /// that ran less than it was asked to is not a full one.
    fn stopped_early(&mut self) {}
}

/// Where a forwarded line came from: the kube context and node of the agent
/// pod, and the traced pod and container when the line names one process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub context: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container: Option<String>,
}

impl Line {
    /// The wire form with the source's fields added after the line's own.
    pub fn to_json_tagged(&self, source: &Source) -> String {
        let line = self.to_json();
        let tags = serde_json::to_string(source).expect("source serializes");
        // Both are objects: `{..line..}` + `{..tags..}` -> `{..line..,..tags..}`.
        format!("{},{}", &line[..line.len() - 1], &tags[1..])
    }
}
