//! Local mode: the CLI runs the node agent in-process against processes on
//! this machine (`--pid`, `-- CMD`), or as the hidden `agent` subcommand.

use crate::agent::{self, Target};
use crate::agent_config::AgentConfig;
use crate::alerts::WatchAlerts;
use crate::cli::{Command, LocalFlags};
use crate::metrics_tee::{Publisher, Tee};
use crate::protocol::{Line, LineSink};
use crate::render::JsonLines;
use anyhow::{bail, Result};
use std::process::ExitCode;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Trace(args) => {
            let target = local_target(args.local)?;
            let mut sink = crate::render::trace_output(args.output, args.no_headers, false);
            let config = crate::config::agent(&args.filters, None);
            let summary = agent::run(target, &config, sink.as_mut())?;
            return Ok(command_status(&summary));
        }
        Command::Watch(args) => {
            let config = crate::config::watch(&args);
            let target = local_target(args.local)?;
            let metrics = Publisher::serve(args.metrics_addr.as_deref())?;
            let alerts = WatchAlerts::new(args.policy.as_deref(), args.alert_webhook.as_deref())?;
            let mut sink = crate::render::watch_output(args.output);
            let summary = WatchAlerts::around(alerts, sink.as_mut(), |sink| match metrics {
                Some(publisher) => agent::run(
                    target,
                    &config,
                    &mut Tee {
                        inner: sink,
                        publisher,
                    },
                ),
                None => agent::run(target, &config, sink),
            })?;
            return Ok(command_status(&summary));
        }
        Command::BenchBareProbe(args) => {
            let run = agent::bare::run(&args.command, &args.ops, args.user_reads)?;
            crate::render::bare_probe(run.hits, run.exit_status)?;
        }
        Command::Cleanup(_) | Command::Check(_) | Command::DeleteAudit(_) => {
            unreachable!("dispatched in main")
        }
        Command::Agent(args) if args.check => check_containers(&args.container_ids)?,
        Command::Agent(args) => {
            let config = crate::config::agent_subcommand(&args);
            let target = Target::Containers {
                ids: args.container_ids,
                pids: args.pids,
            };
            let mut sink = JsonLines::new(std::io::stdout());
            agent::run(target, &config, &mut sink)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `-- CMD` that ended by itself: exit as it did, as `time` and `perf stat`
/// do (its status is 128+N for signal N already). One that mapguard ended
/// (duration reached, Ctrl-C) says nothing of the run: success.
fn command_status(summary: &crate::protocol::Summary) -> ExitCode {
    match summary.exit_status {
        Some(s) if !summary.command_stopped => ExitCode::from(s.clamp(0, 255) as u8),
        _ => ExitCode::SUCCESS,
    }
}

fn local_target(l: LocalFlags) -> Result<Target> {
    Ok(match (l.pids.is_empty(), l.command.is_empty()) {
        (false, true) => {
            // A pid named twice is one process, attached once.
            let mut seen = std::collections::HashSet::new();
            let mut pids = l.pids;
            pids.retain(|p| seen.insert(*p));
            Target::Pids(pids)
        }
        (true, false) => Target::Command {
            argv: l.command,
            output: l.cmd_output,
        },
        (true, true) => bail!("nothing to trace: give --pid PID or -- CMD ARGS..."),
        (false, false) => bail!("give either --pid or -- CMD, not both"),
    })
}

/// `delete-audit --pid PID | -- CMD`: the agent in-process, in watch mode.
pub struct LocalAudit(pub Option<Target>);

impl LocalAudit {
    pub fn new(local: LocalFlags) -> Result<LocalAudit> {
        Ok(LocalAudit(Some(local_target(local)?)))
    }
}

impl crate::audit::Runner for LocalAudit {
    fn run(&mut self, config: &AgentConfig, sink: &mut dyn LineSink) -> Result<bool> {
        let target = self.0.take().expect("an audit runs once");
        let started = std::time::Instant::now();
        agent::run(target, config, sink)?;
        // What the stream cannot say: a SIGINT or SIGTERM ended the audit
        // before --duration did (one landing after it stopped nothing).
        let stopped = agent::stop_flag().load(std::sync::atomic::Ordering::SeqCst);
        if stopped && config.duration.is_some_and(|d| started.elapsed() < d) {
            sink.stopped_early();
        }
        Ok(true)
    }
}

/// `agent --check`: one `check` line per process of each container, an
/// `error` line for a container with none, then a summary (the run ended).
fn check_containers(ids: &[String]) -> Result<()> {
    use crate::agent::{discover, normalize_container_id};
    let mut sink = JsonLines::new(std::io::stdout());
    for id in ids {
        let id = normalize_container_id(id);
        let pids = discover::pids_in_container(std::path::Path::new("/proc"), id);
        if pids.is_empty() {
            sink.line(&Line::Error(crate::protocol::ErrorLine {
                message: format!("no process found in container {id}"),
            }))?;
        }
        for pid in pids {
            let Ok((path, shown)) = discover::exe_path(pid) else {
                continue;
            };
            let check = crate::protocol::CheckLine {
                pid: Some(pid),
                container_id: Some(id.into()),
                ..crate::check::report(&path, &shown)
            };
            sink.line(&Line::Check(check))?;
        }
    }
    sink.line(&Line::Summary(Default::default()))?;
    sink.flush()?;
    Ok(())
}
