//! `watch -o table`: per interval, rates per map type and caller, the hot
//! keys of each map, delete latency, and concurrent-write alarms. On a
//! terminal the screen is redrawn in place; piped, each interval is a block.

use super::{caller_text, caller_via_text, concurrent_text, fatal_text};
use crate::estimate::Estimate;
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
    /// The screen to fit each frame to, (columns, lines), read anew each
    /// interval (terminals get resized); None: names whole, rows as they come.
    screen: Option<ScreenSize>,
    /// `-o wide`: callers found above wrappers say which one (`via`).
    via: bool,
}

/// Reads a screen's (columns, lines), when there is one.
pub type ScreenSize = fn() -> Option<(usize, usize)>;

/// The terminal's size, when stdout (or the controlling terminal) is one.
pub fn terminal_size() -> Option<(usize, usize)> {
    let (cols, rows) = crossterm::terminal::size().ok()?;
    (cols > 0 && rows > 0).then_some((cols as usize, rows as usize))
}

/// `text` in at most `max` characters, its middle given up for `…`: the
/// start and the end of a type or function name say the most.
pub fn shorten(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    if max <= 1 {
        return "…".chars().take(max).collect();
    }
    let keep = max - 1;
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(n - tail));
    out
}

/// A line no wider than `cols`: cut at its end (the tables fit by
/// themselves; this keeps a long notice from wrapping).
fn cut_line(line: &str, cols: usize) -> String {
    if line.chars().count() <= cols {
        return line.to_string();
    }
    let mut out: String = line.chars().take(cols.saturating_sub(1)).collect();
    out.push('…');
    out
}

impl<W: Write, E: Write> WatchTable<W, E> {
    /// `redraw`: clear and repaint the screen each interval (stdout is a terminal).
    pub fn new(out: W, err: E, redraw: bool) -> Self {
        WatchTable {
            out,
            err,
            redraw,
            alarms: Vec::new(),
            screen: None,
            via: false,
        }
    }

    /// Fit each frame to the screen `size` reports: the summary, the rates
    /// header and the busiest rows first, long names shortened, and nothing
    /// past the last line (which would scroll the top away).
    pub fn fit_to(&mut self, size: ScreenSize) {
        self.screen = Some(size);
    }

