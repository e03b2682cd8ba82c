//! `check pod/NAME`: an agent pod on the pod's node reads each container
//! process's Go binary (no BPF) and says whether it can be traced.

use super::targets::Selection;
use crate::protocol::CheckLine;
use crate::protocol::{Line, LineSink, Source};
use crate::render::CheckFormat;
use anyhow::{anyhow, bail, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::process::ExitCode;

#[derive(Default)]
struct Checks {
    found: Vec<(Source, CheckLine)>,
    problems: Vec<(Source, String)>,
}

impl LineSink for Checks {
    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.tagged(line, &Source::default())
    }

    fn tagged(&mut self, line: &Line, source: &Source) -> std::io::Result<()> {
        match line {
            Line::Check(c) => self.found.push((source.clone(), c.clone())),
            Line::Error(e) => self.problems.push((source.clone(), e.message.clone())),
            _ => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn container(s: &Source) -> String {
    format!(
        "{}/{}",
        s.pod.as_deref().unwrap_or("?"),
        s.container.as_deref().unwrap_or("?")
    )
}

/// The pod name of `pod/NAME` (or `pods/NAME`): `check` takes nothing else
/// from a cluster, so the hint names only that.
fn pod_name(target: &str) -> Result<&str> {
    let name = target
        .strip_prefix("pod/")
        .or_else(|| target.strip_prefix("pods/"))
        .unwrap_or(target);
    if name.is_empty() || name.contains('/') {
        bail!(
            "bad target {target:?}: check takes pod/NAME with the pod's name (or the path of a Go binary on this machine)"
        );
    }
    Ok(name)
}

/// Why the checked pod has nothing to check: a check reads the binary of a
/// running container, so a pod that is not running (yet) is the answer.
pub(super) async fn not_running(
    ctxs: &[super::contexts::Ctx],
    selection: &Selection,
) -> anyhow::Error {
    let target = selection.targets.first().map(String::as_str).unwrap_or("");
    let name = pod_name(target).unwrap_or(target);
    for ctx in ctxs {
        let ns = super::targets::namespace_of(selection, ctx).unwrap_or_default();
        let Ok(Some(pod)) = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .get_opt(name)
            .await
        else {
            continue;
        };
        let at = if ctxs.len() > 1 {
            format!(" (context {})", ctx.name)
        } else {
            String::new()
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".into());
        let what = match &selection.container {
            Some(c) => format!("no running container {c:?}"),
            None => "no running container".into(),
        };
        return if pod.metadata.deletion_timestamp.is_some() {
            anyhow!(
                "pod {ns}/{name}{at} is being deleted: it has {what} to read the Go binary from"
            )
        } else if phase != "Running" {
            anyhow!(
                "pod {ns}/{name}{at} is {phase}: it has {what} to read the Go binary from; check it once it is Running (kubectl get pod {name} -n {ns} -w)"
            )
        } else {
            anyhow!(
                "pod {ns}/{name}{at} has {what} to read the Go binary from (see the line above); check it once its container runs"
            )
        };
    }
    anyhow!("pod/{name} has no running container to read the Go binary from (see the line above)")
}

/// `check pod/NAME`: `scope` selects the one pod (and container).
pub fn run(scope: &super::Scope, format: CheckFormat, no_headers: bool) -> Result<ExitCode> {
    for target in &scope.selection.targets {
        pod_name(target)?;
    }
    let run = super::session::Run {
        scope,
        job: super::session::Job::Check,
        tick: None,
        merged_view: false,
        metrics: None,
        follow: false,
    };
    let mut checks = Checks::default();
    let agents_ok =
        super::runtime()?.block_on(super::session::run(run, &mut checks))? == ExitCode::SUCCESS;

    // A container is traceable when one of its processes is.
    let mut containers: Vec<(String, bool)> = Vec::new();
    for (s, c) in &checks.found {
        let name = container(s);
        let ok = c.traceable;
        match containers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, any)) => *any |= ok,
            None => containers.push((name, ok)),
        }
    }
    let out = crate::render::check_pods::output(format, no_headers, &checks.found);
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    for (s, problem) in &checks.problems {
        eprintln!("{}: {problem}", container(s));
    }
    let untraceable: Vec<&str> = containers
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n.as_str())
        .collect();
    if !untraceable.is_empty() || containers.is_empty() || !agents_ok {
        eprintln!(
            "error: not traceable: {}",
            if untraceable.is_empty() {
                "no Go process was checked".to_string()
            } else {
                untraceable.join(", ")
            }
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_takes_only_pod_names() {
        assert_eq!(pod_name("pod/web-1").unwrap(), "web-1");
        assert_eq!(pod_name("pods/web-1").unwrap(), "web-1");
        for bad in ["pod/", "pods/", "pod/a/b"] {
            let err = pod_name(bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("bad target {bad:?}: check takes pod/NAME with the pod's name (or the path of a Go binary on this machine)")
            );
        }
    }
}
