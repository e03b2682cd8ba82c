//! One cluster run: preflight, agent pods up, their logs merged into one
//! stream, and the pods deleted whatever way the run ends.

use super::access;
use super::agent_pod::{self, PodPlan, PodState};
use super::contexts::{self, Ctx};
use super::follow;
use super::merge::{Agent, Merger};
use super::targets::{self, Container, Query};
use super::Scope;
use crate::agent_config::AgentConfig;
use crate::protocol::{Line, LineSink};
use anyhow::{bail, Context, Result};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct Run<'a> {
    pub scope: &'a Scope,
    pub job: Job,
    /// `watch`: how often the merged table is drawn and metrics are published.
    pub tick: Option<Duration>,
    /// `watch -o table`: one merged stats view each tick instead of each
    /// agent's stats forwarded, tagged.
    pub merged_view: bool,
    pub metrics: Option<crate::metrics_tee::Publisher>,
    /// Give replicas that appear during the run, and target containers that
    /// restart, agent pods of their own.
    pub follow: bool,
}

/// What the agents do.
pub enum Job {
    /// Probe the targets' processes.
    Probe(AgentConfig),
    /// Read each process's binary and say whether it can be traced (no BPF).
    Check,
}

/// A check reads a few binaries: this bounds its pod (activeDeadlineSeconds).
const CHECK_DURATION: Duration = Duration::from_secs(30);

impl Job {
    /// The `agent` flags after the container ids.
    fn argv(&self) -> Vec<String> {
        match self {
            Job::Probe(config) => config.to_argv(),
            Job::Check => vec!["--check".into()],
        }
    }

    fn duration(&self) -> Option<Duration> {
        match self {
            Job::Probe(config) => config.duration,
            Job::Check => Some(CHECK_DURATION),
        }
    }

    /// The flags of an agent that joins `left` before the run ends.
    fn argv_ending_in(&self, left: Option<Duration>) -> Vec<String> {
        match (self, left) {
            (Job::Probe(config), Some(left)) => config.ending_in(left).to_argv(),
            _ => self.argv(),
        }
    }
}

/// Reasons a target was left out that an error names (the rest are
/// counted): enough to see the pattern in one line.
const LEFT_OUT_SHOWN: usize = 10;

/// How long agents get, after a stop, to send their summaries.
const DRAIN: Duration = Duration::from_secs(10);

pub async fn run(mut r: Run<'_>, sink: &mut dyn LineSink) -> Result<ExitCode> {
    let metrics = r.metrics.take();
    let specs = targets::parse(&r.scope.selection)?;
    // Only the verbs that probe (trace, watch, delete-audit) also take --pid / -- CMD.
    let offer_local = matches!(r.job, Job::Probe(_));
    let ctxs = contexts::connect(&r.scope.connection, offer_local).await?;

    let mut denied = Vec::new();
    for ctx in &ctxs {
        let ns = targets::namespace_of(&r.scope.selection, ctx);
        let wanted = access::for_run(&specs, &ns, &r.scope.pods.agent_namespace, r.follow);
        denied.extend(access::review(ctx, &wanted).await?);
    }
    if !denied.is_empty() {
        eprintln!("{}", access::denied_table(&denied));
        bail!(
            "missing {} permission(s): {}; nothing was created. Bind your user or group to the roles in manifests/rbac.yaml (or ask a cluster admin)",
            denied.len(),
            access::denied_list(&denied)
        );
    }

    // (context, node) -> containers: one agent pod each.
    let mut plans: BTreeMap<(usize, String), Vec<Container>> = BTreeMap::new();
    let mut queries: Vec<(usize, Query)> = Vec::new();
    let mut left_out: Vec<String> = Vec::new();
    for (ci, ctx) in ctxs.iter().enumerate() {
        let (containers, found_by, skipped) =
            targets::resolve(ctx, &r.scope.selection, &specs).await?;
        for why in &skipped {
            eprintln!("{why}");
        }
        left_out.extend(skipped);
        for c in containers {
            plans.entry((ci, c.node.clone())).or_default().push(c);
        }
        queries.extend(found_by.into_iter().map(|q| (ci, q)));
    }
    if plans.is_empty() {
        if let Job::Check = r.job {
            return Err(super::check::not_running(&ctxs, &r.scope.selection).await);
        }
        // The reasons go in the error itself: a CI report keeps it, not stderr.
        let shown = left_out.len().min(LEFT_OUT_SHOWN);
        let mut why = left_out[..shown].join("; ");
        if left_out.len() > shown {
            why.push_str(&format!("; and {} more", left_out.len() - shown));
        }
        bail!("nothing to trace: no running pod matches the targets ({why})");
    }

    let session = session_id();
    let deadline = match r.job.duration() {
        Some(d) => d + r.scope.pods.pod_running_timeout + Duration::from_secs(30),
        None => {
            eprintln!(
                "no --duration: the agent pods stop by themselves after {} min (activeDeadlineSeconds)",
                agent_pod::UNBOUNDED_DEADLINE.as_secs() / 60
            );
            agent_pod::UNBOUNDED_DEADLINE
        }
    };
    let user = r
        .scope
        .connection
        .as_user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let agent_args = r.job.argv();
    let mut planned: Vec<(usize, Pod, Agent)> = Vec::new();
    for ((ci, node), containers) in plans {
        let pod = agent_pod::build(
            &PodPlan {
                session: &session,
                node: &node,
                nth: 0,
                targets: &containers,
                agent_args: &agent_args,
                deadline,
                user: &user,
            },
            &r.scope.pods,
        );
        access::dry_run(&ctxs[ci], &pod, r.scope.pods.privileged).await?;
        let name = format!(
            "{}/{}",
            r.scope.pods.agent_namespace,
            pod.metadata.name.clone().unwrap_or_default()
        );
        planned.push((ci, pod, Agent::new(&ctxs[ci].name, &node, name, containers)));
    }

    // From here on pods exist: every way out goes through cleanup.
    let mut stop = Signals::install()?;
    let mut created: Vec<(usize, String)> = Vec::new();
    let later = Later {
        session: session.clone(),
        user,
        deadline,
        started: Instant::now(),
        queries,
    };
    let outcome = live(
        &r,
        &ctxs,
        planned,
        later,
        metrics,
        &mut created,
        &mut stop,
        sink,
    )
    .await;
    cleanup(
        &ctxs,
        &r.scope.pods.agent_namespace,
        &created,
        r.scope.pods.keep,
        &session,
    )
    .await;
    outcome
}

