use clap::Parser;
use kubectl_mapguard::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    // A panic is a bug, but the user still gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error{at}: {msg} (please report this)");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// Help and version as clap writes them; a bad command line as one line on
/// stderr (clap's own error runs over several: the error, the valid values,
/// a tip, the usage), exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // No subcommand at all: the overview is the answer (on stderr, exit 2).
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("For more information") {
            continue;
        }
        match line.strip_prefix("Usage: ") {
            Some(usage) => parts.push(format!("(usage: {usage})")),
            None if line.starts_with("tip:") => parts.push(format!("; {line}")),
            None => parts.push(line.to_string()),
        }
    }
    let mut one = parts.join(" ").replace(" ; ", "; ");
    if !one.starts_with("error:") {
        one = format!("error: {one}");
    }
    eprintln!("{one}; see --help");
    ExitCode::from(2)
}

/// Cluster targets go to agent pods; `--pid` and `-- CMD` run the agent here.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    use kubectl_mapguard::cluster;
    match command {
        Command::Cleanup(args) => cluster::cleanup(args),
        // pod/NAME is a pod unless a local file has that path.
        Command::Check(args)
            if (args.target.starts_with("pod/") || args.target.starts_with("pods/"))
                && !std::path::Path::new(&args.target).exists() =>
        {
            cluster::check::run(args)
        }
        Command::Check(args) => kubectl_mapguard::check::run(args),
        Command::DeleteAudit(args) => {
            if is_cluster(&args.targets, &args.pids, &args.command)? {
                let mut runner = cluster::ClusterAudit {
                    kube: &args.kube,
                    targets: &args.targets,
                    pods: &args.agent_pods,
                };
                kubectl_mapguard::audit::run(&args, &mut runner)
            } else {
                audit_local(&args)
            }
        }
        Command::Trace(args) if is_cluster(&args.targets, &args.pids, &args.command)? => {
            cluster::trace(args)
        }
        Command::Watch(args) if is_cluster(&args.targets, &args.pids, &args.command)? => {
            cluster::watch(args)
        }
        local => run_local(local),
    }
}

fn is_cluster(
    targets: &kubectl_mapguard::cli::TargetFlags,
    pids: &[u32],
    command: &[String],
) -> anyhow::Result<bool> {
    let local = !pids.is_empty() || !command.is_empty();
    match (targets.is_empty(), local) {
        (false, true) => anyhow::bail!(
            "give either cluster targets (pod/NAME, deploy/NAME, -l ...) or --pid / -- CMD, not both"
        ),
        (true, false) => anyhow::bail!(
            "nothing to trace: give a target (pod/NAME, deploy/NAME, sts/NAME, ds/NAME or -l SELECTOR), or --pid PID / -- CMD to trace on this machine"
        ),
        (cluster, _) => Ok(!cluster),
    }
}

#[cfg(target_os = "linux")]
fn audit_local(args: &kubectl_mapguard::cli::AuditArgs) -> anyhow::Result<ExitCode> {
    let mut runner = kubectl_mapguard::local::LocalAudit::new(
        args.pids.clone(),
        args.command.clone(),
        args.cmd_output.clone(),
    )?;
    kubectl_mapguard::audit::run(args, &mut runner)
}

#[cfg(not(target_os = "linux"))]
fn audit_local(_args: &kubectl_mapguard::cli::AuditArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("local audits (--pid, -- CMD) need Linux: audit pods in a cluster instead")
}

#[cfg(target_os = "linux")]
fn run_local(command: Command) -> anyhow::Result<ExitCode> {
    kubectl_mapguard::local::run(command)
}

#[cfg(not(target_os = "linux"))]
fn run_local(_command: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("local tracing (--pid, -- CMD) needs Linux: trace pods in a cluster instead (pod/NAME, deploy/NAME, -l ...)")
}
