//! Cluster side: kube contexts, targets, access checks, agent pods, their
//! merged log streams, cleanup. Kube client code only; it builds on every OS
//! (the agent it starts is this same binary, in a pod).

pub mod access;
mod agent_pod;
pub mod check;
mod contexts;
mod follow;
mod merge;
mod session;
mod targets;

use crate::audit::{Alerting, WatchAlerts};
use crate::cli::{CleanupArgs, Filters, TraceArgs, WatchArgs, WatchFormat};
use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use std::process::ExitCode;

/// A pod status's `containerd://ID` (or `cri-o://`, `docker://`) without the runtime.
pub fn container_id(status_id: &str) -> &str {
    status_id.split_once("://").map_or(status_id, |(_, id)| id)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn trace(args: TraceArgs) -> Result<ExitCode> {
    let mut sink = crate::render::trace_output(args.output, args.no_headers, true);
    let run = session::Run {
        kube: &args.kube,
        targets: &args.targets,
        pods: &args.agent_pods,
        agent_args: args.filters.to_agent_args(),
        duration: args.filters.duration,
        tick: None,
        merged_view: false,
        metrics: None,
        follow: true,
    };
    runtime()?.block_on(session::run(run, sink.as_mut()))
}

pub fn watch(args: WatchArgs) -> Result<ExitCode> {
    let metrics = crate::metrics_server::serve(args.metrics_addr.as_deref())?;
    // JSON and YAML forward every agent's lines, tagged; the table merges them.
    let json = args.output != WatchFormat::Table;
    let mut sink = crate::render::watch_output(args.output);
    let filters = Filters::for_watch(args.ops.clone(), args.duration, args.track_writers);
    let mut agent_args = filters.to_agent_args();
    agent_args.extend(args.watch.to_agent_args());
    let run = session::Run {
        kube: &args.kube,
        targets: &args.targets,
        pods: &args.agent_pods,
        agent_args,
        duration: args.duration,
        // Per-agent stats still reach Prometheus each interval.
        tick: Some(args.watch.interval).filter(|_| !json || metrics.is_some()),
        merged_view: !json,
        metrics,
        follow: true,
    };
    let alerts = WatchAlerts::new(args.policy.as_deref(), args.alert_webhook.as_deref())?;
    let code = match &alerts {
        Some(a) => {
            let mut alerting = Alerting::new(&a.policy, a.webhook.as_ref(), sink.as_mut());
            runtime()?.block_on(session::run(run, &mut alerting))
        }
        None => runtime()?.block_on(session::run(run, sink.as_mut())),
    };
    if let Some(a) = alerts {
        a.finish();
    }
    code
}

/// `cleanup`: delete every agent pod (found by label) in each context.
pub fn cleanup(args: CleanupArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let ctxs = contexts::connect(&args.kube).await?;
        let ns = (!args.all_namespaces).then(|| args.agent_namespace.clone());
        let mut denied = Vec::new();
        for ctx in &ctxs {
            denied.extend(access::review(ctx, &access::for_cleanup(&ns)).await?);
        }
        if !denied.is_empty() {
            eprintln!("{}", access::denied_table(&denied));
            bail!(
                "missing {} permission(s), listed above: nothing was deleted",
                denied.len()
            );
        }
        let mut deleted = 0;
        for ctx in &ctxs {
            let api: Api<Pod> = match &ns {
                Some(ns) => Api::namespaced(ctx.client.clone(), ns),
                None => Api::all(ctx.client.clone()),
            };
            let list = api
                .list(&ListParams::default().labels(&agent_pod::managed_selector()))
                .await
                .map_err(|e| targets::api_error(ctx, "pods", e))?;
            for pod in list.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let pod_ns = pod.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod_ns);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        let line = crate::render::deleted_pod(&name, &pod_ns, &ctx.name);
                        std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes())?;
                        deleted += 1;
                    }
                    // Gone already (its run ended meanwhile).
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => bail!(
                        "context {}: cannot delete pod {pod_ns}/{name}: {e}",
                        ctx.name
                    ),
                }
            }
        }
        if deleted == 0 {
            eprintln!("no agent pods found");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `delete-audit TARGET`: agent pods in watch mode, their lines into the audit.
pub struct ClusterAudit<'a> {
    pub kube: &'a crate::cli::KubeFlags,
    pub targets: &'a crate::cli::TargetFlags,
    pub pods: &'a crate::cli::AgentPodFlags,
}

impl crate::audit::Runner for ClusterAudit<'_> {
    fn run(
        &mut self,
        a: &crate::audit::AgentSetup,
        sink: &mut dyn crate::protocol::LineSink,
    ) -> Result<bool> {
        let mut agent_args = a.filters.to_agent_args();
        agent_args.extend(a.watch.to_agent_args());
        let run = session::Run {
            kube: self.kube,
            targets: self.targets,
            pods: self.pods,
            agent_args,
            duration: a.filters.duration,
            tick: None,
            merged_view: false,
            metrics: None,
            follow: true,
        };
        Ok(runtime()?.block_on(session::run(run, sink))? == ExitCode::SUCCESS)
    }
}