enum Msg {
    Progress(String),
    Started,
    Text(String),
    Failed(String),
    Ended(Option<i32>, String),
}

/// What agents started after the first ones need: the run's identity, its
/// time bounds, and the queries to follow.
struct Later {
    session: String,
    user: String,
    deadline: Duration,
    started: Instant,
    queries: Vec<(usize, Query)>,
}

#[allow(clippy::too_many_arguments)]
async fn live(
    r: &Run<'_>,
    ctxs: &[Ctx],
    planned: Vec<(usize, Pod, Agent)>,
    later: Later,
    mut metrics: Option<crate::metrics_tee::Publisher>,
    created: &mut Vec<(usize, String)>,
    stop: &mut Signals,
    sink: &mut dyn LineSink,
) -> Result<ExitCode> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Msg)>();
    let mut pods = Vec::new();
    let mut agents = Vec::new();
    for (ci, pod, agent) in planned {
        pods.push((ci, pod));
        agents.push(agent);
    }
    let mut merger = Merger::new(agents, r.merged_view);
    let ns = &r.scope.pods.agent_namespace;

    for (i, (ci, pod)) in pods.into_iter().enumerate() {
        start_agent(r, ctxs, ci, pod, i, &mut merger, created, &tx, sink).await?;
    }

    // Containers that have an agent; any other the queries turn up is new.
    let mut known: HashSet<String> = merger
        .agents
        .iter()
        .flat_map(|a| a.targets.iter().map(|t| t.container_id.clone()))
        .collect();
    let mut nth: HashMap<(usize, String), usize> = HashMap::new();
    let (found_tx, mut found) = mpsc::unbounded_channel::<(usize, Container)>();
    let watchers: Vec<_> = later
        .queries
        .iter()
        .filter(|_| r.follow)
        .map(|(ci, q)| {
            tokio::spawn(follow::watch_targets(
                *ci,
                ctxs[*ci].client.clone(),
                ctxs[*ci].name.clone(),
                q.clone(),
                r.scope.selection.container.clone(),
                found_tx.clone(),
            ))
        })
        .collect();
    drop(found_tx);

    let mut tick = tokio::time::interval(r.tick.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    let mut hard_stop: Option<Instant> = None;
    let mut stopping = false;
    while !merger.all_done() {
        let until = hard_stop.unwrap_or_else(|| Instant::now() + Duration::from_secs(86400));
        tokio::select! {
            msg = rx.recv() => {
                let Some((i, msg)) = msg else { break };
                let agent = &merger.agents[i];
                match msg {
                    Msg::Progress(why) => eprintln!("agent pod {} (node {}): waiting: {why}", agent.pod, agent.node),
                    Msg::Started => {
                        eprintln!("agent pod {} (node {}) is running", agent.pod, agent.node);
                        // A backstop: agents end by themselves after --duration.
                        if let (Some(d), None) = (r.job.duration(), hard_stop) {
                            hard_stop = Some(Instant::now() + d + r.scope.pods.pod_running_timeout + DRAIN);
                        }
                    }
                    Msg::Text(t) => {
                        // stdout is gone or full: the pods are deleted on the way out.
                        merger.on_text(i, &t, sink).context(crate::render::WRITE_FAILED)?;
                    }
                    Msg::Failed(why) => merger.fail(i, &why, sink)?,
                    Msg::Ended(code, reason) => merger.ended(i, code, &reason, sink)?,
                }
            }
            Some((ci, c)) = found.recv(), if !stopping => {
                if !known.insert(c.container_id.clone()) {
                    continue;
                }
                let elapsed = later.started.elapsed();
                let left = r.job.duration().map(|d| d.saturating_sub(elapsed));
                if left == Some(Duration::ZERO) {
                    continue;
                }
                let n = nth.entry((ci, c.node.clone())).or_insert(0);
                *n += 1;
                let args = r.job.argv_ending_in(left);
                let pod = agent_pod::build(
                    &PodPlan {
                        session: &later.session,
                        node: &c.node,
                        nth: *n,
                        targets: std::slice::from_ref(&c),
                        agent_args: &args,
                        deadline: later.deadline.saturating_sub(elapsed),
                        user: &later.user,
                    },
                    &r.scope.pods,
                );
                let name = format!("{ns}/{}", pod.metadata.name.clone().unwrap_or_default());
                eprintln!(
                    "following {}/{}/{} (context {}), which started after the run did: it gets an agent pod of its own",
                    c.namespace, c.pod, c.container, ctxs[ci].name
                );
                let node = c.node.clone();
                let i = merger.add(Agent::new(&ctxs[ci].name, &node, name, vec![c]));
                start_agent(r, ctxs, ci, pod, i, &mut merger, created, &tx, sink).await?;
            }
            _ = stop.recv(), if !stopping => {
                eprintln!("stopping: deleting the agent pods (they send their summaries first)");
                // Agents still running had time left: the run is cut short.
                sink.stopped_early();
                stopping = true;
                delete_all(ctxs, ns, created).await;
                hard_stop = Some(Instant::now() + DRAIN);
            }
            _ = tick.tick() => {
                if let Some(stats) = merger.merged_stats().filter(|_| r.merged_view) {
                    sink.line(&Line::Stats(stats))?;
                    sink.flush()?;
                }
                if let Some(metrics) = metrics.as_mut() {
                    let latest = merger.latest_stats();
                    let sources: Vec<(&crate::protocol::Stats, &[(&str, &str)])> =
                        latest.iter().map(|(s, l)| (*s, &l[..])).collect();
                    metrics.publish(&sources);
                }
            }
            _ = tokio::time::sleep_until(until) => {
                if stopping { break }
                eprintln!("the agents did not finish in time: deleting them");
                stopping = true;
                delete_all(ctxs, ns, created).await;
                hard_stop = Some(Instant::now() + DRAIN);
            }
        }
        let _ = sink.flush();
    }
    for w in watchers {
        w.abort();
    }
    for i in 0..merger.agents.len() {
        if !merger.agents[i].done {
            merger.ended(i, None, "no summary before the run ended", sink)?;
        }
    }
    merger.untraced(sink)?;
    if let Some(stats) = merger.merged_stats().filter(|_| r.merged_view) {
        sink.line(&Line::Stats(stats))?;
    }
    sink.line(&Line::Summary(merger.summary()))?;
    sink.flush()?;
    if merger.any_failed() {
        let failed = merger.agents.iter().filter(|a| a.failure.is_some()).count();
        eprintln!(
            "error: {failed} of {} agent pods failed (error lines above): their targets were not traced",
            merger.agents.len()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates agent `i`'s pod and streams it, or says why it could not be created.
#[allow(clippy::too_many_arguments)]
async fn start_agent(
    r: &Run<'_>,
    ctxs: &[Ctx],
    ci: usize,
    pod: Pod,
    i: usize,
    merger: &mut Merger,
    created: &mut Vec<(usize, String)>,
    tx: &mpsc::UnboundedSender<(usize, Msg)>,
    sink: &mut dyn LineSink,
) -> Result<()> {
    let ns = &r.scope.pods.agent_namespace;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctxs[ci].client.clone(), ns);
    let agent = &merger.agents[i];
    let what: Vec<String> = agent
        .targets
        .iter()
        .map(|t| format!("{}/{}", t.namespace, t.pod))
        .collect();
    eprintln!(
        "starting agent pod {ns}/{name} on node {} (context {}) for {}",
        agent.node,
        agent.context,
        what.join(", ")
    );
    // Registered before the request: a stop that lands mid-create still deletes it.
    created.push((ci, name.clone()));
    let params = PostParams {
        dry_run: false,
        field_manager: Some(agent_pod::MANAGER.into()),
    };
    if let Err(e) = api.create(&params, &pod).await {
        let why = match e {
            kube::Error::Api(s) => format!(
                "rejected: {}; {}",
                s.message,
                access::admission_fix(&s.message, s.code, ns, r.scope.pods.privileged)
            ),
            other => format!("cannot create it: {other}"),
        };
        merger.fail(i, &why, sink)?;
        return Ok(());
    }
    tokio::spawn(stream_agent(
        api,
        name,
        r.scope.pods.pod_running_timeout,
        i,
        tx.clone(),
    ));
    Ok(())
}

/// Waits for the pod to run, then streams its log, line by line.
async fn stream_agent(
    api: Api<Pod>,
    name: String,
    timeout: Duration,
    i: usize,
    tx: mpsc::UnboundedSender<(usize, Msg)>,
) {
    let send = |m: Msg| {
        let _ = tx.send((i, m));
    };
    // The watch calls the condition on every change of the pod: progress is
    // said as it changes, and the wait ends once the pod runs, ended or
    // cannot run.
    let last = std::sync::Mutex::new(String::new());
    let started = |pod: Option<&Pod>| match pod.map(agent_pod::state) {
        Some(PodState::Starting(why)) => {
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if *last != why {
                send(Msg::Progress(why.clone()));
                *last = why;
            }
            false
        }
        _ => true,
    };
    let waited = tokio::time::timeout(timeout, await_condition(api.clone(), &name, started)).await;
    match waited {
        Ok(Ok(Some(pod))) => {
            if let PodState::Failed(why) = agent_pod::state(&pod) {
                return send(Msg::Failed(why));
            }
        }
        Ok(Ok(None)) => return send(Msg::Ended(None, "pod deleted".into())),
        Ok(Err(e)) => return send(Msg::Failed(format!("cannot watch its status: {e}"))),
        Err(_) => {
            let last = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return send(Msg::Failed(format!(
                "not running after {}s ({last}); see `kubectl describe pod -n {} {name}`, or raise --pod-running-timeout",
                timeout.as_secs(),
                api.namespace().unwrap_or("?")
            )));
        }
    }
    send(Msg::Started);
    let params = LogParams {
        follow: true,
        container: Some("agent".into()),
        ..Default::default()
    };
    match api.log_stream(&name, &params).await {
        Ok(stream) => {
            let mut lines = stream.lines();
            while let Some(text) = lines.next().await {
                match text {
                    Ok(text) => send(Msg::Text(text)),
                    // What follows is lost: say so, and fail the run, rather
                    // than read a cut stream as the agent's whole output.
                    Err(e) => {
                        return send(Msg::Failed(format!(
                            "its log stream broke ({e}): what it sent after that was not received"
                        )))
                    }
                }
            }
        }
        Err(e) => return send(Msg::Failed(format!("cannot read its log: {e}"))),
    }
    // The log ends with the container; the kubelet reports how it ended a moment later.
    let ended = |pod: Option<&Pod>| {
        pod.is_none_or(|p| matches!(agent_pod::state(p), PodState::Ended { .. }))
    };
    let report = tokio::time::timeout(ENDED_REPORT, await_condition(api, &name, ended)).await;
    match report {
        Ok(Ok(Some(pod))) => {
            if let PodState::Ended { exit_code, reason } = agent_pod::state(&pod) {
                return send(Msg::Ended(exit_code, reason));
            }
        }
        Ok(Ok(None)) => return send(Msg::Ended(None, "pod deleted".into())),
        Ok(Err(_)) | Err(_) => {}
    }
    send(Msg::Ended(None, "log stream ended".into()))
}

/// How long the kubelet gets to report how a container whose log ended ended.
const ENDED_REPORT: Duration = Duration::from_secs(5);

async fn delete_all(ctxs: &[Ctx], ns: &str, created: &[(usize, String)]) {
    let params = DeleteParams {
        grace_period_seconds: Some(5),
        ..Default::default()
    };
    for (ci, name) in created {
        let api: Api<Pod> = Api::namespaced(ctxs[*ci].client.clone(), ns);
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => eprintln!(
                "could not delete agent pod {ns}/{name} (context {}): {e}; it stops by itself at its activeDeadlineSeconds, or run `kubectl mapguard cleanup --context {}`",
                ctxs[*ci].name, ctxs[*ci].name
            ),
        }
    }
}

async fn cleanup(ctxs: &[Ctx], ns: &str, created: &[(usize, String)], keep: bool, session: &str) {
    if created.is_empty() {
        return;
    }
    if keep {
        eprintln!(
            "--keep: left {} agent pod(s) in namespace {ns} (label {}={session}); remove them with `kubectl mapguard cleanup`",
            created.len(),
            agent_pod::SESSION
        );
        return;
    }
    delete_all(ctxs, ns, created).await;
}

/// A short random id shared by the pods of one run.
fn session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

/// SIGINT and SIGTERM, caught from before the first pod is created.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
