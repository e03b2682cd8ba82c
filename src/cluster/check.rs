//! `check pod/NAME`: an agent pod on the pod's node reads each container
//! process's Go binary (no BPF) and says whether it can be traced.

use crate::protocol::CheckLine;
use crate::protocol::{Line, LineSink, Source};
use crate::render::CheckFormat;
use anyhow::Result;
use std::process::ExitCode;

#[derive(Default)]
struct Checks {
    found: Vec<(Source, CheckLine)>,
    problems: Vec<(Source, String)>,
}

impl LineSink for Checks {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.tagged(line, &Source::default())
    }

    fn tagged(&mut self, line: &Line, source: &Source) -> std::io::Result<()> {
        match line {
            Line::Check(c) => self.found.push((source.clone(), c.clone())),
            Line::Error(e) => self.problems.push((source.clone(), e.message.clone())),
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn container(s: &Source) -> String {
    format!(
        "{}/{}",
        s.pod.as_deref().unwrap_or("?"),
        s.container.as_deref().unwrap_or("?")
    )
}

/// `check pod/NAME`: `scope` selects the one pod (and container).
pub fn run(scope: &super::Scope, format: CheckFormat, no_headers: bool) -> Result<ExitCode> {
    let run = super::session::Run {
        scope,
        job: super::session::Job::Check,
        tick: None,
        merged_view: false,
        metrics: None,
        follow: false,
    };
    let mut checks = Checks::default();
    let agents_ok =
        super::runtime()?.block_on(super::session::run(run, &mut checks))? == ExitCode::SUCCESS;

    // A container is traceable when one of its processes is.
    let mut containers: Vec<(String, bool)> = Vec::new();
    for (s, c) in &checks.found {
        let name = container(s);
        let ok = c.traceable;
        match containers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, any)) => *any |= ok,
            None => containers.push((name, ok)),
        }
    }
    let out = crate::render::check_pods::output(format, no_headers, &checks.found);
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    for (s, problem) in &checks.problems {
        eprintln!("{}: {problem}", container(s));
    }
    let untraceable: Vec<&str> = containers
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n.as_str())
        .collect();
    if !untraceable.is_empty() || containers.is_empty() || !agents_ok {
        eprintln!(
            "error: not traceable: {}",
            if untraceable.is_empty() {
                "no Go process was checked".to_string()
            } else {
                untraceable.join(", ")
            }
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
