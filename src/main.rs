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
        // The reader left (`| head`): it has what it wanted, as for cat.
        Err(e) if reader_left(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn reader_left(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
/// Flags become plain configs (`config`) before any layer sees them.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    use kubectl_mapguard::{cluster, config, render};
    match command {
        Command::Cleanup(args) => cluster::cleanup(
            &config::connection(&args.kube),
            (!args.all_namespaces).then(|| args.namespace.agent_namespace.clone()),
        ),
        // pod/NAME is a pod unless a local file has that path.
        Command::Check(args)
            if (args.target.starts_with("pod/") || args.target.starts_with("pods/"))
                && !std::path::Path::new(&args.target).exists() =>
        {
            cluster::check::run(&config::check_scope(&args), args.output, args.no_headers)
        }
        Command::Check(args) => kubectl_mapguard::check::run(&args.target, args.output),
        Command::DeleteAudit(args) => {
            let audit = config::audit(&args);
            let outcome = if is_cluster(&args.cluster.targets, &args.local)? {
                let scope = config::scope(&args.cluster);
                kubectl_mapguard::audit::run(&audit, &mut cluster::ClusterAudit(&scope))?
            } else {
                audit_local(&args, &audit)?
            };
            let interruption = outcome.report.interruption();
            let out = render::audit_table::output(
                args.output,
                outcome.report,
                &outcome.verdict,
                outcome.code,
            );
            std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
            // A run that failed as a whole said why in its one `error:` line.
            if !outcome.failed {
                let word = match (outcome.code, interruption) {
                    (0, _) => "passed".to_string(),
                    (1, None) => "policy violated".to_string(),
                    (1, Some(why)) => format!("policy violated; {why}: not a full audit"),
                    (_, None) => "could not audit every target".to_string(),
                    (_, Some(why)) => format!("{why}: not a full audit"),
                };
                eprintln!("delete-audit: {word} (exit {})", outcome.code);
            }
            Ok(ExitCode::from(outcome.code))
        }
        Command::Trace(args) if is_cluster(&args.cluster.targets, &args.local)? => {
            let scope = config::scope(&args.cluster);
            let mut sink = render::trace_output(args.output, args.no_headers, true);
            cluster::trace(&scope, config::agent(&args.filters, None), sink.as_mut())
        }
        Command::Watch(args) if is_cluster(&args.cluster.targets, &args.local)? => {
            let scope = config::scope(&args.cluster);
            let metrics =
                kubectl_mapguard::metrics_tee::Publisher::serve(args.metrics_addr.as_deref())?;
            let alerts = kubectl_mapguard::alerts::WatchAlerts::new(
                args.policy.as_deref(),
                args.alert_webhook.as_deref(),
            )?;
            // JSON and YAML forward every agent's lines, tagged; the table merges them.
            let merged = args.output == render::WatchFormat::Table;
            let mut sink = render::watch_output(args.output);
            kubectl_mapguard::alerts::WatchAlerts::around(alerts, sink.as_mut(), |sink| {
                cluster::watch(&scope, config::watch(&args), merged, metrics, sink)
            })
        }
        local => run_local(local),
    }
}

fn is_cluster(
    targets: &kubectl_mapguard::cli::TargetFlags,
    local: &kubectl_mapguard::cli::LocalFlags,
) -> anyhow::Result<bool> {
    match (targets.is_empty(), !local.is_empty()) {
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
fn audit_local(
    args: &kubectl_mapguard::cli::AuditArgs,
    audit: &kubectl_mapguard::audit::AuditConfig,
) -> anyhow::Result<kubectl_mapguard::audit::Outcome> {
    let mut runner = kubectl_mapguard::local::LocalAudit::new(args.local.clone())?;
    kubectl_mapguard::audit::run(audit, &mut runner)
}

#[cfg(not(target_os = "linux"))]
fn audit_local(
    _args: &kubectl_mapguard::cli::AuditArgs,
    _audit: &kubectl_mapguard::audit::AuditConfig,
) -> anyhow::Result<kubectl_mapguard::audit::Outcome> {
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
