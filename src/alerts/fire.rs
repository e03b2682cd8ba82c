//! Turning firings and violations into alerts: one line on stderr each, and
//! a webhook post when one is configured (queued: never blocks the stream).

use super::windows::Firing;
use crate::alerts::webhook::{Alert, Webhook};
use crate::protocol::Outcome;

pub fn fire(f: &Firing, webhook: Option<&Webhook>) {
    let text = format!(
        "mapguard alert {}: {} deletes on {} in {} within {}s",
        f.rule, f.deletes, f.scope, f.target, f.window_secs
    );
    eprintln!("ALERT {text}");
    if let Some(w) = webhook {
        w.send(Alert {
            rule: f.rule.clone(),
            text,
            fields: vec![
                ("target".into(), f.target.clone()),
                ("scope".into(), f.scope.clone()),
                ("deletes".into(), f.deletes.to_string()),
                ("window".into(), format!("{}s", f.window_secs)),
            ],
        });
    }
}

pub fn violation(o: &Outcome) -> Alert {
    Alert {
        rule: o.rule.clone(),
        text: format!(
            "mapguard delete-audit: {} violated in {}: {}",
            o.rule,
            o.target,
            o.details.first().map(String::as_str).unwrap_or("")
        ),
        fields: vec![
            ("target".into(), o.target.clone()),
            ("checks".into(), o.description.clone()),
            ("details".into(), o.details.join("\n")),
        ],
    }
}
