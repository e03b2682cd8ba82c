//! The verdict: every rule against every audited target. A violation is
//! exit 1; an audit that could not see everything it was asked to is exit 2,
//! whatever the rules say, so "could not audit" never reads as "passed".

use super::report::Collector;
use crate::alerts::windows::Firing;
use crate::policy::{Check, Per, Policy};
use crate::protocol::{Outcome, Report, Verdict};
use std::collections::BTreeSet;

fn func(row: &crate::protocol::AuditRow) -> &str {
    row.caller.as_ref().map_or("?", |c| c.func.as_str())
}

fn caller_text(row: &crate::protocol::AuditRow) -> String {
    crate::protocol::caller_text(&row.caller)
}

pub fn evaluate(
    policy: &Policy,
    report: &Report,
    collector: &Collector,
    fired: &[Firing],
) -> Verdict {
    let mut outcomes = Vec::new();
    let targets: Vec<&str> = report.targets.iter().map(|t| t.target.as_str()).collect();
    let sampled = sampled_note(report);
    for rule in &policy.rules {
        for &target in &targets {
            let rows = || report.rows.iter().filter(|r| r.target == target);
            let mut details: Vec<String> = Vec::new();
            match &rule.check {
                Check::MaxDeleteRate { limit, per } => {
                    let scopes: BTreeSet<String> = rows()
                        .filter(|r| r.deletes > 0)
                        .filter(|r| rule.covers(r.map_type.as_deref().unwrap_or("?"), func(r)))
                        .map(|r| match per {
                            Per::MapType => r.map_type.clone().unwrap_or_else(|| "?".into()),
                            Per::Caller => func(r).to_string(),
                        })
                        .collect();
                    for scope in scopes {
                        let peak = match per {
                            Per::MapType => {
                                let m = (scope != "?").then(|| scope.clone());
                                collector.peak_map_type(target, &m)
                            }
                            Per::Caller => collector.peak_caller(target, &scope),
                        };
                        if peak > *limit {
                            details.push(format!("{scope}: peak {peak:.1} deletes/s > {limit}"));
                        }
                    }
                }
                Check::ForbiddenDeleters => {
                    for r in rows().filter(|r| r.deletes > 0) {
                        if rule.covers(r.map_type.as_deref().unwrap_or("?"), func(r)) {
                            details.push(format!(
                                "{} deleted {} times from {}",
                                caller_text(r),
                                r.deletes,
                                r.map_type.as_deref().unwrap_or("?")
                            ));
                        }
                    }
                }
                Check::NoConcurrentWrite => {
                    // The runtime's own "concurrent map writes" fatal counts too:
                    // it is the race, caught by the runtime even when the
                    // probes' write-flag check was not in time to see it.
                    let races = report
                        .fatals
                        .iter()
                        .filter(|f| f.message.contains("concurrent map"));
                    for f in report
                        .concurrent_writes
                        .iter()
                        .chain(races)
                        .filter(|f| f.target.as_deref() == Some(target))
                    {
                        details.push(f.message.clone());
                    }
                }
                Check::NoFatal => {
                    for f in report
                        .fatals
                        .iter()
                        .filter(|f| f.target.as_deref() == Some(target))
                    {
                        details.push(f.message.clone());
                    }
                }
                Check::Coverage => {
                    details.extend(coverage_gaps(report, target));
                    // Asked for a full audit: a sampled one is not.
                    if let Some(note) = &sampled {
                        details.push(format!("not a full audit: {note}"));
                    }
                }
                Check::MaxDeletesInWindow { .. } => {
                    for f in fired
                        .iter()
                        .filter(|f| f.rule == rule.name && f.target == target)
                    {
                        details.push(format!(
                            "{}: {} deletes within {}s",
                            f.scope, f.deletes, f.window_secs
                        ));
                    }
                }
            }
            outcomes.push(Outcome {
                rule: rule.name.clone(),
                description: rule.describe(),
                target: target.to_string(),
                passed: details.is_empty(),
                details,
                note: sampled
                    .as_ref()
                    .map(|n| format!("decided on estimates: {n}")),
            });
        }
    }

    // Coverage is checked whether or not a rule asks for it, so every report
    // (JUnit's first of all: a CI system reads a report with no testcase as
    // broken) holds one coverage outcome per target.
    if !policy.rules.iter().any(|r| r.check == Check::Coverage) {
        for &target in &targets {
            let details = coverage_gaps(report, target);
            outcomes.push(Outcome {
                rule: "coverage".into(),
                description: "every target audited".into(),
                target: target.to_string(),
                passed: details.is_empty(),
                details,
                note: sampled.as_ref().map(|n| format!("not a full audit: {n}")),
            });
        }
    }
    // Problems that
    // name no audited target (an agent pod that never ran, a container with
    // no Go process) are an outcome of their own.
    let unattributed: Vec<String> = report
        .errors
        .iter()
        .filter(|e| e.target.as_deref().is_none_or(|t| !targets.contains(&t)))
        .map(|e| match &e.target {
            Some(t) => format!("{t}: {}", e.message),
            None => e.message.clone(),
        })
        .collect();
    let mut could_not_audit = report.targets.is_empty()
        || report.targets.iter().any(|t| !t.audited)
        || !report.errors.is_empty()
        || report.interrupted;
    if report.targets.is_empty() && report.errors.is_empty() {
        // Nothing attached and nobody said why.
        could_not_audit = true;
    }
    if !unattributed.is_empty() || report.targets.is_empty() {
        let mut details = unattributed;
        if report.targets.is_empty() {
            details.push("no Go process was audited".into());
            details.extend(not_full(report));
        }
        outcomes.push(Outcome {
            rule: "coverage".into(),
            description: "every target audited".into(),
            target: "(all targets)".into(),
            passed: false,
            details,
            note: None,
        });
    }
    let violations: Vec<Outcome> = outcomes.iter().filter(|o| !o.passed).cloned().collect();
    let coverage_failed = violations.iter().any(|o| {
        o.rule == "coverage"
            || policy
                .rules
                .iter()
                .any(|r| r.name == o.rule && r.check == Check::Coverage)
    });
    Verdict {
        pass: violations.is_empty() && !could_not_audit,
        could_not_audit: could_not_audit || coverage_failed,
        violations,
        outcomes,
        estimated: sampled.is_some(),
    }
}

