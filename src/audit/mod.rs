//! `delete-audit`: a bounded watch of the targets, then a report, a policy
//! verdict and an exit code a CI gate can trust (0 pass, 1 violated, 2 could
//! not audit). Works on local targets and, through agent pods, on clusters.

pub mod alert;
pub mod junit;
pub mod policy;
pub mod report;
pub mod verdict;
pub mod windows;

use crate::cli::{AuditArgs, Filters, WatchFlags};
use crate::protocol::{Line, LineSink, Source};
use anyhow::Result;
use policy::Policy;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the agents report during an audit: the resolution of peak rates.
const INTERVAL: Duration = Duration::from_secs(1);

/// What an audit run needs from local or cluster mode.
pub trait Runner {
    /// Runs the agents in watch mode for the audit, every line into `sink`.
    /// Ok(false) when part of the targets could not be audited.
    fn run(&mut self, agent: &AgentSetup, sink: &mut dyn LineSink) -> Result<bool>;
}

pub struct AgentSetup {
    pub filters: Filters,
    pub watch: WatchFlags,
}

/// Passes every line on, and feeds each stats line to the sliding windows,
/// which alert (stderr, and the webhook if any) as rules fire. Used by
/// `delete-audit` and by `watch --policy`.
pub struct Alerting<'a> {
    windows: windows::Windows,
    webhook: Option<&'a crate::alerts::webhook::Webhook>,
    inner: &'a mut dyn LineSink,
}

impl<'a> Alerting<'a> {
    pub fn new(
        policy: &Policy,
        webhook: Option<&'a crate::alerts::webhook::Webhook>,
        inner: &'a mut dyn LineSink,
    ) -> Self {
        Alerting {
            windows: windows::Windows::new(policy),
            webhook,
            inner,
        }
    }

    fn take(&mut self, line: &Line, source: Option<&Source>) {
        if let Line::Stats(s) = line {
            for f in self.windows.feed(s, source) {
                alert::fire(&f, self.webhook);
            }
        }
    }

    pub fn into_fired(self) -> Vec<windows::Firing> {
        self.windows.fired
    }
}

impl LineSink for Alerting<'_> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.take(line, None);
        self.inner.line(line)
    }

    fn tagged(&mut self, line: &Line, source: &Source) -> std::io::Result<()> {
        self.take(line, Some(source));
        self.inner.tagged(line, source)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `watch --policy FILE [--alert-webhook URL]`: the sliding-window rules.
pub struct WatchAlerts {
    pub policy: Policy,
    pub webhook: Option<crate::alerts::webhook::Webhook>,
}

impl WatchAlerts {
    pub fn new(
        policy: Option<&std::path::Path>,
        webhook: Option<&str>,
    ) -> Result<Option<WatchAlerts>> {
        let Some(path) = policy else {
            if webhook.is_some() {
                anyhow::bail!("--alert-webhook needs --policy with a sliding-window rule (max_deletes, window)");
            }
            return Ok(None);
        };
        let policy = Policy::read(path)?;
        let windowed = policy.window_rules().count();
        if windowed == 0 {
            anyhow::bail!(
                "policy {}: watch alerts on sliding-window rules (max_deletes + window) and this policy has none",
                path.display()
            );
        }
        if windowed < policy.rules.len() {
            eprintln!(
                "watch alerts on the {windowed} sliding-window rule(s); the other rules are for delete-audit"
            );
        }
        let webhook = webhook
            .map(|url| crate::alerts::webhook::Webhook::start(url, Default::default()))
            .transpose()?;
        Ok(Some(WatchAlerts { policy, webhook }))
    }

    /// Waits a little for queued posts, and says what was not delivered.
    pub fn finish(self) {
        if let Some(w) = self.webhook {
            // finish() says on stderr what was not delivered.
            w.finish(Duration::from_secs(10));
        }
    }
}

pub fn run(args: &AuditArgs, runner: &mut dyn Runner) -> Result<ExitCode> {
    let mut policy = match &args.policy {
        Some(path) => Policy::read(path)?,
        None => Policy::default(),
    };
    policy.add_shortcuts(&args.fail_on)?;
    if policy.rules.is_empty() {
        eprintln!(
            "no rules (--policy, --fail-on): the verdict checks only that every target was audited"
        );
    }
    let webhook = args
        .alert_webhook
        .as_deref()
        .map(|url| crate::alerts::webhook::Webhook::start(url, Default::default()))
        .transpose()?;
    let setup = AgentSetup {
        filters: Filters::for_watch(
            crate::protocol::Op::ALL.to_vec(),
            Some(args.duration),
            false,
        ),
        watch: WatchFlags {
            interval: INTERVAL,
            top: args.top,
            hot_keys_size: 65536,
            by_pc: false,
        },
    };
    let mut collector = report::Collector::new(args.top);
    eprintln!("auditing for {:?}", args.duration);
    let started = Instant::now();
    let mut alerting = Alerting::new(&policy, webhook.as_ref(), &mut collector);
    // A run that fails still gets a report and a verdict (could not audit),
    // so a CI system reading `-o junit` sees a failing testcase, not nothing.
    let complete = match runner.run(&setup, &mut alerting) {
        Ok(complete) => complete,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            let _ = alerting.line(&Line::Error(crate::protocol::ErrorLine { message }));
            false
        }
    };
    let fired = alerting.into_fired();
    let report = collector.report(started.elapsed().as_millis() as u64);
    let mut verdict = verdict::evaluate(&policy, &report, &collector, &fired);
    if !complete {
        verdict.could_not_audit = true;
        verdict.pass = false;
    }
    let code = verdict::exit_code(&verdict, &policy);
    if let Some(w) = webhook {
        for v in verdict.violations.iter() {
            w.send(alert::violation(v));
        }
        w.finish(Duration::from_secs(10));
    }
    let out = crate::render::audit_table::output(args.output, report, &verdict, code);
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    let word = match code {
        0 => "passed",
        1 => "policy violated",
        _ => "could not audit every target",
    };
    eprintln!("delete-audit: {word} (exit {code})");
    Ok(ExitCode::from(code))
}