    pub fn show_via(&mut self) {
        self.via = true;
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
        let screen = self.screen.and_then(|size| size());
        let mut text = String::new();
        text.push_str(&totals_line(s));
        let (rates, hidden) = rates_table(s, screen, self.via);
        text.push_str(&rates.to_string());
        text.push('\n');
        if hidden > 0 {
            text.push_str(&format!("(+{hidden} quieter callers; -o json lists all)\n"));
        }
        if s.rows_untracked > 0 {
            text.push_str(&format!(
                "{} operations fell outside the per-caller table (full); the totals above include them\n",
                s.rows_untracked
            ));
        }
        if !s.hot_keys.is_empty() {
            match s
                .estimation
                .observed_fraction
                .filter(|_| s.estimation.estimated)
            {
                Some(f) => text.push_str(&format!(
                    "\nHOT KEYS (counted in the observed windows only: {} of operations)\n",
                    super::share(f)
                )),
                None => text.push_str("\nHOT KEYS\n"),
            }
            text.push_str(&hot_keys_table(s, screen).to_string());
            text.push('\n');
        }
        if s.hot_keys_maps_omitted > 0 {
            text.push_str(&format!(
                "(+{} quieter maps with keys not named past --top-maps; their keys count in map_keys)\n",
                s.hot_keys_maps_omitted
            ));
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
        if let Some((cols, lines)) = screen {
            // The last line stays empty: writing there would scroll.
            let kept: Vec<String> = text
                .lines()
                .take(lines.saturating_sub(1))
                .map(|l| cut_line(l, cols))
                .collect();
            text = kept.join("\n");
            text.push('\n');
        }
        if self.redraw {
            text.insert_str(0, "\x1b[H\x1b[2J");
        } else {
            text.push('\n');
        }
        self.out.write_all(text.as_bytes())
    }
}

/// The first line: the totals, exact or estimated (then with their
/// intervals and how much was observed).
fn totals_line(s: &Stats) -> String {
    let seen = if s.estimation.estimated { " seen" } else { "" };
    format!(
        "{} · {} concurrent writes{seen} · {} events dropped\n\n",
        super::ops_text(&s.ops, &s.estimation),
        s.concurrent_writes,
        s.drops
    )
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(headers.iter().map(Cell::new));
    t
}

fn right(t: &mut Table, from: usize) {
    for i in from..t.column_count() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Lines the summary, a blank, the rates header, the "+N quieter" line and
/// the empty last line take on a fitted screen.
const RATES_FRAME: usize = 5;
/// Narrower than this, a name says nothing.
const MIN_NAME: usize = 8;

/// The rates table, and how many quieter lines it left out.
fn rates_table(s: &Stats, screen: Option<(usize, usize)>, via: bool) -> (Table, usize) {
    // One line per (pid, map type, caller), the three ops side by side.
    // (rates, counts, map length) per op, for each (pid, map type, caller).
    type Line = ([f64; 3], [Estimate; 3], u64);
    let estimated = s.estimation.estimated;
    let mut lines: BTreeMap<(u32, String, String), Line> = BTreeMap::new();
    for r in &s.rows {
        let key = (
            r.pid,
            r.map_type.clone().unwrap_or_else(|| "?".into()),
            if via {
                caller_via_text(&r.caller, &r.via)
            } else {
                caller_text(&r.caller)
            },
        );
        let e = lines.entry(key).or_default();
        let i = Op::ALL.iter().position(|&o| o == r.op).unwrap_or(0);
        e.0[i] += r.rate;
        e.1[i].add(&match r.estimate.count_interval {
            Some(iv) => Estimate::from_wire(r.estimate.count_observed.unwrap_or(0), r.count, iv),
            None => Estimate::exact(r.count),
        });
        e.2 = e.2.max(r.map_len);
    }
    let mut sorted: Vec<_> = lines.into_iter().collect();
    sorted.sort_by(|a, b| {
        let total = |v: &Line| v.0.iter().sum::<f64>();
        total(&b.1).total_cmp(&total(&a.1))
    });
    let shown = screen.map_or(ROWS_SHOWN, |(_, h)| {
        h.saturating_sub(RATES_FRAME).clamp(1, ROWS_SHOWN)
    });
    let hidden = sorted.len().saturating_sub(shown);
    let rows: Vec<Vec<String>> = sorted
        .into_iter()
        .take(shown)
        .map(|((pid, map_type, caller), (rate_v, count_v, len))| {
            let rate = |v: f64| {
                if estimated {
                    format!("≈{v:.1}")
                } else {
                    format!("{v:.1}")
                }
            };
            let count = |e: &Estimate| {
                // A caller that never did this op has nothing to estimate.
                if estimated && e.value > 0.0 {
                    super::estimate_text(e.count(), e.interval())
                } else {
                    e.count().to_string()
                }
            };
            vec![
                pid.to_string(),
                map_type,
                caller,
                rate(rate_v[0]),
                rate(rate_v[1]),
                rate(rate_v[2]),
                count(&count_v[0]),
                count(&count_v[1]),
                count(&count_v[2]),
                len.to_string(),
            ]
        })
        .collect();
    // Narrow: the totals and the length go before a name is cut to nothing.
    let mut t = fitted(&RATE_HEADERS, rows, screen, &[1, 2], &[9, 8, 7, 6]);
    right(&mut t, 3);
    (t, hidden)
}

const RATE_HEADERS: [&str; 10] = [
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
];

/// A table of `rows` under `headers`. With a `screen`, it fits its width:
/// the `droppable` columns go (in that order) while the rest cannot fit with
/// every name at least MIN_NAME wide, then the `shrinkable` ones are
/// shortened in the middle, in proportion to their widths. A caller's
/// "(file:line)" is never cut.
fn fitted(
    headers: &[&str],
    mut rows: Vec<Vec<String>>,
    screen: Option<(usize, usize)>,
    shrinkable: &[usize],
    droppable: &[usize],
) -> Table {
    let mut keep = vec![true; headers.len()];
    if let Some((cols, _)) = screen {
        let width = |i: usize, rows: &[Vec<String>]| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..headers.len()).map(|i| width(i, &rows)).collect();
        // A name keeps MIN_NAME characters and its whole "(file:line)".
        let mins: Vec<usize> = (0..headers.len())
            .map(|i| {
                let tail = rows
                    .iter()
                    .map(|r| protected_tail(&r[i]))
                    .max()
                    .unwrap_or(0);
                widths[i].min(MIN_NAME + tail)
            })
            .collect();
        // Every column is its widest cell plus two of padding.
        let need = |keep: &[bool]| -> usize {
            (0..headers.len())
                .filter(|&i| keep[i])
                .map(|i| {
                    2 + if shrinkable.contains(&i) {
                        mins[i]
                    } else {
                        widths[i]
                    }
                })
                .sum()
        };
        for &d in droppable {
            if need(&keep) <= cols {
                break;
            }
            keep[d] = false;
        }
        let fixed: usize = (0..headers.len())
            .filter(|&i| keep[i] && !shrinkable.contains(&i))
            .map(|i| widths[i] + 2)
            .sum::<usize>()
            + 2 * shrinkable.len();
        let room = cols.saturating_sub(fixed);
        let wanted: usize = shrinkable.iter().map(|&i| widths[i]).sum();
        if wanted > room {
            // Each name its minimum, and what is left shared in proportion
            // to what each would need beyond it.
            let floor: usize = shrinkable.iter().map(|&i| mins[i]).sum();
            let extra = room.saturating_sub(floor);
            let beyond = (wanted - floor).max(1);
            for &i in shrinkable {
                let max = mins[i] + extra * (widths[i] - mins[i]) / beyond;
                for r in rows.iter_mut() {
                    r[i] = shorten_name(&r[i], max);
                }
            }
        }
    }
    let kept = |cells: &[String]| -> Vec<String> {
        cells
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(c, _)| c.clone())
            .collect()
    };
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut t = table(&kept(&header).iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        t.add_row(kept(&r));
    }
    t
}

