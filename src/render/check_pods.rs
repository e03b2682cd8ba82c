//! `check pod/NAME`'s stdout: one row (or one tagged `check` line) per
//! process of each checked container.

use crate::cli::CheckFormat;
use crate::protocol::{Line, Source};
use comfy_table::{presets::NOTHING, Table};
use serde_json::{Map, Value};

pub fn output(
    format: CheckFormat,
    no_headers: bool,
    found: &[(Source, Map<String, Value>)],
) -> String {
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
                let text = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
                let probes = c
                    .get("probes")
                    .and_then(|p| p.as_array())
                    .map_or(0, |p| p.len());
                let traceable = if c.get("traceable") == Some(&Value::Bool(true)) {
                    "yes".to_string()
                } else {
                    format!("no: {}", text("reason"))
                };
                t.add_row(vec![
                    container(s),
                    c.get("pid").map_or("-".into(), |p| p.to_string()),
                    text("path"),
                    text("go_version"),
                    text("map_impl"),
                    probes.to_string(),
                    traceable,
                ]);
            }
            format!("{t}\n")
        }
    }
}
