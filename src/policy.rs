//! The policy: rules a delete-audit verdict checks, and the sliding-window
//! rules `watch` alerts on. A YAML file, or `--fail-on` shortcuts.
//!
//! ```yaml
//! rules:
//!   - name: cart-delete-rate
//!     max_delete_rate: 100            # deletes/s, peak over any interval
//!     per: map_type                   # or: caller (default map_type)
//!     map_type: 'map\[string\]\*main\.Cart'   # optional scope (regex)
//!   - name: only-the-janitor-deletes-sessions
//!     forbidden_deleters:
//!       caller: '^main\.(handle|serve)'       # callers matching this ...
//!       map_type: 'Session'                   # ... must not delete from these
//!   - name: no-races
//!     no_concurrent_write: true
//!   - name: no-crash
//!     no_fatal: true
//!   - name: everything-audited
//!     coverage: true
//!   - name: delete-storm                       # sliding window (watch alerts too)
//!     max_deletes: 100
//!     window: 5m
//! ```

use anyhow::{anyhow, bail, Context as _, Result};
use regex::Regex;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    MapType,
    Caller,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Peak deletes per second of one map type (or one caller) in one process.
    MaxDeleteRate {
        limit: f64,
        per: Per,
    },
    /// Callers matching the rule's `caller` must not delete from map types matching its `map_type`.
    ForbiddenDeleters,
    NoConcurrentWrite,
    NoFatal,
    /// Every target pod, container and process was audited.
    Coverage,
    /// More than `limit` deletes on one map type (or caller) within `window`.
    MaxDeletesInWindow {
        limit: u64,
        window: Duration,
        per: Per,
    },
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub check: Check,
    pub map_type: Option<Regex>,
    pub caller: Option<Regex>,
}

impl Rule {
    /// Whether a (map type, caller function) row is in the rule's scope.
    pub fn covers(&self, map_type: &str, caller: &str) -> bool {
        self.map_type.as_ref().is_none_or(|r| r.is_match(map_type))
            && self.caller.as_ref().is_none_or(|r| r.is_match(caller))
    }

    /// One line saying what the rule asks.
    pub fn describe(&self) -> String {
        let scope = |what: &str, r: &Option<Regex>| {
            r.as_ref()
                .map(|r| format!(" {what} ~ /{}/", r.as_str()))
                .unwrap_or_default()
        };
        let per = |p: Per| match p {
            Per::MapType => "map type",
            Per::Caller => "caller",
        };
        let base = match &self.check {
            Check::MaxDeleteRate { limit, per: p } => {
                format!("at most {limit} deletes/s per {}", per(*p))
            }
            Check::ForbiddenDeleters => "no deletes by forbidden callers".to_string(),
            Check::NoConcurrentWrite => "no concurrent map writes".into(),
            Check::NoFatal => "no fatal runtime errors".into(),
            Check::Coverage => "every target audited".into(),
            Check::MaxDeletesInWindow {
                limit,
                window,
                per: p,
            } => format!(
                "at most {limit} deletes per {} in any {}s",
                per(*p),
                window.as_secs()
            ),
        };
        format!(
            "{base}{}{}",
            scope("map_type", &self.map_type),
            scope("caller", &self.caller)
        )
    }
}

#[derive(Debug, Default, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: Option<String>,
    max_delete_rate: Option<f64>,
    max_deletes: Option<u64>,
    window: Option<String>,
    per: Option<String>,
    map_type: Option<String>,
    caller: Option<String>,
    forbidden_deleters: Option<Deleters>,
    no_concurrent_write: Option<bool>,
    no_fatal: Option<bool>,
    coverage: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deleters {
    caller: String,
    map_type: Option<String>,
}

fn regex(what: &str, s: &str) -> Result<Regex> {
    Regex::new(s).map_err(|e| {
        anyhow!(
            "{what}: not a valid regex /{s}/: {}",
            e.to_string().replace('\n', " ")
        )
    })
}

impl Policy {
    pub fn from_yaml(text: &str) -> Result<Policy> {
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if file.rules.is_empty() {
            bail!("the policy has no rules");
        }
        let mut rules = Vec::new();
        for (i, spec) in file.rules.into_iter().enumerate() {
            let name = spec
                .name
                .clone()
                .unwrap_or_else(|| format!("rule-{}", i + 1));
            rules.push(rule(spec, &name).with_context(|| format!("rule {name:?}"))?);
        }
        let mut names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("two rules are named {:?}: names must be unique", w[0]);
        }
        Ok(Policy { rules })
    }

    pub fn read(path: &std::path::Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read policy {}: {e}", path.display()))?;
        Policy::from_yaml(&text).map_err(|e| anyhow!("policy {}: {e:#}", path.display()))
    }

    /// `--fail-on` shortcuts: concurrent-write, fatal, coverage, delete-rate=N.
    pub fn add_shortcuts(&mut self, fail_on: &[String]) -> Result<()> {
        for s in fail_on {
            let s = s.trim();
            let check = match s {
                "concurrent-write" => Check::NoConcurrentWrite,
                "fatal" => Check::NoFatal,
                "coverage" => Check::Coverage,
                _ => match s.strip_prefix("delete-rate=").map(str::parse::<f64>) {
                    Some(Ok(limit)) if limit >= 0.0 && limit.is_finite() => Check::MaxDeleteRate {
                        limit,
                        per: Per::MapType,
                    },
                    _ => bail!(
                        "--fail-on {s:?}: use concurrent-write, fatal, coverage or delete-rate=N (forbidden deleters need a --policy file)"
                    ),
                },
            };
            self.rules.push(Rule {
                name: format!("fail-on-{s}"),
                check,
                map_type: None,
                caller: None,
            });
        }
        Ok(())
    }

    pub fn window_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules
            .iter()
            .filter(|r| matches!(r.check, Check::MaxDeletesInWindow { .. }))
    }
}