/// What a `--max-overhead` audit saw, said once for every outcome it
/// decided; None for an exact audit.
fn sampled_note(report: &Report) -> Option<String> {
    let e = &report.estimation;
    e.estimated.then(|| {
        format!(
            "--max-overhead observed {} of the operations; counts and rates are estimates, and a key or concurrent write outside the observed windows was not seen",
            crate::render::share(e.observed_fraction.flatten())
        )
    })
}

/// An interrupted audit, as a coverage gap.
fn not_full(report: &Report) -> Option<String> {
    report
        .interruption()
        .map(|why| format!("{why}: not a full audit"))
}

/// Why `target` was not wholly audited (empty: it was).
fn coverage_gaps(report: &Report, target: &str) -> Vec<String> {
    // First: it is what a JUnit failure's message shows.
    let mut gaps: Vec<String> = not_full(report).into_iter().collect();
    let t = report.targets.iter().find(|t| t.target == target);
    if !t.is_some_and(|t| t.audited) {
        gaps.push("its probes never all attached".into());
    }
    gaps.extend(
        report
            .errors
            .iter()
            .filter(|e| e.target.as_deref() == Some(target))
            .map(|e| e.message.clone()),
    );
    gaps
}

/// 0 pass, 1 a rule was violated, 2 the audit could not see what it was asked to.
///
/// An audit stopped by SIGINT or SIGTERM before `--duration` is 2 with the
/// other coverage failures: like a target it could not attach to, it saw
/// less than it was asked to, so its silence says nothing of the rules.
/// It is not 1, which says the targets broke a rule; but a violation seen
/// before the stop did happen, and stays 1.
pub fn exit_code(v: &Verdict, policy: &Policy) -> u8 {
    let rule_violated = v.violations.iter().any(|o| {
        o.rule != "coverage"
            && policy
                .rules
                .iter()
                .any(|r| r.name == o.rule && r.check != Check::Coverage)
    });
    if rule_violated {
        1
    } else if v.could_not_audit || !v.pass {
        2
    } else {
        0
    }
}
