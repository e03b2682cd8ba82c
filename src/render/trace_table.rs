//! `trace -o table|wide`: one aligned row per event, streamed (a table that
//! waited for the end could not follow a live process). Lifecycle lines and
//! the summary are progress, so they go to stderr.

use super::printable;
use crate::protocol::{Event, Line, LineSink, Source};
use std::io::Write;

pub struct TraceTable<W: Write, E: Write> {
    out: std::io::BufWriter<W>,
    err: E,
    wide: bool,
    header_done: bool,
    /// Cluster mode: a POD column (namespace/pod) leads each row.
    pod_column: bool,
    pod: String,
}

const KEY_WIDTH: usize = 32;

impl<W: Write, E: Write> TraceTable<W, E> {
    pub fn new(out: W, err: E, wide: bool) -> Self {
        TraceTable {
            out: std::io::BufWriter::new(out),
            err,
            wide,
            header_done: false,
            pod_column: false,
            pod: String::new(),
        }
    }

    /// Rows only (`--no-headers`).
    pub fn without_header(mut self) -> Self {
        self.header_done = true;
        self
    }

    /// Rows start with the traced pod, for streams merged from many pods.
    pub fn with_pod_column(mut self) -> Self {
        self.pod_column = true;
        self
    }

    fn header(&mut self) -> std::io::Result<()> {
        if self.pod_column {
            write!(self.out, "{:<32} ", "POD")?;
        }
        if self.wide {
            writeln!(
                self.out,
                "{:<12} {:<7} {:<7} {:<7} {:<6} {:<14} {:<28} {:>6} {:<32} {:<2} CALLER",
                "TIME", "PID", "TID", "GOID", "OP", "MAP", "MAP_TYPE", "LEN", "KEY", "CW"
            )
        } else {
            writeln!(
                self.out,
                "{:<12} {:<7} {:<7} {:<6} {:<28} {:<32} CALLER",
                "TIME", "PID", "GOID", "OP", "MAP_TYPE", "KEY"
            )
        }
    }

    fn row(&mut self, ev: &Event) -> std::io::Result<()> {
        let time = clock(ev.ts);
        let goid = ev.goid.map_or("-".to_string(), |g| g.to_string());
        let map_type = ev.map_type.as_deref().unwrap_or("?");
        let mut key = ev.key.as_deref().map_or("-".to_string(), printable);
        if ev.key_truncated {
            key.push('…');
        }
        let key = clip(&key, KEY_WIDTH);
        if self.pod_column {
            write!(self.out, "{:<32} ", clip(&self.pod, 32))?;
        }
        let caller = if self.wide {
            super::caller_via_text(&ev.caller, &ev.via)
        } else {
            ev.caller.as_ref().map_or("?".to_string(), |c| {
                let file = c.file.rsplit('/').next().unwrap_or(&c.file);
                format!("{}:{}", file, c.line)
            })
        };
        if self.wide {
            writeln!(
                self.out,
                "{:<12} {:<7} {:<7} {:<7} {:<6} {:<14} {:<28} {:>6} {:<32} {:<2} {}",
                time,
                ev.pid,
                ev.tid,
                goid,
                ev.op.as_str(),
                ev.map,
                map_type,
                ev.map_len,
                key,
                if ev.concurrent_write { "!" } else { "" },
                caller
            )?;
        } else {
            writeln!(
                self.out,
                "{:<12} {:<7} {:<7} {:<6} {:<28} {:<32} {}",
                time,
                ev.pid,
                goid,
                ev.op.as_str(),
                map_type,
                key,
                caller
            )?;
        }
        if let Some(stack) = &ev.stack {
            for f in stack {
                writeln!(self.out, "    {} {}:{}", f.func, f.file, f.line)?;
            }
        }
        Ok(())
    }
}

impl<W: Write, E: Write> LineSink for TraceTable<W, E> {
    fn tagged(&mut self, line: &Line, source: &Source) -> std::io::Result<()> {
        self.pod = match (&source.namespace, &source.pod) {
            (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
            _ => format!("node/{}", source.node),
        };
        self.line(line)
    }

    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        match line {
            Line::Event(ev) => {
                if !self.header_done {
                    self.header()?;
                    self.header_done = true;
                }
                self.row(ev)
            }
            Line::Attached(a) => writeln!(
                self.err,
                "attached to pid {} ({}, {}, {} maps, {} probes)",
                a.pid,
                a.exe,
                a.go_version,
                a.map_impl,
                a.probes.len()
            ),
            Line::Detached(d) => writeln!(self.err, "detached from pid {}: {}", d.pid, d.reason),
            Line::Fatal(f) => writeln!(self.err, "{}", super::fatal_text(f)),
            Line::ConcurrentWrite(c) => writeln!(self.err, "{}", super::concurrent_text(c)),
            // trace asks the kernel for no aggregates; audits render themselves.
            Line::Stats(_) | Line::Report(_) | Line::Verdict(_) | Line::Check(_) => Ok(()),
            Line::Error(e) => writeln!(self.err, "error: {}", e.message),
            Line::Summary(s) => {
                let mut text = format!(
                    "{}; {} events shown, {} dropped, {} sampled out, {} filtered out in {:.1}s",
                    super::ops_text(&s.ops, &s.estimation),
                    s.events_emitted - s.lost_in_transit.min(s.events_emitted),
                    s.drops,
                    s.sampled_out,
                    s.filtered_out,
                    s.duration_ms as f64 / 1000.0
                );
                // Said only when the limit held some back, as lost_in_transit:
                // every event is then shown, dropped or accounted for here.
                if s.rate_limited > 0 {
                    text.push_str(&format!(
                        "; {} held back by --max-events-per-sec",
                        s.rate_limited
                    ));
                }
                if s.lost_in_transit > 0 {
                    text.push_str(&format!(
                        "; {} lost in transit (the pod logs)",
                        s.lost_in_transit
                    ));
                }
                if s.read_faults > 0 {
                    let c = &s.read_fault_causes;
                    text.push_str(&format!(
                        "; {} read faults ({} keys, {} map headers, {} goroutine ids, {} caller frames: README \"Read faults\")",
                        s.read_faults, c.key, c.map_header, c.goid, c.caller_frame
                    ));
                }
                if let Some(status) = s.exit_status {
                    text.push_str(&format!("; command exited with status {status}"));
                }
                writeln!(self.err, "{text}")
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }
}

fn clock(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms
    )
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}