fn rule(spec: RuleSpec, name: &str) -> Result<Rule> {
    let per = match spec.per.as_deref() {
        None | Some("map_type") => Per::MapType,
        Some("caller") => Per::Caller,
        Some(other) => bail!("per: {other:?}: use map_type or caller"),
    };
    let mut map_type = spec
        .map_type
        .as_deref()
        .map(|s| regex("map_type", s))
        .transpose()?;
    let mut caller = spec
        .caller
        .as_deref()
        .map(|s| regex("caller", s))
        .transpose()?;
    let mut checks = Vec::new();
    if let Some(limit) = spec.max_delete_rate {
        if !(limit >= 0.0 && limit.is_finite()) {
            bail!("max_delete_rate must be a number ≥ 0");
        }
        checks.push(Check::MaxDeleteRate { limit, per });
    }
    if let Some(limit) = spec.max_deletes {
        let window = spec
            .window
            .as_deref()
            .ok_or_else(|| anyhow!("max_deletes needs a window (e.g. window: 5m)"))
            .and_then(|w| crate::duration::parse_duration(w).map_err(|e| anyhow!("window: {e}")))?;
        checks.push(Check::MaxDeletesInWindow { limit, window, per });
    } else if spec.window.is_some() {
        bail!("window is for max_deletes");
    }
    if let Some(d) = spec.forbidden_deleters {
        if caller.is_some() || map_type.is_some() {
            bail!("forbidden_deleters carries its own caller and map_type");
        }
        caller = Some(regex("forbidden_deleters.caller", &d.caller)?);
        map_type = d
            .map_type
            .as_deref()
            .map(|s| regex("forbidden_deleters.map_type", s))
            .transpose()?;
        checks.push(Check::ForbiddenDeleters);
    }
    for (flag, check) in [
        (spec.no_concurrent_write, Check::NoConcurrentWrite),
        (spec.no_fatal, Check::NoFatal),
        (spec.coverage, Check::Coverage),
    ] {
        match flag {
            Some(true) => checks.push(check),
            Some(false) => bail!("a rule that is false checks nothing: remove it"),
            None => {}
        }
    }
    if checks.len() != 1 {
        bail!(
            "each rule needs exactly one of max_delete_rate, max_deletes, forbidden_deleters, no_concurrent_write, no_fatal, coverage (found {})",
            checks.len()
        );
    }
    Ok(Rule {
        name: name.to_string(),
        check: checks.remove(0),
        map_type,
        caller,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_policy_parses() {
        let doc: String = include_str!("policy.rs")
            .lines()
            .skip_while(|l| !l.contains("```yaml"))
            .skip(1)
            .take_while(|l| !l.contains("```"))
            .map(|l| {
                l.trim_start_matches("//!")
                    .strip_prefix(' ')
                    .unwrap_or("")
                    .to_string()
                    + "\n"
            })
            .collect();
        let p = Policy::from_yaml(&doc).unwrap();
        assert_eq!(p.rules.len(), 6);
        assert_eq!(
            p.rules[0].check,
            Check::MaxDeleteRate {
                limit: 100.0,
                per: Per::MapType
            }
        );
        assert!(
            p.rules[0].covers("map[string]*main.Cart", "x")
                && !p.rules[0].covers("map[int]int", "x")
        );
        assert_eq!(p.rules[1].check, Check::ForbiddenDeleters);
        assert!(p.rules[1].covers("map[string]*Session", "main.handleLogout"));
        assert!(!p.rules[1].covers("map[string]*Session", "main.janitor"));
        assert_eq!(
            p.rules[5].check,
            Check::MaxDeletesInWindow {
                limit: 100,
                window: Duration::from_secs(300),
                per: Per::MapType
            }
        );
        assert_eq!(p.window_rules().count(), 1);
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        let err = |y: &str| format!("{:#}", Policy::from_yaml(y).unwrap_err());
        assert!(err("rules: []").contains("no rules"));
        assert!(err("rules:\n- no_fatal: true\n  coverage: true").contains("exactly one"));
        assert!(err("rules:\n- max_delete_rate: 5\n  map_type: '('").contains("not a valid regex"));
        assert!(err("rules:\n- max_deletes: 5").contains("needs a window"));
        assert!(err("rules:\n- bogus: 1").contains("unknown field"));
        assert!(
            err("rules:\n- {name: a, no_fatal: true}\n- {name: a, coverage: true}")
                .contains("unique")
        );
    }

    #[test]
    fn shortcuts() {
        let mut p = Policy::default();
        p.add_shortcuts(&["fatal".into(), "delete-rate=50".into(), "coverage".into()])
            .unwrap();
        assert_eq!(p.rules.len(), 3);
        assert_eq!(
            p.rules[1].check,
            Check::MaxDeleteRate {
                limit: 50.0,
                per: Per::MapType
            }
        );
        assert!(p.add_shortcuts(&["delete-rate=x".into()]).is_err());
        assert!(p.add_shortcuts(&["whatever".into()]).is_err());
    }
}
