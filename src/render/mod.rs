//! Renderers: the stream as JSON lines, or as a table a person reads.
//! Data goes to stdout; progress and diagnostics to stderr.

mod trace_table;

pub use trace_table::TraceTable;

use crate::protocol::{Line, LineSink};
use std::io::Write;

/// JSON lines on stdout, exactly as PROTOCOL.md writes them.
pub struct JsonLines<W: Write> {
    out: std::io::BufWriter<W>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines {
            out: std::io::BufWriter::with_capacity(1 << 16, out),
        }
    }
}

impl<W: Write> LineSink for JsonLines<W> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        writeln!(self.out, "{}", line.to_json())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
