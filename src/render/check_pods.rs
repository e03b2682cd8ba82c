//! `check pod/NAME`'s stdout: one row (or one tagged `check` line) per
//! process of each checked container.

use super::CheckFormat;
use crate::protocol::CheckLine;
use crate::protocol::{Line, Source};
use comfy_table::{presets::NOTHING, Table};

pub fn output(format: CheckFormat, no_headers: bool, found: &[(Source, CheckLine)]) -> String {
    let container = |s: &Source| {
        format!(
            "{}/{}",
            s.pod.as_deref().unwrap_or("?"),
            s.container.as_deref().unwrap_or("?")
        )
    };
    match format {
        CheckFormat::Json => found
            .iter()
            .map(|(s, c)| Line::Check(c.clone()).to_json_tagged(s) + "\n")
            .collect(),
        CheckFormat::Yaml => found
            .iter()
            .map(|(s, c)| super::yaml_doc(&Line::Check(c.clone()).to_json_tagged(s)))
            .collect(),
        CheckFormat::Table => {
            let mut t = Table::new();
            t.load_preset(NOTHING);
            if !no_headers {
                t.set_header([
                    "POD/CONTAINER",
                    "PID",
                    "EXE",
                    "GO",
                    "MAPS",
                    "PROBES",
                    "TRACEABLE",
                ]);
            }
            for (s, c) in found {
                let b = c.binary.as_ref();
                let or_dash = |v: Option<&String>| v.map_or("-".into(), String::clone);
                let traceable = if c.traceable {
                    "yes".to_string()
                } else {
                    format!("no: {}", or_dash(c.reason.as_ref()))
                };
                t.add_row(vec![
                    container(s),
                    c.pid.map_or("-".into(), |p| p.to_string()),
                    c.path.clone(),
                    or_dash(b.map(|b| &b.go_version)),
                    or_dash(b.map(|b| &b.map_impl)),
                    b.map_or(0, |b| b.probes.len()).to_string(),
                    traceable,
                ]);
            }
            format!("{t}\n")
        }
    }
}
