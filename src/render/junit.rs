//! JUnit XML for CI systems: one testsuite per target, one testcase per rule.

use crate::protocol::{Report, Verdict};
use std::collections::BTreeMap;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

pub fn render(report: &Report, verdict: &Verdict) -> String {
    let secs = report.duration_ms as f64 / 1000.0;
    let mut suites: BTreeMap<&str, Vec<&crate::protocol::Outcome>> = BTreeMap::new();
    for o in &verdict.outcomes {
        suites.entry(o.target.as_str()).or_default().push(o);
    }
    let failures = verdict.outcomes.iter().filter(|o| !o.passed).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"kubectl-mapguard delete-audit\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{secs:.3}\">\n",
        verdict.outcomes.len()
    ));
    for (target, outcomes) in suites {
        let f = outcomes.iter().filter(|o| !o.passed).count();
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" time=\"{secs:.3}\">\n",
            esc(target),
            outcomes.len()
        ));
        for o in outcomes {
            x.push_str(&format!(
                "    <testcase classname=\"mapguard.{}\" name=\"{}: {}\" time=\"0\"",
                esc(target),
                esc(&o.rule),
                esc(&o.description)
            ));
            // A rule decided on estimates says so where CI systems show it.
            let note = o
                .note
                .as_ref()
                .map(|n| format!("      <system-out>{}</system-out>\n", esc(n)))
                .unwrap_or_default();
            if o.passed && note.is_empty() {
                x.push_str("/>\n");
            } else if o.passed {
                x.push_str(&format!(">\n{note}    </testcase>\n"));
            } else {
                let first = o.details.first().map(String::as_str).unwrap_or("violated");
                x.push_str(&format!(
                    ">\n      <failure type=\"violation\" message=\"{}\">{}</failure>\n{note}    </testcase>\n",
                    esc(first),
                    esc(&o.details.join("\n"))
                ));
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Outcome;

    #[test]
    fn escapes_and_counts() {
        let o = |rule: &str, passed: bool| Outcome {
            rule: rule.into(),
            description: "d <&>".into(),
            target: "ns/p/c".into(),
            passed,
            details: if passed {
                vec![]
            } else {
                vec!["map[string]int: \"x\" \u{1}".into()]
            },
            note: None,
        };
        let v = Verdict {
            outcomes: vec![o("a", true), o("b", false)],
            ..Default::default()
        };
        let x = render(&Report::default(), &v);
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("name=\"b: d &lt;&amp;&gt;\""), "{x}");
        assert!(
            x.contains("message=\"map[string]int: &quot;x&quot; ?\""),
            "{x}"
        );
    }
}
