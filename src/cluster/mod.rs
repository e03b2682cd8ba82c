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

pub use agent_pod::PodOptions;
pub use contexts::Connection;
pub use targets::Selection;

use crate::agent_config::AgentConfig;
use crate::protocol::LineSink;
use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use session::Job;
use std::process::ExitCode;

/// Where a cluster run works: the clusters, the pods it traces, and how its
/// agent pods are made.
#[derive(Debug, Clone)]
pub struct Scope {
    pub connection: Connection,
    pub selection: Selection,
    pub pods: PodOptions,
}

/// A pod status's `containerd://ID` (or `cri-o://`, `docker://`) without the runtime.
pub fn container_id(status_id: &str) -> &str {
    status_id.split_once("://").map_or(status_id, |(_, id)| id)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `trace TARGET`: one line per operation of the selected pods, into `sink`.
pub fn trace(scope: &Scope, agent: AgentConfig, sink: &mut dyn LineSink) -> Result<ExitCode> {
    let run = session::Run {
        scope,
        job: Job::Probe(agent),
        tick: None,
        merged_view: false,
        metrics: None,
        follow: true,
    };
    runtime()?.block_on(session::run(run, sink))
}

/// `watch TARGET`: with `merged_view` (the table), one merged `stats` line
/// per interval; else each agent's, tagged. Metrics publish every interval.
pub fn watch(
    scope: &Scope,
    agent: AgentConfig,
    merged_view: bool,
    metrics: Option<crate::metrics_tee::Publisher>,
    sink: &mut dyn LineSink,
) -> Result<ExitCode> {
    let interval = agent.watch.as_ref().map(|w| w.interval);
    let run = session::Run {
        scope,
        job: Job::Probe(agent),
        tick: interval.filter(|_| merged_view || metrics.is_some()),
        merged_view,
        metrics,
        follow: true,
    };
    runtime()?.block_on(session::run(run, sink))
}

/// `cleanup`: delete every agent pod (found by label) in each context.
/// `namespace` None: every namespace.
pub fn cleanup(connection: &Connection, namespace: Option<String>) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let ctxs = contexts::connect(connection, false).await?;
        let ns = namespace;
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
pub struct ClusterAudit<'a>(pub &'a Scope);

impl crate::audit::Runner for ClusterAudit<'_> {
    fn run(&mut self, agent: &AgentConfig, sink: &mut dyn LineSink) -> Result<bool> {
        let run = session::Run {
            scope: self.0,
            job: Job::Probe(agent.clone()),
            tick: None,
            merged_view: false,
            metrics: None,
            follow: true,
        };
        Ok(runtime()?.block_on(session::run(run, sink))? == ExitCode::SUCCESS)
    }
}
