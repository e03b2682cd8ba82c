//! Local mode: the CLI runs the node agent in-process against processes on
//! this machine (`--pid`, `-- CMD`), or as the hidden `agent` subcommand.

use crate::agent::{self, Options, Target};
use crate::cli::{Command, Filters, TraceFormat};
use crate::protocol::LineSink;
use crate::render::{JsonLines, TraceTable};
use anyhow::{bail, Result};
use std::process::ExitCode;

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Trace(args) => {
            let target = match (args.pids.is_empty(), args.command.is_empty()) {
                (false, true) => Target::Pids(args.pids),
                (true, false) => Target::Command(args.command),
                (true, true) => bail!("nothing to trace: give --pid PID or -- CMD ARGS..."),
                (false, false) => bail!("give either --pid or -- CMD, not both"),
            };
            let mut sink: Box<dyn LineSink> = match args.output {
                TraceFormat::Json => Box::new(JsonLines::new(std::io::stdout())),
                TraceFormat::Table | TraceFormat::Wide => Box::new(TraceTable::new(
                    std::io::stdout(),
                    std::io::stderr(),
                    args.output == TraceFormat::Wide,
                )),
            };
            agent::run(target, &options(args.filters), sink.as_mut())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            let target = Target::Container {
                id: args.container_id,
                pids: args.pids,
            };
            let mut sink = JsonLines::new(std::io::stdout());
            agent::run(target, &options(args.filters), &mut sink)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn options(f: Filters) -> Options {
    let mut ops = f.ops;
    ops.sort();
    ops.dedup();
    Options {
        ops,
        map_type: f.map_type,
        key: f.key,
        sample_every: f.sample,
        duration: f.duration,
        stack: f.stack,
        max_key_bytes: f.max_key_bytes,
    }
}
