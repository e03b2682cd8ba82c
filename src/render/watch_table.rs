//! `watch -o table`: per interval, rates per map type and caller, the hot
//! keys of each map, delete latency, and concurrent-write alarms. On a
//! terminal the screen is redrawn in place; piped, each interval is a block.

use super::{caller_text, concurrent_text, fatal_text};
use crate::protocol::{Line, LineSink, Op, Stats};
use comfy_table::{presets::NOTHING, Cell, CellAlignment, Table};
use std::collections::BTreeMap;
use std::io::Write;

const ALARMS_KEPT: usize = 10;

pub struct WatchTable<W: Write, E: Write> {
    out: W,
    err: E,
    redraw: bool,
    alarms: Vec<String>,
}

impl<W: Write, E: Write> WatchTable<W, E> {
    /// `redraw`: clear and repaint the screen each interval (stdout is a terminal).
    pub fn new(out: W, err: E, redraw: bool) -> Self {
        WatchTable {
            out,
            err,
            redraw,
            alarms: Vec::new(),
        }
    }

    fn alarm(&mut self, text: String) -> std::io::Result<()> {
        writeln!(self.err, "{text}")?;
        self.alarms.push(text);
        if self.alarms.len() > ALARMS_KEPT {
            self.alarms.remove(0);
        }
        Ok(())
    }

    fn render(&mut self, s: &Stats) -> std::io::Result<()> {
        let mut text = String::new();
        if self.redraw {
            text.push_str("\x1b[H\x1b[2J");
        }
        text.push_str(&format!(
            "{} deletes, {} assigns, {} clears (exact) · {} concurrent writes · {} events dropped\n\n",
            s.ops.delete, s.ops.assign, s.ops.clear, s.concurrent_writes, s.drops
        ));
        text.push_str(&rates_table(s).to_string());
        text.push('\n');
        if s.rows_untracked > 0 {
            text.push_str(&format!(
                "{} operations fell outside the per-caller table (full); the totals above include them\n",
                s.rows_untracked
            ));
        }
        if !s.hot_keys.is_empty() {
            text.push_str("\nHOT KEYS\n");
            text.push_str(&hot_keys_table(s).to_string());
            text.push('\n');
        }
        if s.hot_keys_evicted > 0 {
            text.push_str(&format!(
                "{} operations went to keys the hot-key table could not hold: a hot key may be missing or undercounted (raise --hot-keys-size)\n",
                s.hot_keys_evicted
            ));
        }
        if !s.delete_latency.is_empty() {
            text.push_str("\nDELETE LATENCY\n");
            text.push_str(&latency_table(s).to_string());
            text.push('\n');
        }
        if !self.alarms.is_empty() {
            text.push_str("\nALARMS\n");
            for a in &self.alarms {
                text.push_str(a);
                text.push('\n');
            }
        }
        if !self.redraw {
            text.push('\n');
        }
        self.out.write_all(text.as_bytes())
    }
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().map(|h| Cell::new(h)));
    t
}