/// The length of a cell's trailing " (file:line)", which fitting keeps.
fn protected_tail(text: &str) -> usize {
    match text.rfind(" (").filter(|_| text.ends_with(')')) {
        Some(at) => text[at..].chars().count(),
        None => 0,
    }
}

/// [`shorten`], but a trailing " (file:line)" stays whole.
fn shorten_name(text: &str, max: usize) -> String {
    let tail = protected_tail(text);
    if tail == 0 {
        return shorten(text, max);
    }
    let (name, loc) = text.split_at(text.len() - text[text.len() - tail..].len());
    format!("{}{loc}", shorten(name, max.saturating_sub(tail).max(1)))
}

/// Busiest (map type, caller) lines the table shows.
const ROWS_SHOWN: usize = 20;

/// Maps whose hot keys the table shows; `-o json` carries `--top-maps`.
const HOT_MAPS_SHOWN: usize = 10;

fn hot_keys_table(s: &Stats, screen: Option<(usize, usize)>) -> Table {
    // `hot_keys` comes busiest first; keep the first maps to appear.
    let mut maps: Vec<(u32, &str)> = Vec::new();
    for k in &s.hot_keys {
        if maps.len() < HOT_MAPS_SHOWN && !maps.contains(&(k.pid, k.map.as_str())) {
            maps.push((k.pid, k.map.as_str()));
        }
    }
    let mut rows = Vec::new();
    for &(pid, map) in &maps {
        for k in s.hot_keys.iter().filter(|k| k.pid == pid && k.map == map) {
            let mut key: String = k.key.clone().unwrap_or_else(|| k.key_hash.clone());
            key = super::printable(&key).chars().take(48).collect();
            if k.key_truncated {
                key.push('…');
            }
            rows.push(vec![
                k.pid.to_string(),
                k.map.clone(),
                k.map_type.clone().unwrap_or_else(|| "?".into()),
                key,
                k.deletes.to_string(),
                k.assigns.to_string(),
            ]);
        }
    }
    let headers = ["PID", "MAP", "MAP TYPE", "KEY", "DELETES", "ASSIGNS"];
    let mut t = fitted(&headers, rows, screen, &[2, 3], &[]);
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
                    "{} in {:.1}s",
                    super::ops_text(&s.ops, &s.estimation),
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
