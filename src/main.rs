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
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

#[cfg(target_os = "linux")]
fn run(command: Command) -> anyhow::Result<ExitCode> {
    kubectl_mapguard::local::run(command)
}

#[cfg(not(target_os = "linux"))]
fn run(_command: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("local tracing needs Linux; cluster targets are not supported by this build yet")
}
