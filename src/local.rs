//! Local mode: the CLI runs the node agent in-process against processes on
//! this machine (`--pid`, `-- CMD`), or as the hidden `agent` subcommand.

use crate::agent::{self, Options, Target, WatchOptions};
use crate::audit::{Alerting, WatchAlerts};
use crate::cli::{Command, Filters, WatchFlags};
use crate::protocol::{Line, LineSink};
use crate::render::JsonLines;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Trace(args) => {
            let target = local_target(args.pids, args.command, args.cmd_output)?;
            let mut sink = crate::render::trace_output(args.output, args.no_headers, false);
            let summary = agent::run(target, &options(args.filters, None), sink.as_mut())?;
            return Ok(command_status(&summary));
        }
        Command::Watch(args) => {
            let target = local_target(args.pids, args.command, args.cmd_output)?;
            let metrics = crate::metrics_server::serve(args.metrics_addr.as_deref())?;
            let mut sink = crate::render::watch_output(args.output);
            let filters = Filters::for_watch(args.ops, args.duration, args.track_writers);
            let opts = options(filters, Some(&args.watch));
            let alerts = WatchAlerts::new(args.policy.as_deref(), args.alert_webhook.as_deref())?;
            let mut tee;
            let mut sink: &mut dyn LineSink = sink.as_mut();
            if let Some(server) = metrics {
                tee = MetricsTee {
                    inner: sink,
                    server,
                    renderer: crate::render::prometheus::Renderer::new(MAX_SERIES),
                };
                sink = &mut tee;
            }
            let summary = match &alerts {
                Some(a) => {
                    let mut alerting = Alerting::new(&a.policy, a.webhook.as_ref(), sink);
                    agent::run(target, &opts, &mut alerting)?
                }
                None => agent::run(target, &opts, sink)?,
            };
            if let Some(a) = alerts {
                a.finish();
            }
            return Ok(command_status(&summary));
        }
        Command::BenchBareProbe(args) => {
            let run = agent::bare::run(&args.command, &args.ops)?;
            crate::render::bare_probe(run.hits, run.exit_status)?;
        }
        Command::Cleanup(_) | Command::Check(_) | Command::DeleteAudit(_) => {
            unreachable!("dispatched in main")
        }
        Command::Agent(args) if args.check => check_containers(&args.container_ids)?,
        Command::Agent(args) => {
            let target = Target::Containers {
                ids: args.container_ids,
                pids: args.pids,
            };
            let watch = args.watch.then_some(&args.watch_flags);
            let mut sink = JsonLines::new(std::io::stdout());
            agent::run(target, &options(args.filters, watch), &mut sink)?;
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

fn local_target(pids: Vec<u32>, command: Vec<String>, output: Option<PathBuf>) -> Result<Target> {
    Ok(match (pids.is_empty(), command.is_empty()) {
        (false, true) => Target::Pids(pids),
        (true, false) => Target::Command {
            argv: command,
            output,
        },
        (true, true) => bail!("nothing to trace: give --pid PID or -- CMD ARGS..."),
        (false, false) => bail!("give either --pid or -- CMD, not both"),
    })
}

fn options(f: Filters, watch: Option<&WatchFlags>) -> Options {
    let mut ops = f.ops;
    ops.sort();
    ops.dedup();
    Options {
        ops,
        map_type: f.map_type,
        key: f.key,
        sample_every: f.sample,
        max_events_per_sec: f.max_events_per_sec,
        duration: f.duration,
        stack: f.stack,
        max_key_bytes: f.max_key_bytes,
        track_writers: f.track_writers,
        watch: watch.map(|w| WatchOptions {
            interval: w.interval,
            top: w.top,
            hot_keys_size: w.hot_keys_size,
            by_pc: w.by_pc,
        }),
    }
}

/// Label sets of `go_map_ops_total` before the rest fold into caller="other".
const MAX_SERIES: usize = 2000;

/// Passes every line on, and publishes each `stats` line as Prometheus text.
/// One renderer for the run keeps each series on the same side of the
/// cardinality cap from scrape to scrape.
struct MetricsTee<'a> {
    inner: &'a mut dyn LineSink,
    server: crate::metrics_server::MetricsServer,
    renderer: crate::render::prometheus::Renderer,
}

impl LineSink for MetricsTee<'_> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        if let Line::Stats(s) = line {
            self.server.publish(self.renderer.render(s, &[]));
        }
        self.inner.line(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `delete-audit --pid PID | -- CMD`: the agent in-process, in watch mode.
pub struct LocalAudit(pub Option<Target>);

impl LocalAudit {
    pub fn new(
        pids: Vec<u32>,
        command: Vec<String>,
        output: Option<PathBuf>,
    ) -> Result<LocalAudit> {
        Ok(LocalAudit(Some(local_target(pids, command, output)?)))
    }
}

impl crate::audit::Runner for LocalAudit {
    fn run(&mut self, a: &crate::audit::AgentSetup, sink: &mut dyn LineSink) -> Result<bool> {
        let target = self.0.take().expect("an audit runs once");
        agent::run(target, &options(a.filters.clone(), Some(&a.watch)), sink)?;
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
            let mut obj = crate::check::report_object(&path, &shown);
            obj.insert("pid".into(), pid.into());
            obj.insert("container_id".into(), id.into());
            sink.line(&Line::Check(obj))?;
        }
    }
    sink.line(&Line::Summary(Default::default()))?;
    sink.flush()?;
    Ok(())
}
