//! `delete-audit`'s stdout: the report and the verdict as a table, JSON
//! lines (`report`, `verdict`, `summary`) or JUnit.

use super::{printable, AuditFormat};
use crate::protocol::{Line, Report, Summary, Verdict};
use comfy_table::{presets::NOTHING, Table};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(header.to_vec());
    t
}

/// `exit` is the audit's exit code: it names the verdict.
pub fn render(report: &Report, verdict: &Verdict, exit: u8) -> String {
    let mut out = String::new();
    // Every text below but the numbers comes from the traced program or the
    // policy, and goes through `printable`.
    let or_dash = |s: &Option<String>| s.as_deref().map_or("-".into(), printable);
    let map_type = |m: &Option<String>| m.as_deref().map_or("?".into(), printable);
    if let Some(why) = report.interruption() {
        out.push_str(&format!(
            "NOT A FULL AUDIT: {why}; what follows is what it saw until then.\n\n"
        ));
    }
    let mut targets = table(&["TARGET", "EXE", "GO", "PROBES", "AUDITED"]);
    for t in &report.targets {
        targets.add_row(vec![
            printable(&t.target),
            or_dash(&t.exe),
            or_dash(&t.go_version),
            t.probes.len().to_string(),
            if t.audited { "yes" } else { "NO" }.to_string(),
        ]);
    }
    if !report.targets.is_empty() {
        out.push_str(&format!("{targets}\n\n"));
    }
    if let Some(status) = report.exit_status {
        out.push_str(&format!("The command exited with status {status}.\n\n"));
    }

    let mut rows = table(&[
        "TARGET",
        "MAP TYPE",
        "CALLER",
        "DELETES",
        "ASSIGNS",
        "CLEARS",
        "PEAK DEL/S",
        "MEAN DEL/S",
    ]);
    let mut sorted: Vec<_> = report.rows.iter().collect();
    sorted.sort_by(|a, b| b.deletes.cmp(&a.deletes).then(a.target.cmp(&b.target)));
    let approx = if report.estimation.estimated {
        "≈"
    } else {
        ""
    };
    for r in sorted {
        rows.add_row(vec![
            printable(&r.target),
            map_type(&r.map_type),
            printable(&super::caller_text(&r.caller)),
            match r.deletes_interval {
                Some(iv) => super::estimate_text(r.deletes, iv),
                None => r.deletes.to_string(),
            },
            format!("{approx}{}", r.assigns),
            format!("{approx}{}", r.clears),
            format!("{approx}{:.1}", r.peak_delete_rate),
            format!("{approx}{:.1}", r.mean_delete_rate),
        ]);
    }
    if !report.rows.is_empty() {
        out.push_str(&format!("{rows}\n"));
    }
    if let (true, Some(f)) = (
        report.estimation.estimated,
        report.estimation.observed_fraction,
    ) {
        out.push_str(&format!(
            "\nESTIMATED (--max-overhead): {} of the operations were observed; counts and rates are estimates with 95% intervals, and keys and concurrent writes are those of the observed windows only. Not a full audit.\n",
            super::share(f)
        ));
    }

    if !report.keys.is_empty() {
        let mut keys = table(&["TARGET", "MAP TYPE", "KEYS DELETED", "TOP DELETED KEYS"]);
        for k in &report.keys {
            let top: Vec<String> = k
                .top_deleted
                .iter()
                .map(|c| format!("{} ×{}", map_type(&c.key), c.deletes))
                .collect();
            keys.add_row(vec![
                printable(&k.target),
                map_type(&k.map_type),
                format!(
                    "{}{}",
                    if k.at_least { "≥" } else { "" },
                    k.distinct_keys_deleted
                ),
                top.join(", "),
            ]);
        }
        out.push_str(&format!("\n{keys}\n"));
    }
    for (title, findings) in [
        ("CONCURRENT WRITES", &report.concurrent_writes),
        ("FATAL ERRORS", &report.fatals),
        ("NOT AUDITED", &report.errors),
    ] {
        if findings.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}\n"));
        for f in findings {
            out.push_str(&format!(
                "  {}{}\n",
                f.target
                    .as_ref()
                    .map(|t| format!("{}: ", printable(t)))
                    .unwrap_or_default(),
                printable(&f.message)
            ));
        }
    }

    let mut rules = table(&["RULE", "TARGET", "RESULT", "DETAILS"]);
    for o in &verdict.outcomes {
        rules.add_row(vec![
            printable(&o.rule),
            printable(&o.target),
            if o.passed { "pass" } else { "FAIL" }.to_string(),
            {
                let mut text = if o.details.is_empty() {
                    o.description.clone()
                } else {
                    o.details.join("; ")
                };
                if o.note.is_some() {
                    text.push_str(" (on estimates)");
                }
                printable(&text)
            },
        ]);
    }
    let word = match (exit, report.interrupted) {
        (0, _) => "PASS",
        (1, false) => "FAIL (policy violated)",
        (1, true) => "FAIL (policy violated; interrupted, not a full audit)",
        (_, false) => "COULD NOT AUDIT (see above)",
        (_, true) => "COULD NOT AUDIT (interrupted, not a full audit; see above)",
    };
    out.push_str(&format!("\n{rules}\n\nVERDICT: {word}\n"));
    out
}

/// Everything `delete-audit` writes to stdout, in the chosen format.
pub fn output(format: AuditFormat, report: Report, verdict: &Verdict, exit: u8) -> String {
    match format {
        AuditFormat::Table => render(&report, verdict, exit),
        AuditFormat::Junit => super::junit::render(&report, verdict),
        AuditFormat::Json | AuditFormat::Yaml => {
            let summary = Summary {
                ops: report.ops.clone(),
                duration_ms: report.duration_ms,
                ..Default::default()
            };
            let lines = [
                Line::Report(report),
                Line::Verdict(verdict.clone()),
                Line::Summary(summary),
            ];
            lines
                .iter()
                .map(|l| match format {
                    AuditFormat::Yaml => super::yaml_doc(&l.to_json()),
                    _ => l.to_json() + "\n",
                })
                .collect()
        }
    }
}