fn right(t: &mut Table, from: usize) {
    for i in from..t.column_count() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn rates_table(s: &Stats) -> Table {
    // One line per (pid, map type, caller), the three ops side by side.
    let mut lines: BTreeMap<(u32, String, String), ([f64; 3], [u64; 3], u64)> = BTreeMap::new();
    for r in &s.rows {
        let key = (
            r.pid,
            r.map_type.clone().unwrap_or_else(|| "?".into()),
            caller_text(&r.caller),
        );
        let e = lines.entry(key).or_default();
        let i = Op::ALL.iter().position(|&o| o == r.op).unwrap_or(0);
        e.0[i] += r.rate;
        e.1[i] += r.count;
        e.2 = e.2.max(r.map_len);
    }
    let mut sorted: Vec<_> = lines.into_iter().collect();
    sorted.sort_by(|a, b| {
        let total = |v: &([f64; 3], [u64; 3], u64)| v.0.iter().sum::<f64>();
        total(&b.1).total_cmp(&total(&a.1))
    });
    let hidden = sorted.len().saturating_sub(ROWS_SHOWN);
    let mut t = table(&[
        "PID",
        "MAP TYPE",
        "CALLER",
        "DELETES/s",
        "ASSIGNS/s",
        "CLEARS/s",
        "DELETES",
        "ASSIGNS",
        "CLEARS",
        "LEN",
    ]);
    for ((pid, map_type, caller), (rate, count, len)) in sorted.into_iter().take(ROWS_SHOWN) {
        t.add_row(vec![
            pid.to_string(),
            map_type,
            caller,
            format!("{:.1}", rate[0]),
            format!("{:.1}", rate[1]),
            format!("{:.1}", rate[2]),
            count[0].to_string(),
            count[1].to_string(),
            count[2].to_string(),
            len.to_string(),
        ]);
    }
    if hidden > 0 {
        t.add_row(vec![
            String::new(),
            format!("(+{hidden} quieter callers; -o json lists all)"),
        ]);
    }
    right(&mut t, 3);
    t
}

/// Busiest (map type, caller) lines the table shows.
const ROWS_SHOWN: usize = 20;

/// Maps whose hot keys the table shows; `-o json` carries them all.
const HOT_MAPS_SHOWN: usize = 10;

fn hot_keys_table(s: &Stats) -> Table {
    // `hot_keys` comes busiest first; keep the first maps to appear.
    let mut maps: Vec<(u32, &str)> = Vec::new();
    for k in &s.hot_keys {
        if maps.len() < HOT_MAPS_SHOWN && !maps.contains(&(k.pid, k.map.as_str())) {
            maps.push((k.pid, k.map.as_str()));
        }
    }
    let mut t = table(&["PID", "MAP", "MAP TYPE", "KEY", "DELETES", "ASSIGNS"]);
    for &(pid, map) in &maps {
        for k in s.hot_keys.iter().filter(|k| k.pid == pid && k.map == map) {
            let mut key: String = k.key.clone().unwrap_or_else(|| k.key_hash.clone());
            key = key
                .chars()
                .map(|c| if c.is_control() { '·' } else { c })
                .take(48)
                .collect();
            if k.key_truncated {
                key.push('…');
            }
            t.add_row(vec![
                k.pid.to_string(),
                k.map.clone(),
                k.map_type.clone().unwrap_or_else(|| "?".into()),
                key,
                k.deletes.to_string(),
                k.assigns.to_string(),
            ]);
        }
    }
    right(&mut t, 4);
    t
}

fn latency_table(s: &Stats) -> Table {
    let mut t = table(&["PID", "MAP TYPE", "DELETES", "MEAN", "P50 <", "P99 <"]);
    for h in &s.delete_latency {
        let quantile = |q: f64| -> u64 {
            let want = (h.count as f64 * q).ceil() as u64;
            let mut seen = 0;
            for b in &h.buckets {
                seen += b.count;
                if seen >= want {
                    return b.le_ns;
                }
            }
            h.buckets.last().map_or(0, |b| b.le_ns)
        };
        t.add_row(vec![
            h.pid.to_string(),
            h.map_type.clone().unwrap_or_else(|| "?".into()),
            h.count.to_string(),
            ns(h.sum_ns / h.count.max(1)),
            ns(quantile(0.5)),
            ns(quantile(0.99)),
        ]);
    }
    right(&mut t, 2);
    t
}

fn ns(v: u64) -> String {
    match v {
        0..=9_999 => format!("{v}ns"),
        10_000..=9_999_999 => format!("{:.1}µs", v as f64 / 1e3),
        _ => format!("{:.1}ms", v as f64 / 1e6),
    }
}

impl<W: Write, E: Write> LineSink for WatchTable<W, E> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        match line {
            Line::Stats(s) => self.render(s),
            Line::ConcurrentWrite(c) => self.alarm(concurrent_text(c)),
            Line::Fatal(f) => self.alarm(fatal_text(f)),
            Line::Attached(a) => writeln!(
                self.err,
                "watching pid {} ({}, {}, {} maps)",
                a.pid, a.exe, a.go_version, a.map_impl
            ),
            Line::Detached(d) => writeln!(self.err, "detached from pid {}: {}", d.pid, d.reason),
            Line::Error(e) => writeln!(self.err, "error: {}", e.message),
            Line::Summary(s) => {
                let mut text = format!(
                    "{} deletes, {} assigns, {} clears (exact) in {:.1}s",
                    s.ops.delete,
                    s.ops.assign,
                    s.ops.clear,
                    s.duration_ms as f64 / 1000.0
                );
                if let Some(status) = s.exit_status {
                    text.push_str(&format!("; command exited with status {status}"));
                }
                writeln!(self.err, "{text}")
            }
            // watch asks the kernel for no per-operation events; audits render themselves.
            Line::Event(_) | Line::Report(_) | Line::Verdict(_) | Line::Check(_) => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }
}
