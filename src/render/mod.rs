//! Renderers: the stream as JSON lines, or as a table a person reads.
//! Data goes to stdout; progress and diagnostics to stderr.

pub mod audit_table;
pub mod check_pods;
mod junit;
pub mod prometheus;
mod trace_table;
mod watch_table;

pub use trace_table::TraceTable;
pub use watch_table::WatchTable;

pub(crate) use crate::protocol::{caller_text, concurrent_text, fatal_text};
use crate::protocol::{Frame, Line, LineSink, Source};
use std::io::Write;

/// A run whose output could not be written (a full disk, a closed stdout)
/// stops and says so, exit 2; a reader that left (`| head`) is no error.
pub const WRITE_FAILED: &str =
    "writing the output failed, so the run stopped there (what was written before it is all there is)";

/// How `trace` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    Table,
    Wide,
    Json,
    Yaml,
}

/// How `watch` prints: a refreshing table (shortened names, or whole), or
/// one `stats` line per interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFormat {
    Table,
    Wide,
    Json,
    Yaml,
}

/// How `delete-audit` prints its report and verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditFormat {
    Table,
    Json,
    Junit,
    Yaml,
}

/// How `check` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckFormat {
    Table,
    Json,
    Yaml,
}

/// The benchmark baseline's one result line (not part of the protocol).
pub fn bare_probe(hits: u64, exit_status: i32) -> std::io::Result<()> {
    writeln!(
        std::io::stdout(),
        r#"{{"v":1,"kind":"bare_probe","hits":{hits},"exit_status":{exit_status}}}"#
    )
}

/// JSON lines on stdout, exactly as PROTOCOL.md writes them (or, for `-o
/// yaml`, each line as a YAML document).
pub struct JsonLines<W: Write> {
    out: std::io::BufWriter<W>,
    yaml: bool,
    /// Also say each `error` line on stderr, as the tables do: a person
    /// watching `-o json` scroll by sees what failed, and stdout stays data.
    echo_errors: bool,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines {
            out: std::io::BufWriter::with_capacity(1 << 16, out),
            yaml: false,
            echo_errors: false,
        }
    }

    /// The CLI's own `-o json|yaml` (not an agent's stdout, which is data only).
    pub fn echoing_errors(self) -> Self {
        JsonLines {
            echo_errors: true,
            ..self
        }
    }

    pub fn yaml(out: W) -> Self {
        JsonLines {
            yaml: true,
            ..JsonLines::new(out)
        }
    }

    fn write(&mut self, line: &Line, json: String) -> std::io::Result<()> {
        if let (true, Line::Error(e)) = (self.echo_errors, line) {
            eprintln!("error: {}", e.message);
        }
        if self.yaml {
            self.out.write_all(yaml_doc(&json).as_bytes())
        } else {
            writeln!(self.out, "{json}")
        }
    }
}

impl<W: Write> LineSink for JsonLines<W> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.write(line, line.to_json())
    }

    fn tagged(&mut self, line: &Line, source: &Source) -> std::io::Result<()> {
        self.write(line, line.to_json_tagged(source))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// One protocol line as a YAML document, `---` first, the way `kubectl get -w
/// -o yaml` streams objects. JSON is valid YAML, so a line that somehow does
/// not convert is written as it is rather than lost.
pub fn yaml_doc(json: &str) -> String {
    let yaml = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_yaml_ng::to_string(&v).ok());
    match yaml {
        Some(y) => format!("---\n{y}"),
        None => format!("---\n{json}\n"),
    }
}

/// `trace`'s stdout: JSON lines, YAML documents, or rows (with a POD column
/// for cluster streams).
pub fn trace_output(format: TraceFormat, no_headers: bool, pod_column: bool) -> Box<dyn LineSink> {
    let wide = match format {
        TraceFormat::Json => return Box::new(JsonLines::new(std::io::stdout()).echoing_errors()),
        TraceFormat::Yaml => return Box::new(JsonLines::yaml(std::io::stdout()).echoing_errors()),
        TraceFormat::Table => false,
        TraceFormat::Wide => true,
    };
    let mut table = TraceTable::new(std::io::stdout(), std::io::stderr(), wide);
    if no_headers {
        table = table.without_header();
    }
    if pod_column {
        Box::new(table.with_pod_column())
    } else {
        Box::new(table)
    }
}

/// `watch`'s stdout: JSON lines, YAML documents, or a table that redraws in
/// place on a terminal.
pub fn watch_output(format: WatchFormat) -> Box<dyn LineSink> {
    use std::io::IsTerminal;
    match format {
        WatchFormat::Json => return Box::new(JsonLines::new(std::io::stdout()).echoing_errors()),
        WatchFormat::Yaml => return Box::new(JsonLines::yaml(std::io::stdout()).echoing_errors()),
        WatchFormat::Table | WatchFormat::Wide => {}
    }
    let redraw = std::io::stdout().is_terminal();
    let mut table = WatchTable::new(std::io::stdout(), std::io::stderr(), redraw);
    if format == WatchFormat::Wide {
        table.show_via();
    } else if redraw {
        table.fit_to(watch_table::terminal_size);
    }
    Box::new(table)
}

/// Keys, type and function names, file names and policy texts are the
/// traced program's or the user's: a control character (ESC, NUL, a newline)
/// would reach the terminal or split a row, so each becomes `·`.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .collect()
}

/// The counts per operation, exact or estimated (then with their intervals
/// and how much was observed).
pub(crate) fn ops_text(ops: &crate::protocol::OpCounts, e: &crate::protocol::Estimation) -> String {
    match (&e.ops_interval, e.observed_fraction) {
        (Some(iv), Some(f)) if e.estimated => format!(
            "{} deletes, {} assigns, {} clears (estimated, 95% intervals: --max-overhead, {} of operations observed)",
            estimate_text(ops.delete, iv.delete),
            estimate_text(ops.assign, iv.assign),
            estimate_text(ops.clear, iv.clear),
            share(f),
        ),
        _ => format!(
            "{} deletes, {} assigns, {} clears (exact)",
            ops.delete, ops.assign, ops.clear
        ),
    }
}

/// `cleanup`'s stdout: one line per agent pod deleted, as kubectl says it.
pub fn deleted_pod(name: &str, namespace: &str, context: &str) -> String {
    format!("pod \"{name}\" deleted (namespace {namespace}, context {context})\n")
}

/// `-o wide`: the caller, then the wrapper frame it called through.
pub(crate) fn caller_via_text(c: &Option<Frame>, via: &Option<Frame>) -> String {
    match via {
        Some(_) => format!("{} via {}", caller_text(c), caller_text(via)),
        None => caller_text(c),
    }
}

/// An estimated count as the tables print it: `≈1234 (1100–1400)`, or
/// `≈1234 (≥1100)` when nothing bounds it above.
pub(crate) fn estimate_text(count: u64, interval: crate::protocol::Interval) -> String {
    match interval.1 {
        Some(hi) => format!("≈{count} ({}–{hi})", interval.0),
        None => format!("≈{count} (≥{}, unbounded)", interval.0),
    }
}

/// A share that may not be known (`--max-overhead` over a loop of nothing
/// but map operations), in words.
pub(crate) fn share(share: Option<f64>) -> String {
    share.map_or_else(|| "an unknown share".to_string(), percent)
}

/// A share as a percentage with the digits a small one needs: 12%, 0.13%.
pub(crate) fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p >= 10.0 {
        format!("{p:.0}%")
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}
