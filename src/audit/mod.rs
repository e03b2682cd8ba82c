//! `delete-audit`: a bounded watch of the targets, then a report, a policy
//! verdict and an exit code a CI gate can trust (0 pass, 1 violated, 2 could
//! not audit). Works on local targets and, through agent pods, on clusters.

pub mod report;
pub mod verdict;

use crate::agent_config::{AgentConfig, WatchConfig};
use crate::alerts::Alerting;
use crate::policy::Policy;
use crate::protocol::{Line, LineSink, Op, Report, Verdict};
use anyhow::Result;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the agents report during an audit: the resolution of peak rates.
const INTERVAL: Duration = Duration::from_secs(1);
/// The hot-key table of an audit: `watch`'s default.
const HOT_KEYS: u32 = 65536;
/// The report names deleted keys per map type from the busiest maps' hot
/// keys; every map's distinct keys count, folded or not.
const TOP_MAPS: u32 = 500;

/// What an audit run needs from local or cluster mode.
pub trait Runner {
    /// Runs the agents in watch mode for the audit, every line into `sink`.
    /// Ok(false) when part of the targets could not be audited.
    fn run(&mut self, agent: &AgentConfig, sink: &mut dyn LineSink) -> Result<bool>;
}

/// What to audit for, and against which rules.
pub struct AuditConfig {
    pub duration: Duration,
    pub policy: Option<PathBuf>,
    /// `--fail-on` shortcuts, added to the policy's rules.
    pub fail_on: Vec<String>,
    pub alert_webhook: Option<String>,
    /// Top deleted keys reported per map type.
    pub top: usize,
    pub max_overhead: Option<crate::agent_config::Percent>,
}

/// An audit's result: what was seen, what the rules say, the exit code.
pub struct Outcome {
    pub report: Report,
    pub verdict: Verdict,
    /// 0 pass, 1 violated, 2 could not audit.
    pub code: u8,
    /// The run failed as a whole (a target that is not Go, no such pid,
    /// nothing to trace), and stderr's `error:` line said why: that line is
    /// the whole story there.
    pub failed: bool,
}

/// Runs the audit; the caller renders the outcome.
pub fn run(args: &AuditConfig, runner: &mut dyn Runner) -> Result<Outcome> {
    // Every input is checked before a word of progress: a bad one is one
    // `error:` line and nothing else.
    let mut policy = match &args.policy {
        Some(path) => Policy::read(path)?,
        None => Policy::default(),
    };
    policy.add_shortcuts(&args.fail_on)?;
    let webhook = args
        .alert_webhook
        .as_deref()
        .map(|url| crate::alerts::webhook::Webhook::start(url, Default::default()))
        .transpose()?;
    let setup = AgentConfig::for_watch(
        &Op::ALL,
        Some(args.duration),
        false,
        WatchConfig {
            interval: INTERVAL,
            top: args.top,
            top_maps: TOP_MAPS,
            hot_keys_size: HOT_KEYS,
            by_pc: false,
            max_overhead: args.max_overhead,
        },
    );
    let mut progress = vec![format!("auditing for {:?}", args.duration)];
    if policy.rules.is_empty() {
        progress.insert(
            0,
            "no rules (--policy, --fail-on): the verdict checks only that every target was audited"
                .into(),
        );
    }
    let mut collector = report::Collector::new(args.top);
    let started = Instant::now();
    let mut alerting = Alerting::new(&policy, webhook.as_ref(), &mut collector);
    // The targets are resolved inside the run (not Go, no such pid, no pod):
    // progress waits for its first line, so a run that fails at once says
    // only why.
    let mut announced = Announce {
        progress,
        inner: &mut alerting,
    };
    // A run that fails still gets a report and a verdict (could not audit),
    // so a CI system reading `-o junit` sees a failing testcase, not nothing.
    let (complete, failed) = match runner.run(&setup, &mut announced) {
        Ok(complete) => (complete, false),
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            let _ = alerting.line(&Line::Error(crate::protocol::ErrorLine { message }));
            (false, true)
        }
    };
    let fired = alerting.into_fired();
    let report = collector.report(started.elapsed().as_millis() as u64, args.duration);
    let mut verdict = verdict::evaluate(&policy, &report, &collector, &fired);
    if !complete {
        verdict.could_not_audit = true;
        verdict.pass = false;
    }
    let code = verdict::exit_code(&verdict, &policy);
    if let Some(w) = webhook {
        for v in verdict.violations.iter() {
            w.send(crate::alerts::fire::violation(v));
        }
        w.finish(Duration::from_secs(10));
    }
    Ok(Outcome {
        report,
        verdict,
        code,
        failed,
    })
}

/// Says the audit's progress on stderr at the run's first line, then
/// passes every line on.
struct Announce<'a> {
    progress: Vec<String>,
    inner: &'a mut dyn LineSink,
}

impl Announce<'_> {
    fn announce(&mut self) {
        for p in self.progress.drain(..) {
            eprintln!("{p}");
        }
    }
}

impl LineSink for Announce<'_> {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.announce();
        self.inner.line(line)
    }

    fn tagged(&mut self, line: &Line, source: &crate::protocol::Source) -> std::io::Result<()> {
        self.announce();
        self.inner.tagged(line, source)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    fn stopped_early(&mut self) {
        self.inner.stopped_early()
    }
}
